/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Policies scoped to pods (TracingPolicyNamespaced, podSelector, containerSelector): the hook only
 * runs for tasks whose cgroup (v2, the id bpf_get_current_cgroup_id returns) is in the policy's
 * `policy_cgroups` set. The agent fills the set, shared by all objects of one policy, with the
 * cgroups of the selected containers as pods come and go (k8s/policyfilter.py). `pod_filter` is
 * set before load: for every other policy the verifier prunes the check away. An entry's value is
 * the policy's filter id (its id), which `tetra debug dump policyfilter` prints.
 *
 * `hostSelector: {}` with pod/container selectors (`pod_filter_host`) also runs the hook for every
 * process outside pods. "Outside pods" cannot be a set of cgroups (host cgroups come and go
 * unseen), so the set says the opposite: the agent adds the cgroups of every other known pod
 * container and the pods' root cgroups (kubepods) with value POD_FILTER_IN_POD, and a task runs
 * the hook when its nearest marked cgroup, itself or an ancestor, is a selected one, or when
 * neither it nor any ancestor is marked. The ancestor walk also covers a sub-cgroup a container
 * made since the agent last looked.
 */
#ifndef TETRAGON_GENERIC_PODFILTER_H
#define TETRAGON_GENERIC_PODFILTER_H

#define POD_FILTER_IN_POD 0 /* value: a pod's cgroup the policy does not select */
#define POD_FILTER_MAX_DEPTH 16 /* cgroup levels walked; kind nests containers 5-6 deep */

const volatile __u32 pod_filter = 0;
const volatile __u32 pod_filter_host = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, __u32); /* the policy's filter id, or POD_FILTER_IN_POD */
} policy_cgroups SEC(".maps");

/* hostSelector: the verdict of the deepest marked ancestor of the task's cgroup; none: a host task */
static __noinline int pod_filter_outside_pods(__u64 cgid)
{
	__u32 *mark, verdict = 1;
	__u64 id;

	for (int level = 1; level < POD_FILTER_MAX_DEPTH; level++) {
		id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id || id == cgid)
			break;
		mark = bpf_map_lookup_elem(&policy_cgroups, &id);
		if (mark)
			verdict = *mark != POD_FILTER_IN_POD;
	}
	return verdict;
}

/* 1 when the current task may run the policy's hook */
static __always_inline int pod_filter_pass(void)
{
	__u32 *mark;
	__u64 cgid;

	if (!pod_filter)
		return 1;
	cgid = bpf_get_current_cgroup_id();
	mark = bpf_map_lookup_elem(&policy_cgroups, &cgid);
	if (!pod_filter_host)
		return mark != NULL;
	if (mark)
		return *mark != POD_FILTER_IN_POD;
	return pod_filter_outside_pods(cgid);
}

#endif
