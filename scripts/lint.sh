#!/usr/bin/env bash
# clang-tidy (the checks in .clang-tidy) over the given files, or over every
# product source file: scripts/lint.sh [FILE...]. Needs a configured build dir
# with compile_commands.json (BUILD_DIR, default build-test). Opt-in, not part
# of scripts/test.sh: clang-analyzer takes about a minute per file here.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build-test}
[[ -f $BUILD/compile_commands.json ]] || cmake -S . -B "$BUILD" -G Ninja >/dev/null
if (($#)); then files=("$@"); else mapfile -t files < <(git ls-files 'common/src/*.cc' 'guest-agent/src/*.cc' 'csi-driver/src/*.cc'); fi
clang-tidy -p "$BUILD" --quiet "${files[@]}"
