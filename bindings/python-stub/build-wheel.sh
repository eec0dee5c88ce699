#!/usr/bin/env bash
# Builds the boxlite wheel: the package with libboxlite.so and, in boxlite-guest/ beside it (where
# the runtime looks, as for the npm platform package), the guest kernel and initramfs, the box
# supervisor (boxlite-shim) and the network helper (boxlite-net); binaries stripped of debug info.
# Tagged py3-none-manylinux_<this glibc>_x86_64 (ctypes: no CPython ABI).
# Usage: build-wheel.sh [debug|release] OUT_DIR   (the profile's libboxlite and shim must be built)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${BOXLITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}
target=${CARGO_TARGET_DIR:-$cache/target}
assets=${BOXLITE_ASSETS_DIR:-$cache/assets}
profile=${1:?usage: build-wheel.sh [debug|release] OUT_DIR}
out=${2:?usage: build-wheel.sh [debug|release] OUT_DIR}
python=${PYTHON:-python3}

fail() {
  echo "build-wheel.sh: $*" >&2
  exit 1
}

# The supervisor as every package ships it: the `shim` profile's (built for size) beside a release
# library, the debug one beside a debug library.
shim_profile=$([ "$profile" = release ] && echo shim || echo debug)
lib="$target/$profile/libboxlite.so"
shim="$target/$shim_profile/boxlite-shim"
[ -f "$lib" ] || fail "$lib is missing: run cargo build $([ "$profile" = release ] && echo --release) -p boxlite-ffi"
[ -f "$shim" ] || fail "$shim is missing: run cargo build $([ "$profile" = release ] && echo --profile shim) -p boxlite-shim"
for file in vmlinux initramfs.cpio boxlite-net; do
  [ -f "$assets/$file" ] || fail "$assets/$file is missing: run scripts/setup.sh first"
done

"$python" -c 'import setuptools, wheel' 2>/dev/null ||
  fail "$python lacks setuptools or wheel: \`$python -m pip install 'setuptools>=68' 'wheel>=0.40'\`, or set PYTHON to a python that has them"

stage=$(mktemp -d /tmp/boxlite-wheel.XXXXXX)
trap 'rm -rf "$stage"' EXIT
cp -r "$here/pyproject.toml" "$here/README.md" "$here/src" "$stage/"
package="$stage/src/boxlite"
mkdir -p "$package/boxlite-guest"
strip --strip-debug -o "$package/libboxlite.so" "$lib"
strip --strip-debug -o "$package/boxlite-guest/boxlite-shim" "$shim"
strip --strip-debug -o "$package/boxlite-guest/boxlite-net" "$assets/boxlite-net"
cp "$assets/vmlinux" "$assets/initramfs.cpio" "$package/boxlite-guest/"
chmod 755 "$package/libboxlite.so" "$package/boxlite-guest/boxlite-shim" "$package/boxlite-guest/boxlite-net"

glibc=$("$python" -c 'import platform; print(platform.libc_ver()[1].replace(".", "_"))')
mkdir -p "$out"
"$python" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation -w "$stage/dist" "$stage"
"$python" -m wheel tags --remove --python-tag py3 --abi-tag none --platform-tag "manylinux_${glibc}_x86_64" "$stage"/dist/boxlite-*.whl >/dev/null
mv "$stage"/dist/boxlite-*manylinux*.whl "$out/"
ls "$out"/boxlite-*manylinux_"${glibc}"_x86_64.whl
