#!/usr/bin/env bash
# Builds the BoxLite guest kernel: Debian's linux-source-6.1 with the patches in
# core/guest/kernel/patches, `make tinyconfig` plus the fragment core/guest/kernel/config. Writes
# an uncompressed, PVH-bootable vmlinux (QEMU -kernel loads it directly) to
# $CACHE/kernel/<hash>/vmlinux, where <hash> covers the fragment, the patches, this script and the
# linux-source package version, and prints its path as the last line of stdout (progress goes to
# stderr). An unchanged kernel is not rebuilt; the extracted source and the build tree stay in the
# cache so a changed config rebuilds incrementally.
# Usage: build-kernel.sh [OUT_DIR]   (also copies vmlinux to OUT_DIR and prints that path instead)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script="$here/$(basename "${BASH_SOURCE[0]}")"
fragment="$here/../core/guest/kernel/config"
patches=("$here"/../core/guest/kernel/patches/*.patch)
cache="${BOXLITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}/kernel"
out_dir=${1:-}

log() { echo "build-kernel: $*" >&2; }

"$here/install-deps.sh"
version=$(dpkg-query -W -f='${Version}' linux-source-6.1)
hash=$({ cat "$fragment" "$script" "${patches[@]}"; echo "$version"; } | sha256sum | cut -c1-12)
# The source tree is patched once; a tree patched otherwise is extracted again.
patch_hash=$(cat "${patches[@]}" | sha256sum | cut -c1-12)
vmlinux="$cache/$hash/vmlinux"

mkdir -p "$cache"
# One build at a time: they share the source and build trees.
exec 9>"$cache/.lock"
flock 9

if [ ! -f "$vmlinux" ]; then
  src="$cache/src-$version-$patch_hash"
  build="$cache/build-$version"
  if [ ! -f "$src/Makefile" ]; then
    log "extracting linux-source $version"
    # Trees of other source versions are dead weight (over 1 GiB each).
    rm -rf "$cache"/src-* "$cache"/build-*
    mkdir -p "$src.tmp"
    tar xJf /usr/src/linux-source-6.1.tar.xz -C "$src.tmp" --strip-components=1
    for p in "${patches[@]}"; do patch -s -d "$src.tmp" -p1 <"$p"; done
    mv "$src.tmp" "$src"
  fi
  mkdir -p "$build"
  kmake=(make -C "$src" O="$build" ARCH=x86_64 -s)

  log "configuring ($hash)"
  # Their stdout is a page of "value redefined" notes per run; errors still reach stderr.
  "${kmake[@]}" tinyconfig >/dev/null
  "$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "$fragment" >/dev/null
  "${kmake[@]}" olddefconfig >/dev/null

  # Kconfig drops options whose dependencies are unmet without a word: check every line stuck.
  lost=()
  while IFS= read -r line; do
    case $line in
      CONFIG_*=*) grep -qxF "$line" "$build/.config" || lost+=("$line") ;;
      "# CONFIG_"*" is not set")
        name=${line#"# "}; name=${name%" is not set"}
        ! grep -q "^$name=" "$build/.config" || lost+=("$line") ;;
    esac
  done <"$fragment"
  if [ ${#lost[@]} -gt 0 ]; then
    log "these config lines did not survive olddefconfig:"
    printf '  %s\n' "${lost[@]}" >&2
    exit 1
  fi

  log "building vmlinux with $(nproc) jobs"
  "${kmake[@]}" -j"$(nproc)" vmlinux >&2
  mkdir -p "$cache/$hash"
  cp "$build/vmlinux" "$vmlinux.tmp"
  mv "$vmlinux.tmp" "$vmlinux"
  log "built $(du -h "$vmlinux" | cut -f1) vmlinux"
fi

if [ -n "$out_dir" ]; then
  mkdir -p "$out_dir"
  cp "$vmlinux" "$out_dir/vmlinux"
  vmlinux="$out_dir/vmlinux"
fi
echo "$vmlinux"
