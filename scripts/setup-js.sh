#!/usr/bin/env bash
# JS side set-up (idempotent, cheap when nothing changed): pnpm at the version pinned in
# package.json's packageManager (through corepack, else npm), then the workspace's dependencies.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

command -v node >/dev/null || { echo "setup-js: node not found: install Node.js >= 20.19" >&2; exit 1; }
pnpm_version=$(node -p 'require("./package.json").packageManager.split("@")[1]')
export COREPACK_ENABLE_DOWNLOAD_PROMPT=0

if [ "$(pnpm --version 2>/dev/null)" != "$pnpm_version" ]; then
  echo "setup-js: installing pnpm $pnpm_version" >&2
  if ! { corepack enable pnpm && [ "$(pnpm --version 2>/dev/null)" = "$pnpm_version" ]; }; then
    # e.g. a registry mirror whose metadata lacks the signatures corepack verifies.
    echo "setup-js: corepack could not provide pnpm, installing it with npm" >&2
    corepack disable pnpm 2>/dev/null || true
    npm install --global --silent "pnpm@$pnpm_version"
  fi
fi

if [ "${CI:-}" = true ]; then
  pnpm install --frozen-lockfile --reporter=silent
else
  pnpm install --reporter=silent
fi
