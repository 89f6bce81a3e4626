#!/usr/bin/env bash
# Regenerates deploy/manifests/ from the Helm chart's defaults. Needs what
# install-tools.sh installs (Debian golang-go + sprig, node_modules here).
set -euo pipefail
cd "$(dirname "$0")"
[[ -d node_modules ]] || npm ci --no-audit --no-fund
exec node manifests.mjs --write
