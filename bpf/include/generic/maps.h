/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Maps of the generic hook that the agent fills or reads (the policy's mode, the outcome counters,
 * the InMap and syscall-list sets), and the small helpers every part uses.
 */
#ifndef TETRAGON_GENERIC_MAPS_H
#define TETRAGON_GENERIC_MAPS_H

/* the policy's mode (monitor/enforce): one map shared by all hooks of a policy, switched at run time */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_policy_conf);
} policy_conf SEC(".maps");

/* per-CPU outcome counters (GSTAT_*), summed by the agent */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GSTAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} gen_stats SEC(".maps");

static __always_inline void gstat(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&gen_stats, &slot);
	if (v)
		*v += 1;
}

/* InMap / NotInMap values and syscall-id sets: {map_id, value} present = member */
struct inmap_key {
	__u32 map_id;
	__u32 pad;
	__u64 value;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct inmap_key);
	__type(value, __u8);
} gen_inmap SEC(".maps");

static __always_inline struct task_struct *cur_task(void)
{
	return (struct task_struct *)bpf_get_current_task();
}

#endif
