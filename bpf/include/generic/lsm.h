/* SPDX-License-Identifier: GPL-2.0 */
/*
 * spec.lsmhooks: BPF LSM programs on the kernel's bpf_lsm_<hook> (the attach target, set by the agent
 * before load). The arguments are the hook's u64 slots of ctx (read as a raw tracepoint's, MECH_RAW_TP);
 * selectors and actions are gen_entry_at's, and the program returns the matched Override's argError,
 * which the kernel's LSM framework returns to the caller: the operation is denied. 0 lets it happen.
 *
 * imaHash: bpf_ima_file_hash() may sleep, so a hook whose Post asks for it is served by a sleepable
 * program (lsm.s) instead, one per kind of hook argument: the file itself (file_* hooks) or the
 * binprm's file (bprm_* hooks). The per-CPU heap is not the task's while it sleeps, so the record
 * waits in gen_stash (cfg.has_return), the hash is computed into gen_ima (per thread), and only then
 * the record comes back into the heap, gets the hash appended (GEN_F_IMA) and is submitted.
 *
 * Included at the end of generic.bpf.c: it relies on gen_entry_at and the parts included there.
 */
#ifndef TETRAGON_GENERIC_LSM_H
#define TETRAGON_GENERIC_LSM_H

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct gen_ima);
} gen_ima SEC(".maps");

/* The LSM framework takes an int hook's result in [-MAX_ERRNO, 0] (the verifier checks it) */
static __always_inline int lsm_result(__s64 err)
{
	if (err < -4095 || err > 0)
		return 0;
	return err;
}

SEC("lsm")
int gen_lsm(void *ctx)
{
	struct gen_heap *h = heap();

	if (!h)
		return 0;
	h->override_err = 0;
	gen_entry_at(ctx, 1, 0);
	return lsm_result(h->override_err);
}

/* does selector s's Post ask for imaHash? (the agent puts those selectors in gen_inmap) */
static __always_inline int ima_wanted(__u32 s)
{
	struct inmap_key k = {.map_id = INMAP_IMA_SELECTORS, .value = s};
	return bpf_map_lookup_elem(&gen_inmap, &k) != NULL;
}

static __always_inline int gen_lsm_ima(void *ctx, struct file *file)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct gen_heap *h = heap();
	struct gen_stash *st;
	struct gen_ima *ima = NULL;
	__u32 size, s;
	__s64 err;

	if (!h)
		return 0;
	h->override_err = 0;
	gen_entry_at(ctx, 1, 0); /* a record to post waits in gen_stash */
	err = h->override_err;    /* kept on the stack: the heap is not ours once we sleep */
	st = bpf_map_lookup_elem(&gen_stash, &pid_tgid);
	if (!st)
		return lsm_result(err);
	if (ima_wanted(st->sel)) {
		struct gen_ima zero = {};
		bpf_map_update_elem(&gen_ima, &pid_tgid, &zero, BPF_ANY);
		ima = bpf_map_lookup_elem(&gen_ima, &pid_tgid);
		if (ima)
			ima->algo = bpf_ima_file_hash(file, ima->hash, sizeof(ima->hash));
	}
	/* no sleeping from here on */
	h = stash_take(&pid_tgid, &size, &s);
	if (h && ima && ima->algo > 0 && size < STASH_MAX) {
		struct msg_generic *m = (struct msg_generic *)h->buf;
		__u32 off = size & (STASH_MAX - 1); /* the verifier's bound; size is below it */
		bpf_probe_read_kernel(&h->buf[off], sizeof(*ima), ima);
		size = off + sizeof(*ima);
		m->flags |= GEN_F_IMA;
		m->common.size = size;
	}
	if (ima)
		bpf_map_delete_elem(&gen_ima, &pid_tgid);
	if (h)
		submit(h, size);
	return lsm_result(err);
}

/* imaHash of a hook whose first argument is the file (file_open, file_permission, mmap_file, ...) */
SEC("lsm.s")
int gen_lsm_ima_file(void *ctx)
{
	return gen_lsm_ima(ctx, (struct file *)((__u64 *)ctx)[0]);
}

/* imaHash of a hook whose first argument is the exec's linux_binprm (bprm_check_security, ...) */
SEC("lsm.s")
int gen_lsm_ima_bprm(void *ctx)
{
	struct linux_binprm *bprm = (struct linux_binprm *)((__u64 *)ctx)[0];

	return gen_lsm_ima(ctx, bprm->file);
}

#endif
