#!/usr/bin/env bash
# The main job, offline: set up, build a small OCI image from Debian's busybox-static, boot a box
# from it and run a command there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${BOXLITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}
export BOXLITE_ASSETS_DIR=${BOXLITE_ASSETS_DIR:-$cache/assets}
boxlite=$("$root/scripts/setup.sh" | tail -1)
eval "$("$root/scripts/test-images.sh" --busybox-only)"
"$boxlite" run --rm "oci:$OCI_LAYOUT:latest" echo "hello from a BoxLite micro-VM"
