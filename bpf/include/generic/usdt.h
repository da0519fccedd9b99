/* SPDX-License-Identifier: GPL-2.0 */
/*
 * USDT arguments (MECH_USDT): the hook is a uprobe at a probe point of a `.note.stapsdt` note, and
 * each argument is where the note's spec says it is: a constant, a register, or user memory at a
 * register plus a displacement (or base + index * scale + displacement). The agent parses the spec
 * (src/tetragon/policy/usdt.py) into `usdt_args`, indexed by the USDT argument's number, with
 * registers as their offset in struct pt_regs, as libbpf's usdt.bpf.h does.
 *
 * x86-only like the rest of the generic sensor: the pt_regs offsets are x86-64's.
 */
#ifndef TETRAGON_GENERIC_USDT_H
#define TETRAGON_GENERIC_USDT_H

#define USDT_ARGS_MAX 12 /* sys/sdt.h probes have at most 12 arguments */

#define USDT_ARG_NONE 0
#define USDT_ARG_CONST 1     /* val_off is the value */
#define USDT_ARG_REG 2       /* the register at reg_off */
#define USDT_ARG_REG_DEREF 3 /* memory at register + val_off */
#define USDT_ARG_SIB 4       /* memory at register + (index register << scale_shift) + val_off */

struct usdt_arg_cfg {
	__u8 kind; /* USDT_ARG_* */
	__u8 size; /* 1, 2, 4 or 8 bytes */
	__u8 is_signed;
	__u8 scale_shift;
	__u16 reg_off;     /* offsetof(struct pt_regs, base register) */
	__u16 idx_reg_off; /* offsetof(struct pt_regs, index register) */
	__s64 val_off;
};

#ifdef __VMLINUX_H__
/* read-only data set by the agent before load, like cfg */
const volatile struct usdt_arg_cfg usdt_args[USDT_ARGS_MAX] = {};

static __always_inline __u64 usdt_reg(struct pt_regs *regs, __u32 off)
{
	__u64 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (char *)regs + (off & 0xff));
	return v;
}

/* the user address of a memory argument n (0 for a constant or register one) */
static __always_inline __u64 usdt_addr(struct pt_regs *regs, __u32 n)
{
	if (n >= USDT_ARGS_MAX)
		return 0;
	const volatile struct usdt_arg_cfg *a = &usdt_args[n];
	if (a->kind == USDT_ARG_REG_DEREF)
		return usdt_reg(regs, a->reg_off) + a->val_off;
	if (a->kind == USDT_ARG_SIB)
		return usdt_reg(regs, a->reg_off) + (usdt_reg(regs, a->idx_reg_off) << (a->scale_shift & 3)) +
		       a->val_off;
	return 0;
}

/* USDT argument n as a 64-bit value: its `size` bytes, sign-extended when the spec says signed */
static __always_inline __u64 usdt_value(struct pt_regs *regs, __u32 n)
{
	__u64 v = 0;
	if (n >= USDT_ARGS_MAX)
		return 0;
	const volatile struct usdt_arg_cfg *a = &usdt_args[n];
	if (a->kind == USDT_ARG_CONST)
		v = a->val_off;
	else if (a->kind == USDT_ARG_REG)
		v = usdt_reg(regs, a->reg_off);
	else if (a->kind == USDT_ARG_REG_DEREF || a->kind == USDT_ARG_SIB)
		bpf_probe_read_user(&v, sizeof(v), (void *)usdt_addr(regs, n));
	else
		return 0;
	if (a->size == 1)
		v = a->is_signed ? (__u64)(__s64)(__s8)v : (v & 0xff);
	else if (a->size == 2)
		v = a->is_signed ? (__u64)(__s64)(__s16)v : (v & 0xffff);
	else if (a->size == 4)
		v = a->is_signed ? (__u64)(__s64)(__s32)v : (v & 0xffffffff);
	return v;
}

/*
 * The Set actions of matched selector s: argValue written over the USDT argument argIndex, which
 * must be in user memory (the compiler refuses Set on a constant or register argument), with as many
 * bytes as the argument has. Skipped in monitor mode. Runs before the probe point returns to the
 * traced program, so the program reads the value written.
 */
static __always_inline void usdt_set(struct pt_regs *regs, __u32 s, struct msg_generic *m)
{
	__u32 zero = 0;
	struct gen_policy_conf *pc = bpf_map_lookup_elem(&policy_conf, &zero);

	for (int k = 0; k < GEN_MAX_ACTIONS; k++) {
		if (k >= cfg.sel[s].nactions)
			break;
		const volatile struct gen_action *a = &cfg.sel[s].actions[k];
		if (a->id != ACTION_SET)
			continue;
		if (pc && pc->mode == POLICY_MODE_MONITOR) {
			m->flags |= GEN_F_MONITOR;
			gstat(GSTAT_MONITORED);
			continue;
		}
		__u32 n = a->arg_sig;
		__u64 value = (__u64)(__s64)a->arg_error;
		void *addr = (void *)usdt_addr(regs, n);
		__u32 size = n < USDT_ARGS_MAX ? usdt_args[n].size : 0;
		long err = -1;
		if (addr && size == 8)
			err = bpf_probe_write_user(addr, &value, 8);
		else if (addr && size == 4)
			err = bpf_probe_write_user(addr, &value, 4);
		else if (addr && size == 2)
			err = bpf_probe_write_user(addr, &value, 2);
		else if (addr && size == 1)
			err = bpf_probe_write_user(addr, &value, 1);
		if (!err) {
			m->flags |= GEN_F_ENFORCED;
			gstat(GSTAT_ENFORCED);
		}
	}
}
#endif

#endif
