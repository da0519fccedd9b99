/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Actions of the matched selector: Post (with its rateLimit), NoPost, Sigkill, Signal, NotifyEnforcer,
 * Override and TrackSock / UntrackSock (readers_net.h). In monitor mode (policy_conf) the enforcing ones
 * only flag the record.
 * do_actions() is a subprogram (__noinline), shared by the entry and the return actions.
 */
#ifndef TETRAGON_GENERIC_ACTIONS_H
#define TETRAGON_GENERIC_ACTIONS_H

/* Post rateLimit: last post time per (selector, scope id, argument prefix). */
#define RL_DATA 40
struct rl_key {
	__u32 sel;
	__u32 id;
	char data[GEN_ARGS_MAX][RL_DATA];
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192); /* the agent sets 1 for hooks without rateLimit */
	__type(key, struct rl_key);
	__type(value, __u64);
} gen_ratelimit SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rl_key);
} gen_rl_scratch SEC(".maps");

static __always_inline int monitor_mode(void)
{
	__u32 zero = 0;
	struct gen_policy_conf *pc = bpf_map_lookup_elem(&policy_conf, &zero);
	return pc && pc->mode == POLICY_MODE_MONITOR;
}

static __always_inline int rate_limited(__u32 s, const volatile struct gen_action *a, struct gen_heap *h)
{
	__u32 zero = 0;
	struct rl_key *k = bpf_map_lookup_elem(&gen_rl_scratch, &zero);
	__u64 now = bpf_ktime_get_ns();
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	if (!k)
		return 0;
	__builtin_memset(k, 0, sizeof(*k));
	k->sel = s;
	k->id = a->scope == RL_THREAD ? (__u32)pid_tgid : (a->scope == RL_PROCESS ? pid_tgid >> 32 : 0);
	for (int i = 0; i < GEN_ARGS_MAX; i++) {
		if (i >= cfg.nargs)
			break;
		__u32 n = h->alen[i] > RL_DATA ? RL_DATA : h->alen[i];
		BOUND(n, 0x3f);
		if (n > RL_DATA)
			n = RL_DATA;
		bpf_probe_read_kernel(k->data[i], n, &h->buf[h->aoff[i] & REC_OFF_MASK]);
	}
	__u64 *last = bpf_map_lookup_elem(&gen_ratelimit, k);
	if (last && now - *last < a->rate_limit_ns)
		return 1;
	bpf_map_update_elem(&gen_ratelimit, k, &now, BPF_ANY);
	return 0;
}

/* Runs the actions; returns 1 when the record is to be posted. */
static __noinline int do_actions(const volatile struct gen_action *acts, __u32 nacts, __u32 s, struct gen_heap *h,
				      struct msg_generic *m)
{
	int post = 1;

	for (int k = 0; k < GEN_MAX_ACTIONS; k++) {
		if (k >= nacts)
			break;
		const volatile struct gen_action *a = &acts[k];
		__u32 id = a->id;
		if (id == ACTION_NOPOST) {
			post = 0;
		} else if (id == ACTION_POST) {
			if (a->rate_limit_ns && rate_limited(s, a, h)) {
				post = 0;
				gstat(GSTAT_RATELIMITED);
			}
			m->flags |= (a->stack & STACK_KERNEL ? GEN_F_KSTACK : 0) | (a->stack & STACK_USER ? GEN_F_USTACK : 0);
		} else if (id == ACTION_SIGKILL || id == ACTION_SIGNAL || id == ACTION_NOTIFYENFORCER ||
			   id == ACTION_OVERRIDE) {
			if (monitor_mode()) {
				m->flags |= GEN_F_MONITOR;
				gstat(GSTAT_MONITORED);
				continue;
			}
			if (id == ACTION_SIGKILL) {
				bpf_send_signal(9);
			} else if (id == ACTION_SIGNAL) {
				bpf_send_signal(a->arg_sig);
			} else if (id == ACTION_NOTIFYENFORCER) {
				__u64 key = bpf_get_current_pid_tgid();
				struct enforcer_note note = {.sig = a->arg_sig, .error = a->arg_error};
				bpf_map_update_elem(&tg_enforcer, &key, &note, BPF_ANY);
			} else {
				/* Override: the fmod_ret program returns it; the agent refuses Override in enforce
				 * mode on every other mechanism */
				h->override_err = a->arg_error;
			}
			m->flags |= GEN_F_ENFORCED;
			gstat(GSTAT_ENFORCED);
		} else if (id == ACTION_TRACKSOCK || id == ACTION_UNTRACKSOCK) {
			__u32 i = a->arg_sock; /* the agent has it read before the actions run */
			if (i < GEN_ARGS_MAX)
				sock_track(h->val[i & 7], id == ACTION_TRACKSOCK);
		}
	}
	return post;
}

#endif
