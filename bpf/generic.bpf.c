// SPDX-License-Identifier: GPL-2.0
/*
 * Generic TracingPolicy hook. One object is loaded per hook with its configuration in .rodata
 * (struct gen_hook_cfg, include/generic_cfg.h); only the entry program of the hook's mechanism is
 * loaded. The mechanism only decides where raw argument values come from; reading arguments,
 * selectors, actions and the record are shared:
 *
 *   gen_tp      tracepoint (tracefs field offsets): tracepoints, syscalls/sys_enter_*, raw_syscalls
 *   gen_tp_ret  tracepoint at syscall exit: completes an entry stashed by gen_tp (return: true)
 *   gen_rawtp   raw tracepoint (u64 args[])
 *   gen_uprobe  uprobe (pt_regs); also a USDT probe point (MECH_USDT: arguments per generic/usdt.h)
 *   gen_kprobe, gen_kprobe_multi  kernel function entry (pt_regs): a kprobe, or a kprobe.multi link
 *   gen_kretprobe, gen_kretprobe_multi  its return: completes the entry stashed by the entry program
 *   gen_loader  kprobe on perf_event_mmap_output: spec.loader's process_loader records (generic/loader.h)
 *   gen_fmodret  fmod_ret on a kernel function (u64 args[]): a kprobe hook with Override, which it does
 *   gen_lsm, gen_lsm_ima_file, gen_lsm_ima_bprm  BPF LSM hooks (spec.lsmhooks), in generic/lsm.h
 *   gen_enforcer  raw_syscalls/sys_exit: delivers NotifyEnforcer signals at the listed syscalls
 *
 * Order of work, cheapest first: process filters (pids, binary, namespaces, capabilities) for every
 * selector; nothing else happens when none can match. Then arguments are read into the record and
 * matchArgs decide. A call that no selector matches never reaches the ring buffer (gen_stats
 * GSTAT_FILTERED counts it).
 *
 * This file holds the programs and the order of work; the parts are headers by concern, in
 * include/generic/: heap.h (per-CPU scratch), maps.h (maps the agent fills or reads), podfilter.h
 * (pod-scoped policies: the cgroups they run for), raw.h (raw
 * values per mechanism), resolve.h (an argument's BTF field path), readers.h (arguments into the record),
 * selectors.h, actions.h,
 * enforcer.h (NotifyEnforcer), stash.h (return: true), record.h (to the ring buffer). They are
 * included once, in dependency order, and rely on `cfg` defined here.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "events.h"
#include "generic_cfg.h"
#include "ringbuf.h"
#include "execve_map.h"
#include "bound.h"

char LICENSE[] SEC("license") = "GPL";

/* the hook's configuration, set by the agent before load: the verifier prunes on its constants */
const volatile struct gen_hook_cfg cfg = {};

#include "generic/heap.h"
#include "path.h"
#include "generic/maps.h"
#include "generic/podfilter.h"
#include "generic/stash.h"
#include "generic/usdt.h"
#include "generic/loader.h"
#include "generic/raw.h"
#include "generic/resolve.h"
#include "generic/enforcer.h"
#include "generic/readers.h"
#include "generic/selectors.h"
#include "generic/actions.h"
#include "generic/record.h"
#include "generic/stacks.h"

/* kfunc: a kernel function's entry (its readers of user-or-kernel memory); func_id: the record's
 * function (syscall lists set it here; kernel-function lists pass their attach cookie) */
static __always_inline int gen_entry_at(void *ctx, int kfunc, __u32 func_id)
{
	__u64 pid_tgid;
	__u32 tgid;
	__u32 mask = 0, off, matched = 255;
	struct gen_proc *p = NULL;
	struct gen_heap *h;
	struct msg_generic *m;

	/* GSTAT_CALLS is not counted here (a map update per call): the agent sums the outcomes */
	h = heap();
	if (!h)
		return 0;
	/* syscall-list hooks on raw_syscalls: the syscall id (offset 8) must be in the list */
	if (cfg.syscall == 2 && !syscall_listed(syscall_id(ctx)))
		return 0;
	/* a pod-scoped policy: tasks outside its containers' cgroups are filtered first */
	if (!pod_filter_pass()) {
		h->filtered++;
		return 0;
	}
	if (cfg.nselectors) {
		mask = (1U << cfg.nselectors) - 1;
		/* selectors of matchArgs alone need neither the exec entry nor a call per selector */
		if (cfg.proc_sel) {
			pid_tgid = bpf_get_current_pid_tgid();
			tgid = pid_tgid >> 32;
			p = bpf_map_lookup_elem(&tg_execve_map, &tgid);
#pragma unroll
			for (int s = 0; s < GEN_MAX_SELECTORS; s++) {
				if (s >= cfg.nselectors)
					break;
				if ((cfg.proc_sel & (1 << s)) && !match_process(s, cur_task(), tgid, p, h))
					mask &= ~(1U << s);
			}
		}
		if (!mask) {
			h->filtered++;
			return 0;
		}
	}

	m = (struct msg_generic *)h->buf;
	m->nargs = 0; /* the rest of the header is filled once a selector matched */
	m->action = 0;
	m->flags = 0;
	off = sizeof(*m);

	/*
	 * Arguments the selectors compare are read first, and only they: a call that no selector
	 * matches costs the reads its matchArgs need, nothing more.
	 */
	__u32 sel_args = cfg.sel_args;
#pragma unroll
	for (int i = 0; i < GEN_ARGS_MAX; i++) {
		if (i >= cfg.nargs)
			break;
		if (sel_args & (1U << i)) {
			h->val[i] = arg_value(ctx, i);
			emit_arg(ctx, h, i, &off, m, kfunc);
		}
	}

	int post = 1;
	if (cfg.nselectors) {
#pragma unroll
		for (int s = 0; s < GEN_MAX_SELECTORS; s++) {
			if (s >= cfg.nselectors)
				break;
			if (!(mask & (1 << s)))
				continue;
			if (match_args(s, h)) {
				matched = s;
				if (cfg.sel[s].nactions)
					m->action = cfg.sel[s].actions[0].id;
				/* enforcement happens now, before the call completes, even for return hooks */
				post = do_actions(cfg.sel[s].actions, cfg.sel[s].nactions, s, h, m);
				if (cfg.mech == MECH_USDT)
					usdt_set(ctx, s, m);
				break;
			}
		}
		if (matched == 255) {
			h->filtered++;
			return 0;
		}
	}
	if (!post && !cfg.ret_action) {
		gstat(GSTAT_NOPOST);
		return 0;
	}
	if (!post) /* not posted, but its return still runs returnArgAction */
		m->flags |= GEN_F_NOPOST;
#pragma unroll
	for (int i = 0; i < GEN_ARGS_MAX; i++) {
		if (i >= cfg.nargs)
			break;
		if (!(sel_args & (1U << i))) {
			h->val[i] = arg_value(ctx, i);
			emit_arg(ctx, h, i, &off, m, kfunc);
		}
	}

	pid_tgid = bpf_get_current_pid_tgid();
	tgid = pid_tgid >> 32;
	m->common.flags = 0;
	m->common.pad[0] = 0;
	m->common.pad[1] = 0;
	m->return_action = 0;
	m->pad = 0;
	m->func_id = func_id;
	m->ret = 0;
	m->common.op = cfg.op;
	m->common.ktime = bpf_ktime_get_boot_ns();
	m->pid = tgid;
	m->tid = (__u32)pid_tgid;
	m->policy_id = cfg.policy_id;
	m->hook_id = cfg.hook_id;
	m->selector = matched;
	sock_owner(h, m);
	if (cfg.syscall == 2)
		m->func_id = (__u32)tp_value(ctx, 8, 8, 1) | (task_is_compat(cur_task()) ? 1U << 31 : 0);
	if (cfg.syscall && task_is_compat(cur_task()))
		m->flags |= GEN_F_COMPAT;
	put_stacks(ctx, h, m, &off);
	m->common.size = off;

	if (cfg.has_return) {
		stash_put(h, &pid_tgid, off, matched);
		return 0;
	}
	submit(h, off);
	return 0;
}

static __always_inline int gen_entry(void *ctx)
{
	return gen_entry_at(ctx, 0, 0);
}

/* a kernel function's entry: in a list, the attach cookie (its position) names the function */
static __always_inline int gen_kfunc_entry(void *ctx)
{
	return gen_entry_at(ctx, 1, cfg.func_cookie ? (__u32)bpf_get_attach_cookie(ctx) : 0);
}

/* the return value is the mechanism's: a syscall exit record's field, or (kfunc) the function's
 * return register */
static __always_inline int gen_return_of(void *ctx, int kfunc)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 size, s;
	struct gen_heap *h = stash_take(&pid_tgid, &size, &s);

	if (!h)
		return 0;

	struct msg_generic *m = (struct msg_generic *)h->buf;
	__s64 ret = kfunc ? (__s64)PT_REGS_RC_CORE((struct pt_regs *)ctx) : (__s64)tp_value(ctx, 16, 8, 1);
	__u32 off = size;

	m->ret = ret;
	m->flags |= GEN_F_RETURN;
	/* returnCopy buffers: read now, as many bytes as the call returned */
#pragma unroll
	for (int i = 0; i < GEN_ARGS_MAX; i++) {
		if (i >= cfg.nargs)
			break;
		if (!cfg.args[i].return_copy)
			continue;
		__u32 aflags = 0;
		if (off > REC_OFF_MASK)
			break;
		__u32 len = put_ubuf(h, off, (const void *)h->val[i], ret < 0 ? 0 : ret, cfg.args[i].max_data, &aflags);
		put_arg_header(h, off, GEN_KIND_BYTES, aflags, i, len);
		off += sizeof(struct gen_arg) + len;
		m->nargs++;
	}
	/* a returnArg of type sock: its blob, and returnArgAction on it (readers_net.h) */
	if (cfg.ret_reader == RD_SOCK && off <= REC_OFF_MASK) {
		__u32 aflags = 0;
		__u32 len = put_sock(h, off, (struct sock *)ret, &aflags);
		put_arg_header(h, off, GEN_KIND_SOCK, aflags, GEN_RET_INDEX, len);
		off += sizeof(struct gen_arg) + len;
		m->nargs++;
	}
	if (cfg.ret_action)
		sock_track(ret, cfg.ret_action == ACTION_TRACKSOCK);
	if (m->flags & GEN_F_NOPOST) {
		gstat(GSTAT_NOPOST);
		return 0;
	}

	int post = 1;
#pragma unroll
	for (int k = 0; k < GEN_MAX_SELECTORS; k++) {
		if (k >= cfg.nselectors)
			break;
		if (k != s)
			continue;
		if (cfg.sel[k].has_ret && !match_one(&cfg.sel[k].match[GEN_MAX_MATCHARGS], h, ret)) {
			gstat(GSTAT_FILTERED);
			return 0;
		}
		if (cfg.sel[k].nret_actions) {
			m->return_action = cfg.sel[k].ret_actions[0].id;
			post = do_actions(cfg.sel[k].ret_actions, cfg.sel[k].nret_actions, k, h, m);
		}
	}
	if (!post) {
		gstat(GSTAT_NOPOST);
		return 0;
	}
	m->common.size = off;
	submit(h, off);
	return 0;
}

static __always_inline int gen_return(void *ctx)
{
	return gen_return_of(ctx, 0);
}

SEC("tracepoint")
int gen_tp(void *ctx)
{
	return gen_entry(ctx);
}

SEC("tracepoint")
int gen_tp_ret(void *ctx)
{
	if (cfg.syscall == 2) { /* raw_syscalls/sys_exit: only the listed syscalls had an entry */
		__u64 pid_tgid = bpf_get_current_pid_tgid();
		if (!bpf_map_lookup_elem(&gen_stash, &pid_tgid))
			return 0;
	}
	return gen_return(ctx);
}

SEC("raw_tp")
int gen_rawtp(void *ctx)
{
	return gen_entry(ctx);
}

/* x86-only: the pt_regs layout is x86-64's (vmlinux.h, __TARGET_ARCH_x86); see raw.h reg_value() */
SEC("uprobe")
int gen_uprobe(struct pt_regs *ctx)
{
	return gen_entry(ctx);
}

/*
 * Kernel functions: one kprobe per function, or one kprobe.multi link (fprobe) for all of them; the
 * arguments are the function's registers (raw.h reg_value(), x86-only like the uprobe's). The return
 * programs complete the entry stashed by the entry program with the function's return value.
 */
SEC("kprobe")
int gen_kprobe(struct pt_regs *ctx)
{
	return gen_kfunc_entry(ctx);
}

SEC("kretprobe")
int gen_kretprobe(struct pt_regs *ctx)
{
	return gen_return_of(ctx, 1);
}

SEC("kprobe.multi")
int gen_kprobe_multi(struct pt_regs *ctx)
{
	return gen_kfunc_entry(ctx);
}

SEC("kretprobe.multi")
int gen_kretprobe_multi(struct pt_regs *ctx)
{
	return gen_return_of(ctx, 1);
}

/* spec.loader: an executable mapping reported to this CPU's dummy perf event, with a build id */
SEC("kprobe/perf_event_mmap_output")
int gen_loader(struct pt_regs *ctx)
{
	if (!loader_wanted(ctx))
		return 0;
	return gen_entry_at(ctx, 1, 0);
}

/*
 * Override on a security_* (or error-injectable) kernel function: an fmod_ret program on it, attach
 * target set by the agent before load. It runs the hook's selectors and actions like gen_kprobe (its
 * arguments are the u64 slots of ctx, read as a raw tracepoint's) and returns the matched Override's
 * argError, which the kernel returns instead of calling the function; 0 lets the call happen. A
 * nonzero result of an earlier fmod_ret program on the function is kept.
 */
SEC("fmod_ret")
int gen_fmodret(void *ctx)
{
	__u64 prev = 0;
	struct gen_heap *h = heap();

	if (!h)
		return 0;
	h->override_err = 0;
	gen_entry_at(ctx, 1, 0);
	bpf_get_func_ret(ctx, &prev);
	return prev ? (int)prev : h->override_err;
}

/* raw_syscalls/sys_exit: a NotifyEnforcer note for this thread is served at a listed syscall */
SEC("tracepoint")
int gen_enforcer(void *ctx)
{
	return enforcer_deliver(ctx);
}

#include "generic/lsm.h"
