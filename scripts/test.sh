#!/usr/bin/env bash
# The whole test suite, from a bare machine: installs dependencies, builds with
# warnings as errors and AddressSanitizer/UBSan, then runs every ctest label
# except bench (unit, vm, csi, kbs, policy, e2e, deploy).
#   scripts/test.sh            # everything
#   scripts/test.sh -L unit    # extra arguments go to ctest
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
BUILD=${BUILD_DIR:-build-test}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCOCOSTORAGE_WERROR=ON -DCOCOSTORAGE_SANITIZE=ON
cmake --build "$BUILD" -j"$(nproc)"
cd "$BUILD"
if (($#)); then
  ctest --output-on-failure "$@"
else
  ctest --output-on-failure -LE bench
fi
