#!/usr/bin/env bash
# apt-install-missing.sh LABEL PACKAGE...
# Installs those of the given Debian packages that are not installed yet
# (apt-get update first, only when something is missing). Shared by
# scripts/install-deps.sh and the per-area install scripts.
set -euo pipefail
label=$1
shift
if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "$label: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "$label: all $# packages present"
fi
