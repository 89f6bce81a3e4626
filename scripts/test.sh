#!/usr/bin/env bash
# The whole test suite, from a bare machine: installs dependencies, checks the
# formatting, builds with warnings as errors and AddressSanitizer/UBSan, runs
# every ctest label except bench and soak (unit, vm, csi, e2e, deploy), then
# builds the unit and CSI suites with ThreadSanitizer and runs them, then
# builds the libFuzzer harnesses (fuzz/, clang) and fuzzes each for 10 s.
#   scripts/test.sh            # everything
#   scripts/test.sh -L unit    # extra arguments go to ctest (ASan build only; no TSan stage)
# BUILD_DIR overrides the build directory (TSan: ${BUILD_DIR}-tsan); SKIP_TSAN=1 skips that stage.
# Fuzz stage: ${BUILD_DIR}-fuzz; SKIP_FUZZ=1 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
start=$(date +%s)
scripts/install-deps.sh

echo "==> clang-format check"
git ls-files '*.cc' '*.h' | grep -v '^proto/' | xargs clang-format --dry-run --Werror

BUILD=${BUILD_DIR:-build-test}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCOCOSTORAGE_WERROR=ON -DCOCOSTORAGE_SANITIZE=ON
cmake --build "$BUILD" -j"$(nproc)"
if (($#)); then
  (cd "$BUILD" && ctest --output-on-failure "$@")
  exit 0
fi
# -j: unit tests run two at a time; VM tests are RUN_SERIAL (alone).
(cd "$BUILD" && ctest --output-on-failure -j"$(nproc)" -LE 'bench|soak')
echo "==> ASan/UBSan stage done after $(($(date +%s) - start)) s"

if [[ ${SKIP_TSAN:-0} != 1 ]]; then
  # Data races (the resolver's per-call state, lock maps, the plugin's
  # per-target locks): the unit and CSI suites under ThreadSanitizer. Only the
  # targets they need are built (no VM image).
  TSAN=${BUILD}-tsan
  cmake -S . -B "$TSAN" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCOCOSTORAGE_WERROR=ON -DCOCOSTORAGE_TSAN=ON \
    -DCOCOSTORAGE_BUILD_BENCH=OFF
  cmake --build "$TSAN" -j"$(nproc)" --target coco_common_test coco_agent_unit_test coco_kbs_unit_test coco_kata_runtime_test \
    coco_ttrpc_test coco_ttrpc_go_conformance_test coco_csi_unit_test coco_csi_conformance_test coco_csi_load_test cocostorage-csi \
    coco_policy_unit_test coco_policy_gen_unit_test cocostorage-policy
  # halt_on_error: a race fails the test; the suppressions name races inside
  # uninstrumented Debian libraries (gRPC, protobuf), not our code.
  # csi.load_restart restarts the plugin dozens of times, each start ~20x
  # slower under TSan: a smaller campaign (16 volumes, 1 round) there.
  (cd "$TSAN" && TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$ROOT/scripts/tsan.supp" \
    COCO_LOAD_VOLUMES=16 COCO_LOAD_ROUNDS=1 \
    ctest --output-on-failure -L 'unit|csi' -E '^e2e\.demo_names|^agent\.SecureMountGoClient$')
  echo "==> TSan stage done after $(($(date +%s) - start)) s"
fi

if [[ ${SKIP_FUZZ:-0} != 1 ]]; then
  # Hostile bytes (docs/reliability.md): every parser of untrusted input under
  # libFuzzer with ASan/UBSan, 10 s each over its seed corpus (copied to the
  # build directory). Only the harnesses and the libraries they link are built.
  FUZZ=${BUILD}-fuzz
  CC=clang CXX=clang++ cmake -S . -B "$FUZZ" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCOCOSTORAGE_WERROR=ON \
    -DCOCOSTORAGE_FUZZ=ON -DCOCOSTORAGE_BUILD_BENCH=OFF -DCOCOSTORAGE_BUILD_TESTS=OFF
  cmake --build "$FUZZ" -j"$(nproc)" --target coco_fuzzers
  (cd "$FUZZ" && ctest --output-on-failure -j"$(nproc)" -L unit -R '^fuzz\.')
  echo "==> fuzz stage done after $(($(date +%s) - start)) s"
fi
