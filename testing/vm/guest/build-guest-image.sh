#!/bin/bash
# Builds the test guest for the VM harness: OUT_DIR/vmlinuz + OUT_DIR/initrd.gz.
#
#   build-guest-image.sh OUT_DIR AGENT_BINARY [EXTRA_BINARY...]
#
# The kernel is Debian's linux-image-<ver>-amd64 (the one linux-image-amd64
# depends on), fetched with `apt-get download` and unpacked with `dpkg -x` into
# ${COCOSTORAGE_CACHE:-$HOME/.cache/cocostorage}/kernel/<pkg>; it is never
# installed on the host. COCOSTORAGE_KERNEL_PKG pins another package,
# COCOSTORAGE_KERNEL_ROOT uses an already unpacked tree (a copy is cached).
#
# The initrd holds busybox, the kernel modules below (with their dependencies,
# in load order), and dynamically linked binaries with every library ldd lists
# (this works for -fsanitize=address,undefined builds too). /init is
# tests/vm/guest/init.sh. TEST ONLY: coco-guest-exec runs any command as root
# for whoever reaches its port; it never goes into a product image.
set -euo pipefail

die() { echo "build-guest-image: $*" >&2; exit 1; }
log() { echo "build-guest-image: $*" >&2; }

[ $# -ge 2 ] || die "usage: $0 OUT_DIR AGENT_BINARY [EXTRA_BINARY...]"
OUT_DIR=$1
AGENT=$2
shift 2
EXTRA=("$@")
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${COCOSTORAGE_CACHE:-${HOME:-/tmp}/.cache/cocostorage}

# Kernel modules wanted in the guest. Missing or built-in ones are fine.
MODULES=(
  virtio_pci virtio_blk virtio_net failover net_failover
  virtio_scsi scsi_mod sd_mod
  dm-mod dm-crypt dm-integrity dm-thin-pool dm-persistent-data dm-bio-prison dm-bufio
  dm-zero dm-flakey dm-delay dm-snapshot loop
  crc32c_generic crc32c_intel libcrc32c crc32_generic
  ext4 xfs
  xts aesni_intel gcm aegis128 aegis128-aesni authenc cryptd sha256 sha256_ssse3 sha512_ssse3
  algif_hash algif_skcipher algif_aead
  vsock vmw_vsock_virtio_transport vsock_loopback
)

# Host tools copied into the guest with their libraries.
TOOLS=(mkfs.ext4 mke2fs e2fsck fsck.ext4 tune2fs dumpe2fs resize2fs debugfs mkfs.xfs xfs_repair xfs_db
  xfs_growfs xfs_admin xfs_info xfs_io blkid wipefs dmsetup cryptsetup integritysetup veritysetup
  filefrag fallocate blkdiscard sgdisk losetup)

# ---------------------------------------------------------------- kernel
kernel_pkg() {
  if [ -n "${COCOSTORAGE_KERNEL_PKG:-}" ]; then echo "$COCOSTORAGE_KERNEL_PKG"; return; fi
  local p
  p=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  if [ -z "$p" ]; then
    log "apt-cache knows no linux-image-amd64; running apt-get update"
    apt-get update -qq >&2 || true
    p=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  fi
  [ -n "$p" ] || die "cannot resolve linux-image-amd64 (set COCOSTORAGE_KERNEL_PKG or COCOSTORAGE_KERNEL_ROOT)"
  echo "$p"
}

PKG=$(kernel_pkg)
KVER=${PKG#linux-image-}
KROOT=$CACHE/kernel/$PKG/root
mkdir -p "$CACHE/kernel"
# Several build trees may share the cache: one fetch at a time.
exec 9>"$CACHE/kernel/.lock"
flock 9
if [ ! -e "$CACHE/kernel/$PKG/.complete" ]; then
  STAGE=$(mktemp -d "$CACHE/kernel/.stage.XXXXXX")
  trap 'rm -rf "$STAGE"' EXIT
  if [ -n "${COCOSTORAGE_KERNEL_ROOT:-}" ] && [ -d "$COCOSTORAGE_KERNEL_ROOT/lib/modules/$KVER" ]; then
    log "copying unpacked kernel from $COCOSTORAGE_KERNEL_ROOT"
    mkdir -p "$STAGE/root"
    cp -a "$COCOSTORAGE_KERNEL_ROOT/boot" "$COCOSTORAGE_KERNEL_ROOT/lib" "$STAGE/root/"
  else
    log "downloading $PKG (apt-get download, not installed)"
    chmod 755 "$STAGE"  # apt's _apt sandbox user must be able to write here
    fetch() { (cd "$STAGE" && apt-get download -q -o APT::Sandbox::User=root "$PKG" >&2); }
    if ! fetch; then
      log "apt-get download $PKG failed; refreshing the package lists and retrying"
      apt-get update -qq >&2 || true
      fetch || true
    fi
    if ls "$STAGE"/"$PKG"_*.deb >/dev/null 2>&1; then
      dpkg -x "$STAGE"/"$PKG"_*.deb "$STAGE/root"
      rm -f "$STAGE"/*.deb
    fi
  fi
  if [ -f "$STAGE/root/boot/vmlinuz-$KVER" ]; then
    depmod -b "$STAGE/root" "$KVER"
    rm -rf "$CACHE/kernel/$PKG"
    mkdir -p "$CACHE/kernel/$PKG"
    mv "$STAGE/root" "$KROOT"
    touch "$CACHE/kernel/$PKG/.complete"
  else
    # Offline or the mirror moved on: any kernel cached earlier will do.
    old=$(ls -d "$CACHE"/kernel/linux-image-*/.complete 2>/dev/null | sort -V | tail -n 1)
    [ -n "$old" ] || die "could not get $PKG (no network?) and no kernel is cached in $CACHE/kernel"
    PKG=$(basename "$(dirname "$old")")
    KVER=${PKG#linux-image-}
    KROOT=$CACHE/kernel/$PKG/root
    log "warning: using the cached $PKG instead"
  fi
  rm -rf "$STAGE"
  trap - EXIT
fi
exec 9>&-
MODDIR=$KROOT/lib/modules/$KVER

# ---------------------------------------------------------------- rootfs
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d "$OUT_DIR/.initrd.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
R=$WORK/root
mkdir -p "$R"/{usr/bin,usr/sbin,usr/lib/x86_64-linux-gnu,usr/lib64,etc,proc,sys,dev,run,tmp,mnt,root,var}
ln -s usr/bin "$R/bin"; ln -s usr/sbin "$R/sbin"; ln -s usr/lib "$R/lib"; ln -s usr/lib64 "$R/lib64"
ln -s ../run "$R/var/run"; ln -s ../tmp "$R/var/tmp"
chmod 1777 "$R/tmp"

# Copies host file $1 to the same (usr-merged) path in the image; $2 overrides the target path.
copy_file() {
  local src=$1 dst=${2:-}
  if [ -z "$dst" ]; then
    dst="$(realpath "$(dirname "$src")")/$(basename "$src")"
  fi
  [ -e "$R$dst" ] && return 0
  mkdir -p "$R$(dirname "$dst")"
  cp -L "$src" "$R$dst"
}

# Copies a binary and every library ldd lists for it (plus the loader).
copy_binary() {
  local src=$1 dst=${2:-}
  copy_file "$src" "$dst"
  local line lib
  if ! ldd "$src" >/dev/null 2>&1; then return 0; fi  # static
  while read -r line; do
    case "$line" in
      *"=> not found"*) die "$src: missing library: $line" ;;
      *"=> /"*) lib=$(echo "$line" | sed -E 's/.*=> (\/[^ ]+).*/\1/') ;;
      /*) lib=${line%% *} ;;
      *) continue ;;
    esac
    copy_file "$lib"
    # keep the literal path too (PT_INTERP /lib64/ld-linux-x86-64.so.2 resolves via the symlinks)
  done < <(ldd "$src")
}

# busybox applets (never shadowing a real binary copied below)
BUSYBOX=$(command -v busybox) || die "busybox (busybox-static) is not installed"
cp -L "$BUSYBOX" "$R/usr/bin/busybox"

for t in "${TOOLS[@]}"; do
  p=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v "$t" || true)
  if [ -z "$p" ]; then log "warning: $t not found on the host, not in the guest"; continue; fi
  copy_binary "$p"
done
for b in "${EXTRA[@]}"; do
  [ -x "$b" ] || die "extra binary $b is not executable"
  copy_binary "$b" "/usr/bin/$(basename "$b")"
done
if [ -n "$AGENT" ] && [ "$AGENT" != "-" ]; then
  [ -x "$AGENT" ] || die "agent binary $AGENT is not executable"
  copy_binary "$AGENT" /usr/bin/cocostorage-agent
fi
[ -e "$R/usr/bin/coco-guest-exec" ] || log "warning: no coco-guest-exec among the binaries: the harness cannot reach this guest"
# glibc dlopens libgcc_s for pthread_cancel/backtraces; ldd does not list it.
for l in /usr/lib/x86_64-linux-gnu/libgcc_s.so.1; do [ -e "$l" ] && copy_file "$l"; done

# Debug info makes up most of a Debug/ASan build and slows the guest's initrd
# unpacking under TCG; symbols stay (symbolize reports with the host's copy).
if [ "${COCOSTORAGE_VM_KEEP_DEBUG:-0}" != 1 ] && command -v strip >/dev/null; then
  for b in cocostorage-agent "${EXTRA[@]}"; do
    f="$R/usr/bin/$(basename "$b")"
    if [ -f "$f" ]; then strip --strip-debug "$f" 2>/dev/null || true; fi
  done
fi

for a in $("$R/usr/bin/busybox" --list); do
  [ -e "$R/usr/bin/$a" ] || [ -e "$R/usr/sbin/$a" ] || ln -s busybox "$R/usr/bin/$a"
done

# Run-time data the tools read.
for f in /etc/mke2fs.conf /etc/e2scrub.conf; do [ -f "$f" ] && copy_file "$f"; done
[ -d /usr/share/xfsprogs ] && mkdir -p "$R/usr/share" && cp -a /usr/share/xfsprogs "$R/usr/share/"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
printf 'root:x:0:\ndisk:x:6:\n' >"$R/etc/group"
printf 'hosts: files\n' >"$R/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n10.0.2.15 guest\n' >"$R/etc/hosts"
printf '/usr/lib/x86_64-linux-gnu\n/usr/lib\n' >"$R/etc/ld.so.conf"
ldconfig -r "$R" 2>/dev/null || log "warning: ldconfig -r failed (libraries still found by the default path)"

# ---------------------------------------------------------------- modules
: >"$WORK/order"
for m in "${MODULES[@]}"; do
  if ! out=$(modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" 2>&1); then
    log "note: module $m: ${out##*: }"
    continue
  fi
  echo "$out" | awk '$1=="insmod"{print $2}' >>"$WORK/order"
done
n=0
: >"$R/etc/modules.load"
while read -r ko; do
  rel=${ko#"$MODDIR"/}
  [ -e "$R/lib/modules/$KVER/$rel" ] && continue
  mkdir -p "$R/lib/modules/$KVER/$(dirname "$rel")"
  case "$ko" in
    *.ko) cp "$ko" "$R/lib/modules/$KVER/$rel" ;;
    *.ko.xz) xz -dc "$ko" >"$R/lib/modules/$KVER/${rel%.xz}"; rel=${rel%.xz} ;;
    *.ko.zst) zstd -qdc "$ko" >"$R/lib/modules/$KVER/${rel%.zst}"; rel=${rel%.zst} ;;
    *) die "unknown module file $ko" ;;
  esac
  echo "$rel" >>"$R/etc/modules.load"
  n=$((n + 1))
done <"$WORK/order"
# modules.builtin lets busybox modprobe/lsmod answer questions in the guest.
cp "$MODDIR"/modules.builtin "$MODDIR"/modules.order "$R/lib/modules/$KVER/" 2>/dev/null || true
echo "$KVER" >"$R/etc/coco-kernel-version"

install -m 0755 "$HERE/init.sh" "$R/init"

(cd "$R" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) | gzip -6 >"$WORK/initrd.gz"
cp "$KROOT/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
mv -f "$WORK/initrd.gz" "$OUT_DIR/initrd.gz"
mv -f "$WORK/vmlinuz" "$OUT_DIR/vmlinuz"
log "built $OUT_DIR/initrd.gz ($(du -h "$OUT_DIR/initrd.gz" | cut -f1), $n modules, kernel $KVER)"
