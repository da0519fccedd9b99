/* SPDX-License-Identifier: GPL-2.0 */
/*
 * `resolve` on a hook argument: a BTF field path from the argument's struct (e.g.
 * `mm.owner.real_parent.comm` from a struct linux_binprm *). The agent walks the path in the running
 * kernel's BTF at load time (src/tetragon/policy/compile/resolve.py) into at most RESOLVE_STEPS steps:
 * add an offset to the value, then, if the field there is a pointer, read the pointer. The last step
 * either reads an integer field of `last_size` bytes, or leaves the value as the field's address (an
 * array or embedded struct) or the pointer read (a pointer field), for the argument's reader.
 *
 * A NULL pointer or a failed read on the way leaves the value 0: the reader then reports an error (or
 * an integer 0), as a NULL argument would.
 */
#ifndef TETRAGON_GENERIC_RESOLVE_H
#define TETRAGON_GENERIC_RESOLVE_H

#define RESOLVE_STEPS 10

struct resolve_step {
	__u32 off;  /* byte offset added to the value */
	__u8 deref; /* then read the pointer there */
	__u8 pad[3];
};

struct resolve_cfg {
	__u8 nsteps;      /* 0: the argument is not resolved */
	__u8 last_size;   /* the last field is an integer of this many bytes (1, 2, 4, 8); 0: not one */
	__u8 last_signed; /* sign-extend it */
	__u8 pad;
	struct resolve_step step[RESOLVE_STEPS];
};

#ifdef __VMLINUX_H__
/* read-only data set by the agent before load, like cfg: a hook without resolve prunes all of it */
const volatile struct resolve_cfg resolve_args[GEN_ARGS_MAX] = {};

/* argument i's value after its resolve path (v: the raw argument, a pointer to the path's root) */
static __always_inline __u64 resolve_value(__u32 i, __u64 v)
{
	__u32 n = resolve_args[i].nsteps;

#pragma unroll
	for (int k = 0; k < RESOLVE_STEPS; k++) {
		if (k >= n || !v)
			break;
		v += resolve_args[i].step[k].off;
		if (k == n - 1 && resolve_args[i].last_size) {
			__u64 x = 0;
			if (bpf_probe_read_kernel(&x, resolve_args[i].last_size & 15, (void *)v))
				x = 0; /* the helper zeroes the destination on failure */
			v = resolve_args[i].last_signed ? sign_extend(x, resolve_args[i].last_size) : x;
			break;
		}
		/* the helper zeroes v on failure: the walk stops at the next step */
		if (resolve_args[i].step[k].deref)
			bpf_probe_read_kernel(&v, sizeof(v), (void *)v);
	}
	return v;
}

/* argument i's value: the raw one, or where its resolve path leads */
static __always_inline __u64 arg_value(void *ctx, __u32 i)
{
	__u64 v = raw_value(ctx, i);

	return resolve_args[i].nsteps ? resolve_value(i, v) : v;
}
#endif

#endif
