#!/usr/bin/env bash
# The Python stub's suite: builds libboxlite, makes a venv with pytest (once, in the cache) and runs
# the tests against real VMs. Needs the test registry (REGISTRY, from
# `eval "$(bash scripts/test-images.sh)"`) and the guest assets (scripts/setup.sh); fails, never
# skips, when they are missing. Extra arguments go to pytest.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${BOXLITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
venv="$cache/venv-python-stub"

[ -n "${REGISTRY:-}" ] || {
  echo "bindings/python-stub/test.sh: REGISTRY is not set: run \`eval \"\$(bash scripts/test-images.sh)\"\` first (scripts/test.sh does)" >&2
  exit 1
}

(cd "$root" && cargo build --quiet -p boxlite-ffi)
export BOXLITE_LIBRARY="$CARGO_TARGET_DIR/debug/libboxlite.so"
export PYTHON="$venv/bin/python"  # for build-wheel.sh

# pytest; setuptools and wheel build the wheel that tests/test_wheel.py installs; mypy checks the
# type hints (tests/test_typing.py).
if ! "$venv/bin/python" -c "import pytest, setuptools, wheel, mypy; assert int(setuptools.__version__.split('.')[0]) >= 68" 2>/dev/null; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "pytest>=8,<9" "setuptools>=68" "wheel>=0.40" "mypy>=1.10,<2"
fi
(cd "$root" && cargo build --quiet -p boxlite-shim)

cd "$here"
exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
