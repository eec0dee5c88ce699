#!/usr/bin/env bash
# The whole test suite: set-up, test images and registries, then every test (unit and real VMs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh" >/dev/null
eval "$("$root/scripts/test-images.sh")"
export REGISTRY AUTH_REGISTRY OCI_LAYOUT OCI_ARCHIVE
cache=${BOXLITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
cd "$root"
cargo test --workspace --quiet
