#!/usr/bin/env bash
# Installs every build and test dependency from Debian packages on a bare
# bookworm machine. Safe to run again (apt-get is idempotent).
set -euo pipefail

PACKAGES=(
  # build
  cmake ninja-build g++ pkg-config git ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libcryptsetup-dev libdevmapper-dev libblkid-dev libmount-dev libspdlog-dev libfmt-dev libcli11-dev libcurl4-openssl-dev libtomlplusplus-dev
  libyaml-cpp-dev zlib1g-dev  # the policy generator (tools/policy-gen)
  nlohmann-json3-dev libgtest-dev libgmock-dev libssl-dev libabsl-dev
  # VM harness: emulated guest with Debian's kernel and a busybox initramfs
  qemu-system-x86 qemu-utils busybox-static cryptsetup-bin e2fsprogs xfsprogs
  cpio kmod gzip python3
  # test KBS and independent JOSE vectors
  python3-cryptography
  # ttrpc conformance: the real Go client, built offline in GOPATH mode
  golang-go golang-github-containerd-ttrpc-dev
  # Ceph RBD backend (csi-driver) and its real single-node test cluster (tests/ceph)
  librbd-dev librados-dev ceph-mon ceph-mgr ceph-osd ceph-common qemu-block-extra
  # lint
  clang-format clang-tidy
  # fuzzing: libFuzzer and the sanitizers ship with Debian's clang (fuzz/)
  clang
)

"$(dirname "$0")/apt-install-missing.sh" install-deps "${PACKAGES[@]}"
for extra in deploy/tests/install-tools.sh; do
  if [[ -x $extra ]]; then "$extra"; fi
done
