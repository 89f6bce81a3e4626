#!/usr/bin/env bash
# A throwaway single-node Ceph cluster for tests, from Debian's packages: one
# monitor, one manager, one BlueStore OSD on a sparse file, cephx on, bound to
# 127.0.0.1 only, everything (data, sockets, logs) under DIR.
#   ceph-cluster.sh start DIR   # prints "ready <conf>" when pool `rbd` can take I/O
#   ceph-cluster.sh stop DIR    # kills the daemons; DIR is left for the caller
# After start: DIR/ceph.conf, DIR/admin.keyring (client.admin) and
# DIR/csi.keyring + DIR/csi.key (client.csi, `profile rbd` on pool rbd: what a
# CSI provisioner secret would hold).
set -euo pipefail
cmd=${1:?start|stop}
dir=$(realpath -m "${2:?DIR}")

stop() {
  for pidfile in "$dir"/run/*.pid; do
    [[ -e $pidfile ]] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  for _ in $(seq 50); do
    alive=0
    for pidfile in "$dir"/run/*.pid; do
      [[ -e $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null && alive=1
    done
    ((alive)) || return 0
    sleep 0.2
  done
  for pidfile in "$dir"/run/*.pid; do kill -9 "$(cat "$pidfile")" 2>/dev/null || true; done
}

if [[ $cmd == stop ]]; then
  stop
  exit 0
fi
[[ $cmd == start ]] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

mkdir -p "$dir"/{run,log,mon,mgr,osd}
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fsid=$(cat /proc/sys/kernel/random/uuid)
conf=$dir/ceph.conf
cat > "$conf" <<CONF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$port
public addr = 127.0.0.1
ms bind ipv4 = true
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/admin.keyring
run dir = $dir/run
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon osd full ratio = 0.97
mon osd backfillfull ratio = 0.96
mon osd nearfull ratio = 0.95
osd crush chooseleaf type = 0
mon data avail warn = 1
mon data avail crit = 0
[mon.a]
mon data = $dir/mon
[mgr.x]
mgr data = $dir/mgr
mgr initial modules =
[osd.0]
osd data = $dir/osd
osd objectstore = bluestore
bluestore block create = true
bluestore block size = ${COCO_CEPH_OSD_BYTES:-4294967296}
osd memory target = 939524096
bluestore cache autotune = false
bluestore cache size = 134217728
CONF

ceph_() { ceph -c "$conf" --connect-timeout 20 "$@"; }
fail() {
  echo "ceph-cluster: $*" >&2
  tail -n 20 "$dir"/log/*.log >&2 || true
  stop
  exit 1
}

ceph-authtool "$dir/mon.keyring" --create-keyring --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$dir/admin.keyring" --create-keyring --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/admin.keyring" >/dev/null
monmaptool --create --addv a "[v2:127.0.0.1:$port]" --fsid "$fsid" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring" >/dev/null 2>&1 || fail "ceph-mon --mkfs"
ceph-mon -c "$conf" -i a || fail "ceph-mon"

ceph_ auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' -o "$dir/mgr/keyring" \
  || fail "mgr key"
ceph-mgr -c "$conf" -i x --keyring "$dir/mgr/keyring" || fail "ceph-mgr"

osd_uuid=$(cat /proc/sys/kernel/random/uuid)
osd_key=$(ceph-authtool --gen-print-key)
osd_id=$(echo "{\"cephx_secret\": \"$osd_key\"}" | ceph_ osd new "$osd_uuid" -i -) || fail "osd new"
ceph-authtool "$dir/osd/keyring" --create-keyring --name "osd.$osd_id" --add-key "$osd_key" >/dev/null
ceph-osd -c "$conf" -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" --keyring "$dir/osd/keyring" >/dev/null 2>&1 \
  || fail "ceph-osd --mkfs"
ceph-osd -c "$conf" -i "$osd_id" --keyring "$dir/osd/keyring" || fail "ceph-osd"

ceph_ osd pool create rbd 8 8 >/dev/null 2>&1 || fail "pool create"
ceph_ osd pool application enable rbd rbd >/dev/null 2>&1 || fail "pool application"
ceph_ auth get-or-create client.csi mon 'profile rbd' osd 'profile rbd pool=rbd' mgr 'profile rbd pool=rbd' \
  -o "$dir/csi.keyring" || fail "client key"
ceph_ auth get-key client.csi > "$dir/csi.key"

# I/O works once the OSD is up and the pool's PGs are active.
for _ in $(seq 300); do
  if timeout 10 rados -c "$conf" -p rbd put coco-ready /etc/hostname 2>/dev/null; then
    rados -c "$conf" -p rbd rm coco-ready
    echo "ready $conf"
    exit 0
  fi
  sleep 0.2
done
fail "pool rbd never became writable"
