#!/bin/busybox sh
# Stage 1, PID 1 in the initramfs (tests/vm/guest_kernel.py packs it with busybox and the modules).
# Mounts the host's / (9p, read-only in qemu) under a tmpfs overlay and switches into stage 2, a
# script on the host's disk named by tetragon_vm.stage2= on the kernel command line.
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
	echo "tetragon-vm: stage 1: $*"
	echo "TETRAGON_VM_SETUP_FAILED"
	poweroff -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /mods/order); do
	insmod "/mods/$m.ko" || fail "insmod $m"
done
# multidevs=remap on the qemu side keeps inode numbers unique across the host's mounts
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower ||
	fail "cannot mount the host's / over 9p"
mount -t tmpfs -o size=1G tmpfs /ovl || fail "tmpfs"
mkdir -p /ovl/upper /ovl/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/ovl/upper,workdir=/ovl/work /newroot ||
	fail "cannot build the overlay"
stage2=$(sed -n 's/.*tetragon_vm\.stage2=\([^ ]*\).*/\1/p' /proc/cmdline)
[ -x "/newroot$stage2" ] || fail "no stage 2 script at $stage2"
umount /proc /sys /dev
exec switch_root /newroot "$stage2"
