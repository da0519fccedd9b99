// SPDX-License-Identifier: GPL-2.0
/* The floors for bench/guest_hooks.py: a program that does nothing, once per hook mechanism, all on
 * the openat path (the syscall's tracepoint, and do_sys_openat2 for the kernel-function mechanisms;
 * the fentry target is set by the loader). No headers, so it builds without vmlinux.h. */
#define SEC(name) __attribute__((section(name), used))

char LICENSE[] SEC("license") = "GPL";

SEC("tracepoint")
int empty_tp(void *ctx)
{
	return 0;
}

SEC("kprobe")
int empty_kprobe(void *ctx)
{
	return 0;
}

SEC("kprobe.multi")
int empty_kprobe_multi(void *ctx)
{
	return 0;
}

SEC("fentry")
int empty_fentry(void *ctx)
{
	return 0;
}
