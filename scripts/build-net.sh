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
# A Go of at least the version go.mod names: on PATH, or in /usr/local/go (Go's own installer
# puts it there, often without adding it to PATH). Else Debian's Go (too old to build this) is
# installed only to download a current toolchain, which Go publishes as a module.
need=$(sed -n 's/^go \([0-9]*\.[0-9]*\).*/\1/p' "$src/go.mod")
recent() { # GO: whether it runs and is at least $need
  local v
  v=$("$1" env GOVERSION 2>/dev/null | sed -n 's/^go\([0-9]*\.[0-9]*\).*/\1/p') || return 1
  [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$need" "$v" | sort -V | head -1)" = "$need" ]
}
go=
for candidate in "$(command -v go || true)" /usr/local/go/bin/go; do
  if [ -n "$candidate" ] && recent "$candidate"; then go=$candidate; break; fi
done
if [ -z "$go" ]; then
  "$root/scripts/install-deps.sh" golang-go
  toolchain=golang.org/toolchain@v0.0.1-go$need.0.linux-amd64
  echo "build-net: fetching Go $need ($toolchain)" >&2
  # (Outside the module, so that its go.sum is not touched.)
  dir=$(cd "$(mktemp -d)" && GOTOOLCHAIN=local /usr/bin/go mod download -json "$toolchain" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  go=$dir/bin/go
  # Module zips keep no file modes.
  chmod -R u+w "$dir" && chmod +x "$dir"/bin/* "$dir"/pkg/tool/*/*
  recent "$go" || { echo "build-net: no usable Go >= $need (tried $go); install one (go.dev/dl)" >&2; exit 1; }
fi
mkdir -p "$(dirname "$out")"
(cd "$src" && CGO_ENABLED=0 "$go" build -trimpath -buildvcs=false -ldflags='-s -w' -o "$out.tmp" ./cmd/boxlite-net)
mv -f "$out.tmp" "$out"
