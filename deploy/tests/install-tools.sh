#!/usr/bin/env bash
# Installs what the deploy tests need (scripts/install-deps.sh runs this):
#   - Debian: Go and the Go template libraries helmrender is built from
#     (golang-go, sprig v3 and yaml.v2; GOPATH mode, nothing is downloaded at
#     build time), node/npm if missing, systemd (systemd-analyze verify).
#   - npm (from package-lock.json, `npm ci`): kubernetes-models and
#     @kubernetes/client-node (validators generated from the Kubernetes
#     OpenAPI spec), ajv (values.schema.json), yaml.
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v2-dev systemd)
command -v node >/dev/null || PACKAGES+=(nodejs)
command -v npm >/dev/null || PACKAGES+=(npm)

../../scripts/apt-install-missing.sh deploy/install-tools "${PACKAGES[@]}"

# npm ci only when node_modules does not match the lock file (npm writes a
# copy of the lock it installed to node_modules/.package-lock.json).
if ! cmp -s <(node -e 'const l=require("./package-lock.json");console.log(JSON.stringify(Object.keys(l.packages).filter(Boolean).sort().map(k=>[k,l.packages[k].version])))') \
           <(node -e 'try{const l=require("./node_modules/.package-lock.json");console.log(JSON.stringify(Object.keys(l.packages).filter(Boolean).sort().map(k=>[k,l.packages[k].version])))}catch{console.log("none")}'); then
  echo "deploy/install-tools: npm ci in deploy/tests"
  npm ci --no-audit --no-fund --loglevel=error
else
  echo "deploy/install-tools: node_modules up to date"
fi
