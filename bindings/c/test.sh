#!/usr/bin/env bash
# The C suite: builds libboxlite, checks that include/boxlite.h is current, compiles the example and
# the tests against the header (-Wall -Wextra -Werror), and runs them against real VMs.
# Needs the test registry (REGISTRY, from `eval "$(bash scripts/test-images.sh)"`) and the guest
# assets (scripts/setup.sh); fails, never skips, when they are missing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${BOXLITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
CC=${CC:-cc}

fail() {
  echo "bindings/c/test.sh: $*" >&2
  exit 1
}

[ -n "${REGISTRY:-}" ] ||
  fail "REGISTRY is not set: run \`eval \"\$(bash scripts/test-images.sh)\"\` first (scripts/test.sh does)"
curl -fsS -m 3 -o /dev/null "http://$REGISTRY/v2/" ||
  fail "the test registry at $REGISTRY does not answer: run \`bash scripts/test-images.sh\`"

cd "$root"
cargo build --quiet -p boxlite-ffi
"$here/gen-header.sh" --check
lib="$CARGO_TARGET_DIR/debug"

work=$(mktemp -d /tmp/boxlite-c.XXXXXX)
trap 'rm -rf "$work"' EXIT
home="$work/home"
mkdir "$home"

cflags=(-std=c11 -Wall -Wextra -Werror -g -I "$here/include")
link=(-L "$lib" -lboxlite "-Wl,-rpath,$lib" -pthread)
"$CC" "${cflags[@]}" -o "$work/hello" "$here/examples/hello.c" "${link[@]}"
# The staticlib too: the libraries it needs are those `rustc --print native-static-libs` lists.
"$CC" "${cflags[@]}" -o "$work/hello-static" "$here/examples/hello.c" "$lib/libboxlite.a" -pthread -ldl -lm
for test in "$here"/tests/*.c; do
  "$CC" "${cflags[@]}" -o "$work/$(basename "$test" .c)" "$test" "${link[@]}"
done

passed=0
failed=0
for test in "$here"/tests/*.c; do
  name=$(basename "$test" .c)
  echo "== tests/$name.c"
  if BOXLITE_TEST_HOME="$home" "$work/$name" | tee "$work/$name.out"; then :; fi
  summary=$(tail -1 "$work/$name.out")
  if [[ $summary =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    passed=$((passed + BASH_REMATCH[1]))
    failed=$((failed + BASH_REMATCH[2]))
  else
    echo "FAIL tests/$name.c ended without its summary line"
    failed=$((failed + 1))
  fi
done

echo "== examples/hello.c"
for hello in hello hello-static; do
  output=$(BOXLITE_HOME="$home" "$work/$hello" "$REGISTRY/busybox:latest" "$REGISTRY") || true
  if [ "$output" = hi ]; then
    echo "ok   $hello printed hi"
    passed=$((passed + 1))
  else
    echo "FAIL $hello printed '$output', not 'hi'"
    failed=$((failed + 1))
  fi
done

# Nothing left behind by the whole run: no box directories, no VM naming this home.
leftovers=$(find "$home/boxes" -mindepth 1 -maxdepth 1 | wc -l)
if [ "$leftovers" -ne 0 ] || pgrep -f "$home/boxes" >/dev/null; then
  echo "FAIL the run left boxes behind under $home/boxes or VMs running"
  failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
