#!/usr/bin/env bash
# Builds the guest agent as a static binary and packs it as the initramfs /init (uncompressed:
# decompressing under TCG costs more than reading the bytes) into OUT_DIR (default: the assets
# dir). Prints the initramfs path last.
# Usage: build-guest.sh [OUT_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${BOXLITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}
target_dir=${CARGO_TARGET_DIR:-$cache/target}
# --target keeps +crt-static away from build scripts and proc-macros; there is no musl target here,
# so this is a static glibc binary (it never calls NSS or getaddrinfo).
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
cargo build --quiet --profile guest -p boxlite-guest --target x86_64-unknown-linux-gnu \
  --manifest-path "$root/Cargo.toml" --target-dir "$target_dir" >&2
agent="$target_dir/x86_64-unknown-linux-gnu/guest/boxlite-guest"
out=${1:-$cache/assets}
mkdir -p "$out"
python3 "$root/scripts/mkinitramfs.py" "$agent" "$out/initramfs.cpio.tmp"
mv "$out/initramfs.cpio.tmp" "$out/initramfs.cpio"
echo "$out/initramfs.cpio"
