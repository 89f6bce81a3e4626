#!/usr/bin/env bash
# Installs the cocostorage guest agent into a Kata guest root filesystem
# (the rootfs directory Kata's osbuilder builds before it makes the image), or
# into / of a running guest. See docs/deploy.md, "Guest image".
#
#   deploy/guest/install-guest.sh --rootfs ROOTFS_DIR [--agent PATH] [--config FILE]
#   deploy/guest/install-guest.sh --extension COCO_EXTENSION_DIR [--agent PATH] [--config FILE]
#
#   --rootfs     the guest root filesystem ("/" for a live guest): systemd route
#   --extension  the tree the "coco" guest extension image is built from
#                (usr/local/bin/confidential-data-hub, etc/kata-extensions/...):
#                kata-agent's launcher route, see docs/deploy.md "Guest packaging"
#   --agent   the cocostorage-agent binary (default: build/guest-agent/cocostorage-agent,
#             as built by `cmake --build build --target cocostorage-agent`)
#   --config  agent.json to install (default: deploy/guest/agent.json)
#
# Into a rootfs it copies the binary to /usr/bin, the shared libraries it
# needs that the rootfs lacks (resolved with ldd on this machine, which must
# run the same Debian release as the guest rootfs), the systemd units (the
# agent's and the real CDH's on the upstream socket, enabled for
# kata-containers.target, and a kata-agent drop-in that waits for the agent),
# the configs (agent.json, cdh.toml) and a modules-load.d file, then checks
# that the tools the agent runs (mkfs.ext4, mkfs.xfs) are in the rootfs.
# Into an extension tree it copies the binary to usr/local/bin, its libraries
# to usr/lib/cocostorage, the configs to etc/cocostorage and replaces
# etc/kata-extensions/components.toml with ours (CDH moved, agent in its slot).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rootfs= extension= agent="$here/../../build/guest-agent/cocostorage-agent" config="$here/agent.json"
while (($#)); do
  case $1 in
    --rootfs) rootfs=$2; shift 2 ;;
    --extension) extension=$2; shift 2 ;;
    --agent) agent=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "install-guest: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x $agent ]] || { echo "install-guest: agent binary $agent not found (build target cocostorage-agent)" >&2; exit 1; }

# Copies the shared libraries (libcryptsetup, libdevmapper, libblkid, gRPC,
# protobuf...) of the agent that $1 does not have yet to $1$2/.
copy_libs() {
  command -v ldd >/dev/null || return 0
  ldd "$agent" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | while read -r lib; do
    [[ -e $1$lib ]] && continue
    real=$(readlink -f "$lib")
    if [[ -n $2 ]]; then
      install -D -m 0644 "$real" "$1$2/$(basename "$lib")"
    else
      install -D -m 0644 "$real" "$1$lib"
    fi
  done
}

if [[ -n $extension ]]; then
  [[ -z $rootfs ]] || { echo "install-guest: --rootfs and --extension exclude each other" >&2; exit 2; }
  [[ -d $extension ]] || { echo "install-guest: --extension DIR must exist" >&2; exit 2; }
  extension=$(cd "$extension" && pwd)
  manifest=$extension/etc/kata-extensions/components.toml
  if [[ -e $manifest ]] && ! grep -q '^schema_version = 1$' "$manifest"; then
    echo "install-guest: $manifest is not schema_version 1: check deploy/guest/components.toml against it" >&2
    exit 1
  fi
  [[ -x $extension/usr/local/bin/confidential-data-hub ]] ||
    echo "install-guest: warning: no usr/local/bin/confidential-data-hub in $extension (CDH calls will be UNAVAILABLE)" >&2
  install -D -m 0755 "$agent" "$extension/usr/local/bin/cocostorage-agent"
  install -D -m 0600 "$config" "$extension/etc/cocostorage/agent.json"
  install -D -m 0644 "$here/cdh.toml" "$extension/etc/cocostorage/cdh.toml"
  install -D -m 0644 "$here/components.toml" "$manifest"
  # The extension is mounted at /run/kata-extensions/coco; its libraries are
  # found through the manifest's LD_LIBRARY_PATH. Which ones the base rootfs
  # has is unknown here: take all but the C library's own.
  copy_libs "$extension" /usr/lib/cocostorage
  rm -f "$extension"/usr/lib/cocostorage/{ld-linux*,libc.so*,libm.so*,libpthread.so*,libdl.so*,librt.so*}
  echo "install-guest: installed cocostorage-agent into the extension tree $extension"
  exit 0
fi

[[ -n $rootfs && -d $rootfs ]] || { echo "install-guest: --rootfs DIR (or --extension DIR) is required and must exist" >&2; exit 2; }
rootfs=$(cd "$rootfs" && pwd)

install -D -m 0755 "$agent" "$rootfs/usr/bin/cocostorage-agent"
install -D -m 0644 "$here/cocostorage-agent.service" "$rootfs/usr/lib/systemd/system/cocostorage-agent.service"
install -D -m 0644 "$here/cocostorage-cdh.service" "$rootfs/usr/lib/systemd/system/cocostorage-cdh.service"
install -D -m 0644 "$here/kata-agent.service.d/10-cocostorage.conf" "$rootfs/etc/systemd/system/kata-agent.service.d/10-cocostorage.conf"
install -D -m 0600 "$config" "$rootfs/etc/cocostorage/agent.json"
install -D -m 0644 "$here/cdh.toml" "$rootfs/etc/cocostorage/cdh.toml"
install -D -m 0644 "$here/modules-load.conf" "$rootfs/etc/modules-load.d/cocostorage.conf"
# Enable for kata-containers.target, which Kata's osbuilder systemd images
# boot; a rootfs without that target (a plain image) gets multi-user.target.
wants=kata-containers.target
if ! [[ -e $rootfs/usr/lib/systemd/system/kata-containers.target || -e $rootfs/etc/systemd/system/kata-containers.target ]]; then
  wants=multi-user.target
fi
mkdir -p "$rootfs/etc/systemd/system/$wants.wants"
for unit in cocostorage-agent.service cocostorage-cdh.service; do
  ln -sfn "/usr/lib/systemd/system/$unit" "$rootfs/etc/systemd/system/$wants.wants/$unit"
done

copy_libs "$rootfs" ""

missing=0
for tool in mkfs.ext4 mkfs.xfs; do
  if ! [[ -x $rootfs/usr/sbin/$tool || -x $rootfs/sbin/$tool ]]; then
    echo "install-guest: warning: $tool is not in the rootfs (add e2fsprogs / xfsprogs to the osbuilder EXTRA_PKGS)" >&2
    missing=1
  fi
done
if ! [[ -x $rootfs/bin/sh || -x $rootfs/usr/bin/sh ]]; then
  echo "install-guest: warning: /bin/sh is not in the rootfs (the units' readiness checks run it)" >&2
  missing=1
fi
echo "install-guest: installed cocostorage-agent into $rootfs"
exit $missing
