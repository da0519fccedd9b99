/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Selectors. match_process(): what needs no argument (matchPIDs, matchBinaries, matchNamespaces,
 * matchCapabilities, matchNamespaceChanges, matchCapabilityChanges), run before any argument is read.
 * match_args()/match_one(): matchArgs and matchReturnArgs over the blobs read_arg() wrote (strings with
 * more than GEN_MAX_VALUES values: strmaps.h). Operators
 * and the .rodata layout they read: generic_cfg.h.
 *
 * match_process() and match_args() are subprograms (__noinline): one copy of the code, called per
 * selector. The rest is inlined, so that the .rodata configuration prunes what a hook does not use.
 */
#ifndef TETRAGON_GENERIC_SELECTORS_H
#define TETRAGON_GENERIC_SELECTORS_H

#include "strmaps.h"

/* one string value j of match m against (p, plen); size 0 never reaches bpf_strncmp */
#define STR_MATCH(p, plen, m, j)                                                                        \
	({                                                                                            \
		int __ok = 0;                                                                          \
		__u32 __vl = (m)->len[j];                                                              \
		__u32 __sz = __vl;                                                                     \
		__u32 __op = (m)->op;                                                                  \
		BOUND(__sz, 0x1ff);                                                                    \
		if (__op == OP_EQ || __op == OP_NEQ || __op == OP_IN || __op == OP_NOTIN) {            \
			if (__sz == 0)                                                                 \
				__ok = (plen) == 0;                                                    \
			else                                                                           \
				__ok = (plen) == __vl &&                                               \
				       bpf_strncmp((p), __sz, (const char *)(m)->str[j]) == 0;         \
		} else if (__sz == 0) {                                                                \
			__ok = 1;                                                                      \
		} else if (__op == OP_PREFIX || __op == OP_NOTPREFIX) {                                \
			__ok = (plen) >= __vl && bpf_strncmp((p), __sz, (const char *)(m)->str[j]) == 0; \
		} else {                                                                               \
			__u32 __at = (plen) - __vl;                                                    \
			BOUND(__at, 0xfff);                                                            \
			__ok = (plen) >= __vl &&                                                       \
			       bpf_strncmp((p) + __at, __sz, (const char *)(m)->str[j]) == 0;          \
		}                                                                                      \
		__ok;                                                                                  \
	})

static __always_inline int negated(__u32 op)
{
	return op == OP_NEQ || op == OP_NOTIN || op == OP_NOTPREFIX || op == OP_NOTPOSTFIX || op == OP_NOTINMAP ||
	       op == OP_NOTSADDR || op == OP_NOTDADDR || op == OP_NOTSPORT || op == OP_NOTDPORT ||
	       op == OP_NOTSPORTPRIV || op == OP_NOTDPORTPRIV || op == OP_NOTINRANGE;
}

static __always_inline int match_int(const volatile struct gen_match *m, __u64 v)
{
	__u32 op = m->op;
	int any = 0;

	if (op == OP_INMAP || op == OP_NOTINMAP) {
		struct inmap_key k = {.map_id = m->map_id, .value = v};
		any = bpf_map_lookup_elem(&gen_inmap, &k) != NULL;
		return op == OP_INMAP ? any : !any;
	}
	if (op == OP_GT)
		return m->cmp == CMP_INT ? (__s64)v > (__s64)m->lo[0] : v > m->lo[0];
	if (op == OP_LT)
		return m->cmp == CMP_INT ? (__s64)v < (__s64)m->lo[0] : v < m->lo[0];
	for (int j = 0; j < GEN_MAX_VALUES; j++) {
		if (j >= m->nvals)
			break;
		if (op == OP_MASK)
			any |= (v & m->lo[j]) != 0;
		else if (op == OP_INRANGE || op == OP_NOTINRANGE)
			any |= m->cmp == CMP_INT ? ((__s64)v >= (__s64)m->lo[j] && (__s64)v <= (__s64)m->hi[j])
						 : (v >= m->lo[j] && v <= m->hi[j]);
		else
			any |= v == m->lo[j];
	}
	return negated(op) ? !any : any;
}

static __always_inline int match_str(const volatile struct gen_match *m, const char *p, __u32 plen,
				     struct gen_heap *h)
{
	int any = 0;

	if (m->map_id) { /* more values than fit inline: one map lookup (strmaps.h) */
		any = str_map_match(m, p, plen, h);
	} else {
#pragma unroll
		for (int j = 0; j < GEN_MAX_VALUES; j++) {
			if (j >= m->nvals)
				break;
			if (STR_MATCH(p, plen, m, j)) {
				any = 1;
				break;
			}
		}
	}
	return negated(m->op) ? !any : any;
}

static __always_inline int cidr_match(const volatile struct gen_match *m, int j, const __u8 *addr, int v6)
{
	__u32 bits = m->len[j];
	if (!v6) {
		if (m->fam[j] != 4)
			return 0;
		__u32 a = bpf_ntohl(*(__u32 *)addr);
		__u32 mask = bits >= 32 ? 0xffffffff : (bits == 0 ? 0 : ~((1U << (32 - bits)) - 1));
		return (a & mask) == ((__u32)m->lo[j] & mask);
	}
	if (m->fam[j] != 6)
		return 0;
	__u64 hi = __builtin_bswap64(*(__u64 *)addr);
	__u64 lo = __builtin_bswap64(*(__u64 *)(addr + 8));
	__u64 m1 = bits >= 64 ? ~0ULL : (bits == 0 ? 0 : ~((1ULL << (64 - bits)) - 1));
	__u32 b2 = bits > 64 ? bits - 64 : 0;
	__u64 m2 = b2 >= 64 ? ~0ULL : (b2 == 0 ? 0 : ~((1ULL << (64 - b2)) - 1));
	return (hi & m1) == (m->lo[j] & m1) && (lo & m2) == (m->hi[j] & m2);
}

static __always_inline int match_net(const volatile struct gen_match *m, const char *p)
{
	__u32 op = m->op;
	__u16 family, sport, dport, proto = 0, state = 0;
	const __u8 *saddr, *daddr;
	int any = 0;

	if (m->cmp == CMP_SOCK) {
		const struct gen_sock *s = (const struct gen_sock *)p;
		family = s->family;
		sport = s->sport;
		dport = s->dport;
		proto = s->protocol;
		state = s->state;
		saddr = s->saddr;
		daddr = s->daddr;
	} else {
		const struct gen_sockaddr *s = (const struct gen_sockaddr *)p;
		family = s->family;
		sport = dport = s->port;
		saddr = daddr = s->addr;
	}
	int v6 = family == 10;
	if (op == OP_SPORTPRIV || op == OP_NOTSPORTPRIV)
		any = sport < 1024;
	else if (op == OP_DPORTPRIV || op == OP_NOTDPORTPRIV)
		any = dport < 1024;
	else {
		for (int j = 0; j < GEN_MAX_VALUES; j++) {
			if (j >= m->nvals)
				break;
			if (op == OP_SADDR || op == OP_NOTSADDR)
				any |= (family == 2 || family == 10) && cidr_match(m, j, saddr, v6);
			else if (op == OP_DADDR || op == OP_NOTDADDR)
				any |= (family == 2 || family == 10) && cidr_match(m, j, daddr, v6);
			else if (op == OP_SPORT || op == OP_NOTSPORT)
				any |= sport >= m->lo[j] && sport <= m->hi[j];
			else if (op == OP_DPORT || op == OP_NOTDPORT)
				any |= dport >= m->lo[j] && dport <= m->hi[j];
			else if (op == OP_FAMILY)
				any |= family == m->lo[j];
			else if (op == OP_PROTOCOL)
				any |= proto == m->lo[j];
			else if (op == OP_STATE)
				any |= state == m->lo[j];
		}
	}
	return negated(op) ? !any : any;
}

static __always_inline int match_one(const volatile struct gen_match *m, struct gen_heap *h, __s64 ret)
{
	__u32 a = m->arg;

	if (a == GEN_MATCH_RET)
		return match_int(m, (__u64)ret);
	BOUND(a, 7);
	if (a >= GEN_ARGS_MAX)
		return 0;
	if (m->cmp == CMP_INT || m->cmp == CMP_UINT) {
		__u64 v = h->val[a];
		if (h->akind[a] == GEN_KIND_INT) /* syscall64 may carry the compat bit */
			v = *(__u64 *)&h->buf[h->aoff[a] & REC_OFF_MASK];
		return match_int(m, v);
	}
	__u32 off = h->aoff[a];
	__u32 len = h->alen[a];
	if (m->cmp == CMP_STR) {
		if (h->akind[a] == GEN_KIND_PATH) {
			off += sizeof(struct gen_path);
			len -= sizeof(struct gen_path);
		} else if (h->akind[a] == GEN_KIND_BYTES) {
			off += sizeof(struct gen_bytes);
			len -= sizeof(struct gen_bytes);
		}
		if (len > GEN_STRING_MAX)
			len = GEN_STRING_MAX;
		BOUND(off, REC_OFF_MASK);
		return match_str(m, &h->buf[off], len, h);
	}
	BOUND(off, REC_OFF_MASK);
	return match_net(m, &h->buf[off]);
}

static __always_inline int pid_in(const volatile struct gen_match_pid *m, __u32 pid)
{
	int any = 0;
	for (int j = 0; j < GEN_MAX_PIDVALS; j++) {
		if (j >= m->nvals)
			break;
		any |= pid == m->vals[j];
	}
	return any;
}

static __always_inline int bin_match_one(const volatile struct gen_match_bin *m, struct gen_proc *p,
					 struct gen_heap *h)
{
	__u32 blen;
	const char *b = &h->buf[BIN_SCRATCH];

	if (!p)
		return 0;
	blen = p->bin_len;
	if (blen >= GEN_BIN_LEN)
		blen = GEN_BIN_LEN - 1;
	bpf_probe_read_kernel(&h->buf[BIN_SCRATCH], GEN_BIN_LEN, p->bin);
#pragma unroll
	for (int j = 0; j < GEN_MAX_BINVALS; j++) {
		if (j >= m->nvals)
			break;
		if (STR_MATCH(b, blen, m, j))
			return 1;
	}
	return 0;
}

static __always_inline int match_bin(const volatile struct gen_match_bin *m, struct gen_proc *p, struct gen_heap *h)
{
	int any = bin_match_one(m, p, h);

	if (!any && (m->flags & PF_FOLLOW) && p) {
		__u32 up = p->ppid;
		for (int d = 0; d < GEN_ANCESTOR_DEPTH; d++) {
			struct gen_proc *a;
			if (up == 0)
				break;
			a = bpf_map_lookup_elem(&tg_execve_map, &up);
			if (!a)
				break;
			if (bin_match_one(m, a, h)) {
				any = 1;
				break;
			}
			up = a->ppid;
		}
	}
	return negated(m->op) ? !any : any;
}

static __always_inline __u32 ns_inum(struct task_struct *task, __u32 slot)
{
	struct nsproxy *nsp = BPF_CORE_READ(task, nsproxy);
	switch (slot) {
	case NS_UTS:
		return BPF_CORE_READ(nsp, uts_ns, ns.inum);
	case NS_IPC:
		return BPF_CORE_READ(nsp, ipc_ns, ns.inum);
	case NS_MNT:
		return BPF_CORE_READ(nsp, mnt_ns, ns.inum);
	case NS_PID: {
		struct pid *tp = BPF_CORE_READ(task, thread_pid);
		unsigned int level = BPF_CORE_READ(tp, level);
		return BPF_CORE_READ(tp, numbers[level & 31].ns, ns.inum);
	}
	case NS_PID_FOR_CHILDREN:
		return BPF_CORE_READ(nsp, pid_ns_for_children, ns.inum);
	case NS_NET:
		return BPF_CORE_READ(nsp, net_ns, ns.inum);
	case NS_TIME:
		return bpf_core_field_exists(nsp->time_ns) ? BPF_CORE_READ(nsp, time_ns, ns.inum) : 0;
	case NS_TIME_FOR_CHILDREN:
		return bpf_core_field_exists(nsp->time_ns_for_children) ? BPF_CORE_READ(nsp, time_ns_for_children, ns.inum)
									 : 0;
	case NS_CGROUP:
		return BPF_CORE_READ(nsp, cgroup_ns, ns.inum);
	default:
		return BPF_CORE_READ(task, cred, user_ns, ns.inum);
	}
}

static __always_inline __u64 task_caps(struct task_struct *task, __u32 type)
{
	const struct cred *c = BPF_CORE_READ(task, cred);
	__u64 v = 0;
	if (type == 0)
		bpf_core_read(&v, 8, &c->cap_effective);
	else if (type == 1)
		bpf_core_read(&v, 8, &c->cap_inheritable);
	else
		bpf_core_read(&v, 8, &c->cap_permitted);
	return v;
}

/* Everything of selector s that does not need the arguments. */
static __noinline int match_process(__u32 s, struct task_struct *task, __u32 tgid, struct gen_proc *p,
					 struct gen_heap *h)
{
	const volatile struct gen_selector *sel = &cfg.sel[s];

	for (int k = 0; k < GEN_MAX_PIDS; k++) {
		if (k >= sel->npids)
			break;
		const volatile struct gen_match_pid *m = &sel->pids[k];
		int any;
		if (m->flags & PF_NSPID) {
			struct pid *tp = BPF_CORE_READ(task, thread_pid);
			unsigned int level = BPF_CORE_READ(tp, level);
			/* the group leader's number in its own namespace */
			struct task_struct *leader = BPF_CORE_READ(task, group_leader);
			struct pid *lp = BPF_CORE_READ(leader, thread_pid);
			__u32 nspid = BPF_CORE_READ(lp, numbers[level & 31].nr);
			any = pid_in(m, nspid);
			if (!any && (m->flags & PF_FOLLOW) && p && p->exec_pid != tgid)
				any = pid_in(m, p->exec_nspid);
		} else {
			any = pid_in(m, tgid);
			if (!any && (m->flags & PF_FOLLOW) && p)
				any = pid_in(m, p->exec_pid);
		}
		if (m->op == OP_NOTIN ? any : !any)
			return 0;
	}
	if (sel->has_bin && !match_bin(&sel->bin, p, h))
		return 0;
	for (int k = 0; k < GEN_MAX_NS; k++) {
		if (k >= sel->nns)
			break;
		const volatile struct gen_match_ns *m = &sel->ns[k];
		__u32 inum = ns_inum(task, m->ns);
		int any = 0;
		for (int j = 0; j < GEN_MAX_NSVALS; j++) {
			if (j >= m->nvals)
				break;
			any |= inum == m->vals[j];
		}
		if (m->op == OP_NOTIN ? any : !any)
			return 0;
	}
	for (int k = 0; k < GEN_MAX_CAPS; k++) {
		if (k >= sel->ncaps)
			break;
		const volatile struct gen_match_caps *m = &sel->caps[k];
		if (m->isns && BPF_CORE_READ(task, cred, user_ns, level) == 0)
			return 0;
		int any = (task_caps(task, m->type) & m->mask) != 0;
		if (m->op == OP_NOTIN ? any : !any)
			return 0;
	}
	if (sel->ns_changes_op) {
		int any = 0;
		if (p) {
			for (int n = 0; n < NS_COUNT; n++)
				if ((sel->ns_changes >> n) & 1)
					any |= ns_inum(task, n) != p->ns[n];
		}
		if (sel->ns_changes_op == OP_NOTIN ? any : !any)
			return 0;
	}
	if (sel->caps_changes_op) {
		int any = p ? ((task_caps(task, 0) ^ p->cap_effective) & sel->caps_changes) != 0 : 0;
		if (sel->caps_changes_op == OP_NOTIN ? any : !any)
			return 0;
	}
	return 1;
}

static __noinline int match_args(__u32 s, struct gen_heap *h)
{
	const volatile struct gen_selector *sel = &cfg.sel[s];

#pragma unroll
	for (int k = 0; k < GEN_MAX_MATCHARGS; k++) {
		if (k >= sel->nmatch)
			break;
		if (!match_one(&sel->match[k], h, 0))
			return 0;
	}
	return 1;
}

#endif
