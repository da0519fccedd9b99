/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Raw argument values, by attach mechanism: a field of the tracepoint record (ctx + byte offset), a
 * u64 slot of a raw tracepoint, or a uprobe's register (pt_regs), narrowed to the argument's size.
 *
 * x86-only: reg_value() reads the sixth argument from regs->r9 (PT_REGS_PARM1..5_CORE follow
 * __TARGET_ARCH_x86, set by the Makefile), and task_is_compat() tests x86's TS_COMPAT. Another
 * arch needs its own cases here (and its vmlinux.h).
 */
#ifndef TETRAGON_GENERIC_RAW_H
#define TETRAGON_GENERIC_RAW_H

static __always_inline __u64 sign_extend(__u64 v, __u32 size)
{
	if (size == 1)
		return (__u64)(__s64)(__s8)v;
	if (size == 2)
		return (__u64)(__s64)(__s16)v;
	if (size == 4)
		return (__u64)(__s64)(__s32)v;
	return v;
}

/* a value of `size` bytes (1, 2, 4 or 8) out of 64 bits: upper bits cleared, or sign-extended */
static __always_inline __u64 narrow(__u64 v, __u32 size, __u32 is_signed)
{
	if (size == 1)
		v &= 0xff;
	else if (size == 2)
		v &= 0xffff;
	else if (size == 4)
		v &= 0xffffffff;
	return is_signed ? sign_extend(v, size) : v;
}

/* An 8-byte-aligned word of the first 64 bytes of a tracepoint record (every syscall argument) is
 * loaded straight from the context, without a helper call (bench/syscall_filter.py: -80 ns per run
 * for three arguments). The verifier refuses ctx + a variable offset, and a ctx pointer the compiler
 * has moved, so each offset is its own load from the unmodified ctx register (asm). */
#define CTX_WORD(ctx, k)                                                              \
	({                                                                            \
		__u64 __w;                                                            \
		asm volatile("%0 = *(u64 *)(%1 + " #k ")" : "=r"(__w) : "r"(ctx)); \
		__w;                                                                  \
	})
static __always_inline int tp_word(void *ctx, __u32 off, __u64 *v)
{
	switch (off) {
	case 8:
		*v = CTX_WORD(ctx, 8);
		return 1;
	case 16:
		*v = CTX_WORD(ctx, 16);
		return 1;
	case 24:
		*v = CTX_WORD(ctx, 24);
		return 1;
	case 32:
		*v = CTX_WORD(ctx, 32);
		return 1;
	case 40:
		*v = CTX_WORD(ctx, 40);
		return 1;
	case 48:
		*v = CTX_WORD(ctx, 48);
		return 1;
	case 56:
		*v = CTX_WORD(ctx, 56);
		return 1;
	}
	return 0;
}

static __always_inline __u64 tp_value(void *ctx, __u32 off, __u32 size, __u32 is_signed)
{
	__u64 v = 0;
	if (!tp_word(ctx, off, &v))
		bpf_probe_read_kernel(&v, size & 15, (char *)ctx + off);
	return narrow(v, size, is_signed);
}

/* argument n of a uprobe, from x86-64's calling convention (rdi, rsi, rdx, rcx, r8, r9) */
static __always_inline __u64 reg_value(struct pt_regs *regs, __u32 n)
{
	switch (n) {
	case 0:
		return PT_REGS_PARM1_CORE(regs);
	case 1:
		return PT_REGS_PARM2_CORE(regs);
	case 2:
		return PT_REGS_PARM3_CORE(regs);
	case 3:
		return PT_REGS_PARM4_CORE(regs);
	case 4:
		return PT_REGS_PARM5_CORE(regs);
	default:
		return BPF_CORE_READ(regs, r9); /* x86-only: the sixth argument's register */
	}
}

/* the raw value at a mechanism-specific place: byte offset (tracepoint) or argument slot */
static __always_inline __u64 raw_at(void *ctx, __u32 off, __u32 size, __u32 is_signed)
{
	__u64 v = 0;
	if (cfg.mech == MECH_TRACEPOINT)
		return tp_value(ctx, off, size, is_signed);
	if (cfg.mech == MECH_RAW_TP)
		bpf_probe_read_kernel(&v, 8, (__u64 *)ctx + (off & 15));
	else if (cfg.mech == MECH_USDT)
		v = usdt_value((struct pt_regs *)ctx, off); /* generic/usdt.h */
	else if (cfg.mech == MECH_LOADER)
		v = loader_value((struct pt_regs *)ctx, off); /* generic/loader.h */
	else
		v = reg_value((struct pt_regs *)ctx, off);
	/* a register or raw_tp slot holds an int argument in its low bits; the upper ones are not defined */
	return narrow(v, size, is_signed);
}

static __always_inline __u64 raw_value(void *ctx, __u32 i)
{
	return raw_at(ctx, cfg.args[i].off, cfg.args[i].size, cfg.args[i].is_signed);
}

static __always_inline int task_is_compat(struct task_struct *task)
{
	/* x86-only: TS_COMPAT in thread_info.status while an ia32 syscall runs */
	if (bpf_core_field_exists(task->thread_info.status))
		return (BPF_CORE_READ(task, thread_info.status) & 0x0002) != 0;
	return 0;
}

/* raw_syscalls: the syscall id (offset 8 of the record), bit 31 set for an ia32 call: the agent's
 * numbering in gen_inmap and msg_generic.func_id */
static __always_inline __u64 syscall_id(void *ctx)
{
	__u64 id = tp_value(ctx, 8, 8, 1);
	if (task_is_compat(cur_task()))
		id |= 1ULL << 31;
	return id;
}

/* is syscall id in the hook's syscall list (gen_inmap set 0)? */
static __always_inline int syscall_listed(__u64 id)
{
	struct inmap_key k = {.map_id = 0, .value = id};
	return bpf_map_lookup_elem(&gen_inmap, &k) != NULL;
}

#endif
