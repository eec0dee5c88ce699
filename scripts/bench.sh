#!/usr/bin/env bash
# Benchmarks: prints a table and writes bench-results.json (override with $1). Runs the bare-kernel
# baseline first so boot overhead is reported as a ratio on the same engine, kernel and machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/bench-results.json}
cache=${BOXLITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxlite}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
"$root/scripts/setup.sh" >/dev/null
eval "$("$root/scripts/test-images.sh")"
export BOXLITE_ASSETS_DIR=${BOXLITE_ASSETS_DIR:-$cache/assets}
baseline=$(mktemp)
"$root/scripts/boot-baseline.sh" "$BOXLITE_ASSETS_DIR/vmlinux" 10 | tail -1 >"$baseline"
cargo build --quiet --release -p boxlite-bench --manifest-path "$root/Cargo.toml"
# The supervisor every box of every bench below runs: the one the packages ship (its own profile).
cargo build --quiet --profile shim -p boxlite-shim --manifest-path "$root/Cargo.toml"
export BOXLITE_SHIM="$CARGO_TARGET_DIR/shim/boxlite-shim"
"$CARGO_TARGET_DIR/release/boxlite-bench" "$REGISTRY" "$out" "$baseline"
# Density: DENSITY_BOXES (default 100) idle 128 MiB boxes at once; their total CPU, RSS and PSS.
"$CARGO_TARGET_DIR/release/boxlite-bench" density "$REGISTRY" "${DENSITY_BOXES:-100}" "${out%.json}-density.json"
rm -f "$baseline"
# Memory snapshots: restore vs cold boot, snapshot/fork/pause/suspend times, PSS of SNAPSHOT_BOXES
# (default 20) restored boxes vs as many cold-booted ones.
"$CARGO_TARGET_DIR/release/boxlite-bench" snapshots "$REGISTRY" "${SNAPSHOT_BOXES:-20}" "${out%.json}-snapshots.json"
# The SDK's overhead on a warm exec (Node round trip minus Rust round trip), through the built packages.
"$root/scripts/setup-js.sh"
(cd "$root" && TURBO_TELEMETRY_DISABLED=1 pnpm build >/dev/null)
node "$root/packages/boxlite/bench/sdk-overhead.mjs" "$REGISTRY" "$CARGO_TARGET_DIR/release/boxlite-bench" "${out%.json}-sdk.json"
# CodeBox contexts: warm runCode round trip and a new context's first result, against exec floors.
node "$root/packages/simple/bench/code-context.mjs" "$REGISTRY" "${out%.json}-code.json"
