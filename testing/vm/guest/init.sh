#!/bin/sh
# /init of the VM-harness test guest (busybox sh). TEST ONLY.
#
# Kernel command line knobs (values use ',' where a space is meant; the *_b64
# forms carry base64 of newline-separated items and win over the plain ones):
#   coco.agent_args=A,B        replaces the agent's default arguments
#   coco.agent_extra_args=A,B  appended to the (default or replaced) arguments
#   coco.agent_env=K=V,K2=V2   environment for the agent (e.g. a crash point)
#   coco.agent_args_b64= coco.agent_extra_args_b64= coco.agent_env_b64=
#   coco.agent=0               boot with the agent disabled (/run/agent.disabled)
#   coco.exec_port=7000        guest-exec port
# The agent is (re)started by a respawn loop from /run/agent.args and
# /run/agent.env (one item per line) and /run/agent.bin (binary, default
# /usr/bin/cocostorage-agent): the harness may rewrite them and kill the agent
# to restart it with other arguments. /run/agent.disabled pauses the loop;
# /run/agent.pid holds the running agent's pid; output is appended to
# /run/agent.log and copied to the console.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
umask 022
set -o pipefail

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null || true
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t configfs configfs /sys/kernel/config 2>/dev/null || true
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
mkdir -p /run/cryptsetup /run/lock /run/cocostorage /run/kata-containers/sandbox/storage
echo 0 >/proc/sys/kernel/printk_ratelimit 2>/dev/null || true

KVER=$(cat /etc/coco-kernel-version)
echo "coco-init: loading modules"
while read -r m; do
  insmod "/lib/modules/$KVER/$m" 2>/tmp/insmod.err || {
    grep -q 'File exists' /tmp/insmod.err || echo "coco-init: insmod $m: $(cat /tmp/insmod.err)"
  }
done </etc/modules.load
rm -f /tmp/insmod.err

if [ ! -e /dev/mapper/control ] && [ -e /sys/class/misc/device-mapper/dev ]; then
  mkdir -p /dev/mapper
  IFS=: read -r MA MI </sys/class/misc/device-mapper/dev
  mknod /dev/mapper/control c "$MA" "$MI"
fi
# There is no udev: libdevmapper must create /dev/mapper nodes itself.
export DM_DISABLE_UDEV=1
echo "export DM_DISABLE_UDEV=1" >/etc/profile

ip link set lo up
ip link set eth0 up 2>/dev/null && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 ||
  echo "coco-init: eth0 setup failed"
# Let QEMU's user-mode network learn our MAC now: otherwise the first forwarded
# host connection waits for a TCP retransmission (seconds under TCG).
ping -c 1 -W 1 10.0.2.2 >/dev/null 2>&1 &

# ---------------------------------------------------------------- command line
cmdline_value() {  # prints the value of key $1 (last occurrence), quotes stripped
  tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p" | tail -n 1 | sed 's/^"//; s/"$//'
}
EXEC_PORT=$(cmdline_value coco.exec_port); EXEC_PORT=${EXEC_PORT:-7000}
: >/run/agent.args
: >/run/agent.env
if [ -n "$(cmdline_value coco.agent_args_b64)" ]; then
  cmdline_value coco.agent_args_b64 | base64 -d >/run/agent.args
elif [ -n "$(cmdline_value coco.agent_args)" ]; then
  cmdline_value coco.agent_args | tr ',' '\n' >/run/agent.args
else
  # Suites that are not about the storage policy run without one; the policy
  # suite replaces these arguments.
  printf '%s\n' --listen=tcp://0.0.0.0:7001 --storage-root=/run/kata-containers/sandbox/storage \
    --state-dir=/run/cocostorage --insecure-no-storage-policy >/run/agent.args
fi
if [ -n "$(cmdline_value coco.agent_extra_args_b64)" ]; then
  cmdline_value coco.agent_extra_args_b64 | base64 -d >>/run/agent.args
elif [ -n "$(cmdline_value coco.agent_extra_args)" ]; then
  cmdline_value coco.agent_extra_args | tr ',' '\n' >>/run/agent.args
fi
if [ -n "$(cmdline_value coco.agent_env_b64)" ]; then
  cmdline_value coco.agent_env_b64 | base64 -d >/run/agent.env
elif [ -n "$(cmdline_value coco.agent_env)" ]; then
  cmdline_value coco.agent_env | tr ',' '\n' >/run/agent.env
fi
[ "$(cmdline_value coco.agent)" = "0" ] && touch /run/agent.disabled

# ---------------------------------------------------------------- services
(
  while true; do
    /usr/bin/coco-guest-exec --port="$EXEC_PORT" || echo "coco-init: guest-exec exited $?"
    sleep 1
  done
) &

agent_bin() {
  b=$(cat /run/agent.bin 2>/dev/null)
  echo "${b:-/usr/bin/cocostorage-agent}"
}
run_agent() {
  bin=$(agent_bin)
  set --
  while IFS= read -r a; do [ -n "$a" ] && set -- "$@" "$a"; done </run/agent.args
  (
    while IFS= read -r e; do [ -n "$e" ] && export "$e"; done </run/agent.env
    echo "coco-init: starting $bin $*"
    # sh -c so that /run/agent.pid is the agent's own pid (exec keeps it).
    exec sh -c 'echo $$ >/run/agent.pid; exec "$@"' cocostorage-agent "$bin" "$@"
  ) 2>&1 | tee -a /run/agent.log
  rc=$?
  rm -f /run/agent.pid
  echo "coco-init: $bin exited with status $rc" | tee -a /run/agent.log
}
(
  while true; do
    if [ ! -e /run/agent.disabled ] && [ -x "$(agent_bin)" ]; then
      run_agent
    fi
    sleep 0.2
  done
) &

echo "coco-init: ready at $(cut -d" " -f1 /proc/uptime)s uptime (guest-exec on port $EXEC_PORT)"
# PID 1 must never exit: reap orphans forever.
while true; do wait; sleep 1; done
