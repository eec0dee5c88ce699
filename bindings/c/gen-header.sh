#!/usr/bin/env bash
# Generates include/boxlite.h from core/ffi with a pinned cbindgen (installed once into the cache).
# Usage: gen-header.sh           write the header
#        gen-header.sh --check   exit 1 with a diff when the committed header is out of date
set -euo pipefail

CBINDGEN_VERSION=0.29.4
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${BOXLITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}
tool_root="$cache/tools/cbindgen-$CBINDGEN_VERSION"
cbindgen="$tool_root/bin/cbindgen"
header="$here/include/boxlite.h"

case ${1:-} in
  --check) check=true ;;
  "") check=false ;;
  *) echo "usage: gen-header.sh [--check]" >&2; exit 2 ;;
esac

if [ ! -x "$cbindgen" ]; then
  echo "gen-header: installing cbindgen $CBINDGEN_VERSION into $tool_root" >&2
  cargo install cbindgen --version "$CBINDGEN_VERSION" --locked --root "$tool_root" --quiet
fi

generated=$(mktemp)
trap 'rm -f "$generated"' EXIT
"$cbindgen" --quiet --config "$here/cbindgen.toml" --crate boxlite-ffi --output "$generated" "$root/core/ffi"

if $check; then
  if ! diff -u "$header" "$generated" --label "committed $header" --label "regenerated"; then
    echo "gen-header: $header is out of date: run bindings/c/gen-header.sh and commit the result" >&2
    exit 1
  fi
  echo "gen-header: $header is up to date" >&2
else
  mkdir -p "$(dirname "$header")"
  cp "$generated" "$header"
  echo "gen-header: wrote $header" >&2
fi
