#!/usr/bin/env bash
# The main job end to end on one machine, no cluster and no TEE hardware:
# a pod's 10G encrypted volume request goes through the real CSI plugin over
# gRPC, the Kata runtime's steps (mountInfo.json, QMP hot-plug, Storage),
# kata-agent's SecureMount call over ttrpc and the real guest agent in a QEMU
# guest; then what the host sees, a tamper attempt, and a full teardown
# (kata-agent unmounts, the agent cleans up by itself) with a leak check;
# then the example StatefulSet's persistent claim: policy generated from its
# YAML, key from a KBS stand-in, created in one VM, read back in the next.
# See docs/e2e.md.
#   scripts/demo.sh              # install deps, build (build-demo/), run
#   scripts/demo.sh --verbose    # extra arguments go to cocostorage-demo
# BUILD_DIR overrides the build directory; SKIP_DEPS=1 skips the apt step.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if [[ ${SKIP_DEPS:-0} != 1 ]]; then
  step "Installing build dependencies (scripts/install-deps.sh)"
  scripts/install-deps.sh
fi

BUILD=${BUILD_DIR:-build-demo}
step "Configuring ${BUILD} (RelWithDebInfo)"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOCOSTORAGE_BUILD_BENCH=OFF >/dev/null

step "Building the plugin, the agent, the guest image and the demo"
cmake --build "$BUILD" -j"$(nproc)" --target cocostorage-csi cocostorage-agent vm_guest_image cocostorage-demo

for need in qemu-system-x86_64; do
  command -v "$need" >/dev/null || { echo "demo: missing prerequisite: $need (apt-get install qemu-system-x86)" >&2; exit 1; }
done

step "Running the demo"
echo
exec "$BUILD/tools/cocostorage-demo" \
  --csi-binary "$BUILD/csi-driver/cocostorage-csi" \
  --image-dir "$BUILD/testing/vm/guest-image" "$@"
