// SPDX-License-Identifier: GPL-2.0
/* The reference for bench/syscall_filter.py: a program that does nothing, on the hook the policy uses.
 * No headers, so it builds without vmlinux.h or the multiarch asm/ headers. */
#define SEC(name) __attribute__((section(name), used))

char LICENSE[] SEC("license") = "GPL";

SEC("tracepoint")
int empty_tp(void *ctx)
{
	return 0;
}
