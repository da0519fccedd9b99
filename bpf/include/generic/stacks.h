/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Post's kernelStackTrace / userStackTrace: the return addresses of the kernel and user stacks, copied
 * by bpf_get_stack into blobs after the arguments (GEN_KIND_KSTACK, GEN_KIND_USTACK), to be symbolized
 * by the agent. In the record itself rather than in a stack-trace map (Tetragon's bpf_get_stackid):
 * nothing to look up, delete or size per policy, and a record never names a slot that was reused.
 */
#ifndef TETRAGON_GENERIC_STACKS_H
#define TETRAGON_GENERIC_STACKS_H

static __always_inline void put_stack(void *ctx, struct gen_heap *h, __u32 *off, __u8 kind, __u64 flags)
{
	__u32 o = *off;

	if (o > REC_OFF_MASK)
		return;
	__u32 poff = o + sizeof(struct gen_arg);
	BOUND(poff, 0xffff);
	long r = bpf_get_stack(ctx, &h->buf[poff], GEN_STACK_DEPTH * 8, flags);
	__u32 n = r > 0 ? (__u32)r : 0;
	BOUND(n, 0x3ff);
	put_arg_header(h, o, kind, 0, 0, n);
	*off = poff + n;
}

/* the stacks the matched Post asked for (msg_generic flags), after the argument blobs at *off */
static __always_inline void put_stacks(void *ctx, struct gen_heap *h, struct msg_generic *m, __u32 *off)
{
	if (m->flags & GEN_F_KSTACK)
		put_stack(ctx, h, off, GEN_KIND_KSTACK, 0);
	if (m->flags & GEN_F_USTACK)
		put_stack(ctx, h, off, GEN_KIND_USTACK, BPF_F_USER_STACK);
}

#endif
