#!/usr/bin/env bash
# The whole test suite: set-up, test images and registries, then every suite, each booting real VMs:
# Rust (unit + VM tests), the Node addon and TS packages (build, generated-file drift, publint,
# vitest unit + e2e + packaging, the examples and the MCP server), the C ABI (header drift, C tests,
# example), the Python package and the example notebook (nbclient).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${BOXLITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
# Where setup.sh puts the guest assets; said explicitly so a moved BOXLITE_CACHE is honoured too.
export BOXLITE_ASSETS_DIR=${BOXLITE_ASSETS_DIR:-$cache/assets}
export TURBO_TELEMETRY_DISABLED=1
step() { echo "== $* ($SECONDS s)" >&2; }

step set-up
"$root/scripts/setup.sh" >/dev/null
"$root/scripts/setup-js.sh"
eval "$("$root/scripts/test-images.sh")"
export REGISTRY AUTH_REGISTRY OCI_LAYOUT OCI_ARCHIVE
cd "$root"
# What the suites must not leave behind (checked at the end): the homes, folders and files they
# make under /tmp, and the VM, supervisor and network-helper processes of their boxes.
leftovers() { ls -A /tmp | grep -E '^(boxlite|bx)' | sort || true; }
box_processes() { pgrep -f 'qemu-system|boxlite-shim|boxlite-net' | sort || true; }
tmp_before=$(leftovers)
processes_before=$(box_processes)

step "Go: the box network helper (core/net)"
(cd core/net && PATH="$PATH:/usr/local/go/bin" go test ./...)

step "Rust: cargo test"
cargo test --workspace --quiet

step "JS: build (addon + packages), generated addon files, publint, types"
pnpm build
git diff --exit-code -- bindings/node/index.js bindings/node/index.d.ts ||
  { echo "bindings/node/index.js or index.d.ts changed when regenerated: commit the regenerated files" >&2; exit 1; }
pnpm lint
pnpm typecheck

step "JS: each package's vitest (unit + e2e), then the packed tarballs"
pnpm test

step "C: bindings/c/test.sh"
bash bindings/c/test.sh

step "Python: bindings/python-stub/test.sh"
bash bindings/python-stub/test.sh

step "Notebook: examples/notebook/test.sh"
bash examples/notebook/test.sh

step "Leaks: nothing left under /tmp, no box process running"
sleep 2  # supervisors whose owner just exited are still stopping their VMs
left=$(comm -13 <(echo "$tmp_before") <(leftovers))
[ -z "$left" ] || { echo "the suites left these under /tmp:" >&2; echo "$left" >&2; exit 1; }
running=$(comm -13 <(echo "$processes_before") <(box_processes))
[ -z "$running" ] || { echo "the suites left these box processes running:" >&2; ps -o pid,args -p "$(echo $running | tr " " ",")" >&2; exit 1; }

step "all suites passed"
