#!/usr/bin/env bash
# Executes notebook.ipynb headless (nbclient, a real ipykernel) against a real box of the
# code-interpreter test image, then checks its outputs (test_notebook.py). Needs the test registry
# (REGISTRY, from `eval "$(bash scripts/test-images.sh)"`) and the guest assets (scripts/setup.sh);
# fails, never skips, when they are missing. The venv with Jupyter's parts is made once, in the cache.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${BOXLITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
venv="$cache/venv-notebook"

[ -n "${REGISTRY:-}" ] || {
  echo "examples/notebook/test.sh: REGISTRY is not set: run \`eval \"\$(bash scripts/test-images.sh)\"\` first (scripts/test.sh does)" >&2
  exit 1
}

(cd "$root" && cargo build --quiet -p boxlite-ffi -p boxlite-shim)
if ! "$venv/bin/python" -c "import nbclient, nbformat, ipykernel" 2>/dev/null; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "nbclient>=0.10,<1" "nbformat>=5.10,<6" "ipykernel>=6.29,<8"
fi

home=$(mktemp -d /tmp/boxlite-notebook.XXXXXX)
trap 'rm -rf "$home"' EXIT
# The kernel inherits these: the package from source over this build's library, a fresh home, and
# the test registry for the unqualified image name.
export PYTHONPATH="$root/bindings/python-stub/src" BOXLITE_LIBRARY="$CARGO_TARGET_DIR/debug/libboxlite.so"
export BOXLITE_HOME="$home" BOXLITE_INSECURE_REGISTRIES="$REGISTRY" NOTEBOOK_IMAGE=code-interpreter:latest
# Not `exec`: the trap above must run to remove the home.
"$venv/bin/python" "$here/test_notebook.py" "$here/notebook.ipynb"
