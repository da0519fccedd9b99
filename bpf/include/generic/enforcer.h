/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NotifyEnforcer: do_actions() leaves a note (signal, error) for the thread in tg_enforcer, a map
 * shared by all hooks of the policy; gen_enforcer (raw_syscalls/sys_exit) sends the signal when the
 * thread next leaves a syscall of the policy's list (gen_inmap set 0).
 */
#ifndef TETRAGON_GENERIC_ENFORCER_H
#define TETRAGON_GENERIC_ENFORCER_H

/* key pid_tgid */
struct enforcer_note {
	__u32 sig;
	__s32 error;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct enforcer_note);
} tg_enforcer SEC(".maps");

/* gen_enforcer: a note for this thread is served when it leaves a listed syscall */
static __always_inline int enforcer_deliver(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct enforcer_note *note = bpf_map_lookup_elem(&tg_enforcer, &pid_tgid);

	if (!note || !syscall_listed(syscall_id(ctx)))
		return 0;
	if (note->sig)
		bpf_send_signal(note->sig);
	bpf_map_delete_elem(&tg_enforcer, &pid_tgid);
	gstat(GSTAT_ENFORCED);
	return 0;
}

#endif
