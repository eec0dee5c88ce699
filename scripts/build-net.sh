#!/usr/bin/env bash
# Builds the box network helper boxlite-net (Go, core/net) as a static binary into ASSETS_DIR,
# where the box supervisor finds it. Does nothing when the binary is newer than every source.
# Usage: build-net.sh ASSETS_DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: build-net.sh ASSETS_DIR}/boxlite-net
src="$root/core/net"
if [ -x "$out" ] && [ -z "$(find "$src" \( -name '*.go' ! -name '*_test.go' -o -name go.mod -o -name go.sum \) -newer "$out" | head -1)" ]; then
  exit 0
fi
# /usr/local/go is where Go's own installer puts it, often without adding it to PATH.
go=$(command -v go || echo /usr/local/go/bin/go)
[ -x "$go" ] || {
  echo "build-net: go not found: install Go >= 1.25 (go.dev/dl; or any Go >= 1.21, which fetches 1.25 itself)" >&2
  exit 1
}
mkdir -p "$(dirname "$out")"
(cd "$src" && CGO_ENABLED=0 "$go" build -trimpath -buildvcs=false -ldflags='-s -w' -o "$out.tmp" ./cmd/boxlite-net)
mv -f "$out.tmp" "$out"
