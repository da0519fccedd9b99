/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Per-CPU scratch of the generic hook: the raw argument values, where each argument's blob sits,
 * and the buffer the record is built in.
 */
#ifndef TETRAGON_GENERIC_HEAP_H
#define TETRAGON_GENERIC_HEAP_H

/*
 * gen_heap.buf: the record is built from offset 0, a blob starts below 32 KiB and is at most
 * 32 KiB + header long. Past that start range, scratch that never meets a blob start: a return
 * hook's stash is staged at STASH_SCRATCH (stash.h), binary paths are compared at BIN_SCRATCH
 * (selectors.h).
 */
#define REC_OFF_MASK 0x7fff
#define STASH_SCRATCH 32768
#define BIN_SCRATCH 65536
#define REC_BUF_SIZE (65536 + 4096 + 512) /* + the reach of a postfix compare past BIN_SCRATCH */
/* What a filtered call touches (the counter, the argument slots, the start of buf) shares one page. */
struct gen_heap {
	__u64 filtered; /* GSTAT_FILTERED of this CPU, kept here: no map lookup on the hot path */
	__u64 val[GEN_ARGS_MAX];  /* raw argument values */
	__u32 aoff[GEN_ARGS_MAX]; /* payload offset of each argument's blob in buf */
	__u32 alen[GEN_ARGS_MAX]; /* payload length */
	__u8 akind[GEN_ARGS_MAX];
	__u8 pad[3];
	__s32 override_err; /* Override's argError once its selector matched in enforce mode (gen_fmodret) */
	char buf[REC_BUF_SIZE];
};

/* One scratch per CPU, too big for a per-CPU map (32 KiB limit): an array indexed by CPU, sized to
 * the possible CPUs by the agent. Programs run with migration disabled, so a CPU's slot is theirs. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_heap);
} gen_heap SEC(".maps");

static __always_inline struct gen_heap *heap(void)
{
	__u32 cpu = bpf_get_smp_processor_id();
	return bpf_map_lookup_elem(&gen_heap, &cpu);
}

#endif
