#!/usr/bin/env bash
# One-time (and idempotent) set-up of a machine for BoxLite: Debian packages, the guest kernel and
# agent (into the assets dir the runtime reads), and the boxlite CLI. Cheap when nothing changed.
# Prints the path of the boxlite binary last.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${BOXLITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}
assets=${BOXLITE_ASSETS_DIR:-$cache/assets}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
mkdir -p "$assets"

"$root/scripts/install-deps.sh"
command -v cargo >/dev/null || { echo "setup: cargo not found: install Rust (rustup.rs)" >&2; exit 1; }
vmlinux=$("$root/scripts/build-kernel.sh" | tail -1)
cp -f "$vmlinux" "$assets/vmlinux.tmp" && mv -f "$assets/vmlinux.tmp" "$assets/vmlinux"
"$root/scripts/build-guest.sh" "$assets" >/dev/null
"$root/scripts/build-net.sh" "$assets"
cargo build --quiet -p boxlite-cli -p boxlite-shim --manifest-path "$root/Cargo.toml" >&2
# The box supervisor sits with the guest assets, where every binding's runtime finds it.
cp -f "$CARGO_TARGET_DIR/debug/boxlite-shim" "$assets/boxlite-shim.tmp" && mv -f "$assets/boxlite-shim.tmp" "$assets/boxlite-shim"
echo "$CARGO_TARGET_DIR/debug/boxlite"
