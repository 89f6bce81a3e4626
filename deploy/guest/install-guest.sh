#!/usr/bin/env bash
# Installs the cocostorage guest agent into a Kata guest root filesystem
# (the rootfs directory Kata's osbuilder builds before it makes the image), or
# into / of a running guest. See docs/deploy.md, "Guest image".
#
#   deploy/guest/install-guest.sh --rootfs ROOTFS_DIR [--agent PATH] [--config FILE]
#
#   --rootfs  the guest root filesystem (required; "/" for a live guest)
#   --agent   the cocostorage-agent binary (default: build/guest-agent/cocostorage-agent,
#             as built by `cmake --build build --target cocostorage-agent`)
#   --config  agent.json to install (default: deploy/guest/agent.json)
#
# It copies the binary to /usr/bin, the shared libraries it needs that the
# rootfs lacks (resolved with ldd on this machine, which must run the same
# Debian release as the guest rootfs), the systemd unit (enabled for
# kata-containers.target), the config and a modules-load.d file, then checks
# that the tools the agent runs (mkfs.ext4, mkfs.xfs) are in the rootfs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rootfs= agent="$here/../../build/guest-agent/cocostorage-agent" config="$here/agent.json"
while (($#)); do
  case $1 in
    --rootfs) rootfs=$2; shift 2 ;;
    --agent) agent=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "install-guest: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $rootfs && -d $rootfs ]] || { echo "install-guest: --rootfs DIR is required and must exist" >&2; exit 2; }
[[ -x $agent ]] || { echo "install-guest: agent binary $agent not found (build target cocostorage-agent)" >&2; exit 1; }
rootfs=$(cd "$rootfs" && pwd)

install -D -m 0755 "$agent" "$rootfs/usr/bin/cocostorage-agent"
install -D -m 0644 "$here/cocostorage-agent.service" "$rootfs/usr/lib/systemd/system/cocostorage-agent.service"
install -D -m 0600 "$config" "$rootfs/etc/cocostorage/agent.json"
install -D -m 0644 "$here/modules-load.conf" "$rootfs/etc/modules-load.d/cocostorage.conf"
# Enable for kata-containers.target, which Kata's osbuilder systemd images
# boot; a rootfs without that target (a plain image) gets multi-user.target.
wants=kata-containers.target
if ! [[ -e $rootfs/usr/lib/systemd/system/kata-containers.target || -e $rootfs/etc/systemd/system/kata-containers.target ]]; then
  wants=multi-user.target
fi
mkdir -p "$rootfs/etc/systemd/system/$wants.wants"
ln -sfn /usr/lib/systemd/system/cocostorage-agent.service "$rootfs/etc/systemd/system/$wants.wants/cocostorage-agent.service"

# Shared libraries (libcryptsetup, libdevmapper, libblkid, gRPC, protobuf...)
# the rootfs does not have yet.
if command -v ldd >/dev/null; then
  ldd "$agent" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | while read -r lib; do
    [[ -e $rootfs$lib ]] && continue
    real=$(readlink -f "$lib")
    install -D -m 0644 "$real" "$rootfs$lib"
  done
fi

missing=0
for tool in mkfs.ext4 mkfs.xfs; do
  if ! [[ -x $rootfs/usr/sbin/$tool || -x $rootfs/sbin/$tool ]]; then
    echo "install-guest: warning: $tool is not in the rootfs (add e2fsprogs / xfsprogs to the osbuilder EXTRA_PKGS)" >&2
    missing=1
  fi
done
echo "install-guest: installed cocostorage-agent into $rootfs"
exit $missing
