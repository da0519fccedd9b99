/* SPDX-License-Identifier: GPL-2.0 */
/*
 * spec.loader (MECH_LOADER): process_loader events, as Tetragon's loader sensor makes them. The agent
 * opens one dummy software perf event per CPU with mmap, mmap2 and build_id reporting on, never read:
 * its only purpose is that the kernel calls perf_event_mmap_output(event, mmap_event) for every
 * executable mapping, with the file's name and build id already worked out. A kprobe there (gen_loader
 * in generic.bpf.c) keeps the calls for this CPU's dummy event (its id in gen_loader_id, written by
 * the agent) that carry a build id, and records them through the generic path with these raw values:
 *   slot 0  mmap_event->file_name    (a kernel string: RD_STR)
 *   slot 1  &mmap_event->build_id    (kernel bytes: RD_BUF, size from slot 2)
 *   slot 2  mmap_event->build_id_size
 */
#ifndef TETRAGON_GENERIC_LOADER_H
#define TETRAGON_GENERIC_LOADER_H

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64); /* this CPU's dummy perf event id */
} gen_loader_id SEC(".maps");

static __always_inline __u64 loader_value(struct pt_regs *regs, __u32 slot)
{
	struct perf_mmap_event *me = (struct perf_mmap_event *)PT_REGS_PARM2_CORE(regs);

	if (slot == 0)
		return (__u64)BPF_CORE_READ(me, file_name);
	if (slot == 1)
		return (__u64)&me->build_id[0];
	return BPF_CORE_READ(me, build_id_size);
}

/* is this call for this CPU's dummy event, and has the mapping a build id? */
static __always_inline int loader_wanted(struct pt_regs *regs)
{
	__u32 zero = 0;
	__u64 *id = bpf_map_lookup_elem(&gen_loader_id, &zero);
	struct perf_event *pe = (struct perf_event *)PT_REGS_PARM1_CORE(regs);

	if (!id || !*id || BPF_CORE_READ(pe, id) != *id)
		return 0;
	return loader_value(regs, 2) != 0;
}

#endif
