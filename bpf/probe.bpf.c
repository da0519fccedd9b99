// SPDX-License-Identifier: GPL-2.0
/*
 * Feature probes: one do-nothing program per attach mechanism or helper. The agent loads each one
 * on its own and attaches it for an instant (src/tetragon/bpf/features.py); a mechanism counts as
 * available only when both steps succeed, because several kernels load a program type they cannot
 * attach (no kprobes, BPF LSM compiled in but not in lsm=, kprobe.multi without fprobe).
 *
 * Program names are "probe_" + the feature key the agent reports.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

/*
 * Syscall entry points are error-injectable (ALLOW_ERROR_INJECTION), which bpf_override_return
 * requires of the probed function; their symbol names carry an arch prefix.
 */
#if defined(__TARGET_ARCH_x86)
#define SYSCALL(name) "__x64_sys_" #name
#elif defined(__TARGET_ARCH_arm64)
#define SYSCALL(name) "__arm64_sys_" #name
#elif defined(__TARGET_ARCH_s390)
#define SYSCALL(name) "__s390x_sys_" #name
#else
#define SYSCALL(name) "sys_" #name
#endif

/*
 * Never set: the helpers below must not act. A plain global (not `const volatile`) keeps the verifier
 * from pruning the guarded call, so loading still proves that the helper is allowed.
 */
volatile __u32 probe_armed;

SEC("tracepoint/sched/sched_process_fork")
int probe_tracepoint(void *ctx)
{
	return 0;
}

SEC("tp_btf/sched_process_fork")
int probe_tp_btf(void *ctx)
{
	return 0;
}

SEC("raw_tp/sched_process_fork")
int probe_raw_tp(void *ctx)
{
	return 0;
}

/* getppid: a libc function the agent itself never calls, so the instant of attachment is unnoticed */
SEC("uprobe/libc.so.6:getppid")
int probe_uprobe(struct pt_regs *ctx)
{
	return 0;
}

SEC("kprobe/security_file_open")
int probe_kprobe(struct pt_regs *ctx)
{
	return 0;
}

SEC("kprobe.multi/security_file_open")
int probe_kprobe_multi(struct pt_regs *ctx)
{
	return 0;
}

SEC("fentry/security_file_open")
int probe_fentry(void *ctx)
{
	return 0;
}

SEC("lsm/file_open")
int probe_lsm(void *ctx)
{
	return 0; /* allow */
}

SEC("raw_tp/sched_process_fork")
int probe_signal(void *ctx)
{
	if (probe_armed)
		bpf_send_signal(9);
	return 0;
}

SEC("kprobe/" SYSCALL(getppid))
int probe_override_return(struct pt_regs *ctx)
{
	if (probe_armed)
		bpf_override_return(ctx, 0);
	return 0;
}

SEC("fmod_ret/security_file_open")
int probe_fmodret(void *ctx)
{
	return 0; /* keep the function's own result */
}

/* USDT Set writes user memory: bpf_probe_write_user, which kernel lockdown (integrity) removes */
SEC("raw_tp/sched_process_fork")
int probe_probe_write_user(void *ctx)
{
	__u64 v = 0;
	if (probe_armed)
		bpf_probe_write_user((void *)0, &v, sizeof(v));
	return 0;
}
