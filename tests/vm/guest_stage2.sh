#!/bin/sh
# Stage 2, PID 1 on the host's / (read-only 9p under a tmpfs overlay): mount what the agent and
# libbpf expect, run the command the runner wrote to $run/cmd.sh with its output on the console,
# write its exit code to the shared $run/out/rc, power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
BB=/bin/busybox  # the host's poweroff and ip may belong to systemd or be missing

mount -t proc proc /proc
run=$(sed -n 's/.*tetragon_vm\.run=\([^ ]*\).*/\1/p' /proc/cmdline)
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t securityfs securityfs /sys/kernel/security
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
$BB ip link set lo up
$BB hostname tetragon-vm

if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out "$run/out"; then
	echo "tetragon-vm: stage 2: cannot mount the result share at $run/out"
	echo "TETRAGON_VM_SETUP_FAILED"
	$BB poweroff -f
fi
echo "TETRAGON_VM_READY uptime=$(cut -d' ' -f1 /proc/uptime)s kernel=$(uname -r) lsm=$(cat /sys/kernel/security/lsm)"
sh "$run/cmd.sh" </dev/null 2>&1
rc=$?
echo "$rc" >"$run/out/rc"
sync
umount "$run/out"
echo "TETRAGON_VM_EXIT=$rc uptime=$(cut -d' ' -f1 /proc/uptime)s"
$BB poweroff -f
