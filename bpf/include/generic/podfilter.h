/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Policies scoped to pods (TracingPolicyNamespaced, podSelector, containerSelector): the hook only
 * runs for tasks whose cgroup (v2, the id bpf_get_current_cgroup_id returns) is in the policy's
 * `policy_cgroups` set. The agent fills the set, shared by all objects of one policy, with the
 * cgroups of the selected containers as pods come and go (k8s/policyfilter.py). `pod_filter` is
 * set before load: for every other policy the verifier prunes the check away. An entry's value is
 * the policy's filter id (its id), which `tetra debug dump policyfilter` prints; the hook only
 * looks at whether the key is there.
 */
#ifndef TETRAGON_GENERIC_PODFILTER_H
#define TETRAGON_GENERIC_PODFILTER_H

const volatile __u32 pod_filter = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, __u32); /* the policy's filter id */
} policy_cgroups SEC(".maps");

/* 1 when the current task may run the policy's hook */
static __always_inline int pod_filter_pass(void)
{
	__u64 cgid;

	if (!pod_filter)
		return 1;
	cgid = bpf_get_current_cgroup_id();
	return bpf_map_lookup_elem(&policy_cgroups, &cgid) != NULL;
}

#endif
