/* SPDX-License-Identifier: GPL-2.0 */
/*
 * return: true hooks: the entry program (gen_tp, gen_kprobe, gen_kprobe_multi) stashes its record
 * per thread (key pid_tgid) once a selector matched (or the hook has none); the return program
 * (gen_tp_ret at the syscall's exit, gen_kretprobe/gen_kretprobe_multi at the function's return)
 * takes it back, adds the return value and the returnCopy buffers, runs matchReturnArgs and the
 * return actions, and posts it. The imaHash LSM programs (generic/lsm.h) park their record here too
 * while bpf_ima_file_hash sleeps. One record per thread: a kernel function that re-enters itself on
 * the same thread before returning keeps only its innermost entry.
 */
#ifndef TETRAGON_GENERIC_STASH_H
#define TETRAGON_GENERIC_STASH_H

/* the entry record (at most STASH_MAX bytes) and the returnCopy pointers, key pid_tgid */
#define STASH_MAX 16384
/*
 * The agent sizes the map per hook (src/tetragon/sensors/stash_size.py): the value holds the largest
 * entry record this hook's arguments can make (stash_data_max bytes of data[], set in .rodata, so
 * a constant to the verifier), and max_entries is capped by a memory budget. Kernels before 6.4 charge
 * a non-preallocated hash its ceiling, max_entries x value, whatever it holds.
 */
const volatile __u32 stash_data_max = STASH_MAX;
struct gen_stash {
	__u32 size;
	__u8 sel;
	__u8 pad[3];
	__u64 uptr[GEN_ARGS_MAX]; /* returnCopy buffers: user pointer at entry */
	char data[STASH_MAX];
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096); /* the agent sets 1 for hooks without return */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	/* sizes without BTF types: the agent shrinks value_size to the hook's record */
	__uint(key_size, sizeof(__u64));
	__uint(value_size, sizeof(struct gen_stash));
} gen_stash SEC(".maps");

/* gen_tp: the record in h->buf (off bytes, matched selector sel) waits in gen_stash for the exit */
static __always_inline void stash_put(struct gen_heap *h, __u64 *pid_tgid, __u32 off, __u32 sel)
{
	struct gen_stash *st = (struct gen_stash *)&h->buf[STASH_SCRATCH];
	if (off > stash_data_max) {
		gstat(GSTAT_LOST);
		return;
	}
	/* build the stash in place: the record is copied into the map value */
	struct gen_stash *slot;
	if (bpf_map_update_elem(&gen_stash, pid_tgid, st, BPF_ANY)) {
		gstat(GSTAT_LOST); /* more threads inside the hook than the map's entries */
		return;
	}
	slot = bpf_map_lookup_elem(&gen_stash, pid_tgid);
	if (!slot)
		return;
	slot->size = off;
	slot->sel = sel;
	for (int i = 0; i < GEN_ARGS_MAX; i++)
		slot->uptr[i] = i < cfg.nargs ? h->val[i] : 0;
	__u64 n = off; /* 64-bit: the bound checked below is on the register the read is given (a __u32 was
			* zero-extended into a copy for the comparison, and the verifier lost the bound) */
	BOUND(n, 0x3fff);
	if (n > stash_data_max) /* always false: for the verifier, data[] has stash_data_max bytes */
		return;
	bpf_probe_read_kernel(slot->data, n, h->buf);
}

/* gen_tp_ret: this thread's stashed record back into the heap, out of gen_stash; NULL when none */
static __always_inline struct gen_heap *stash_take(__u64 *pid_tgid, __u32 *size, __u32 *sel)
{
	struct gen_stash *st = bpf_map_lookup_elem(&gen_stash, pid_tgid);
	struct gen_heap *h;

	if (!st)
		return NULL;
	h = heap();
	if (!h) {
		bpf_map_delete_elem(&gen_stash, pid_tgid);
		return NULL;
	}
	__u32 n = st->size;
	*sel = st->sel;
	BOUND(n, 0x3fff);
	if (n > stash_data_max)
		n = stash_data_max;
	bpf_probe_read_kernel(h->buf, n, st->data);
	for (int i = 0; i < GEN_ARGS_MAX; i++)
		h->val[i] = st->uptr[i];
	bpf_map_delete_elem(&gen_stash, pid_tgid);
	*size = n;
	return h;
}

#endif
