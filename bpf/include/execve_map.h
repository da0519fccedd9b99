/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tg_execve_map: tgid -> struct gen_proc, kept by the base sensor (exec, fork, exit) and seeded by
 * the agent from /proc; the generic sensors reuse it (same fd) for matchBinaries, matchPIDs
 * followForks and the *Changes selectors.
 */
#ifndef TETRAGON_EXECVE_MAP_H
#define TETRAGON_EXECVE_MAP_H

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct gen_proc);
} tg_execve_map SEC(".maps");

#endif
