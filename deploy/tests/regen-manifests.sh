#!/usr/bin/env bash
# Regenerates deploy/manifests/ from the Helm chart's defaults (`helm template`
# with the pinned helm). Needs what install-tools.sh installs.
set -euo pipefail
cd "$(dirname "$0")"
[[ -x .tools/bin/helm ]] || ./install-tools.sh
exec node manifests.mjs --write
