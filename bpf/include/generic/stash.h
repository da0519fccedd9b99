/* SPDX-License-Identifier: GPL-2.0 */
/*
 * return: true hooks: gen_tp stashes its record per thread (key pid_tgid) once a selector matched
 * (or the hook has none); gen_tp_ret, at the syscall's exit, takes it back, adds the return value
 * and the returnCopy buffers, runs matchReturnArgs and the return actions, and posts it.
 */
#ifndef TETRAGON_GENERIC_STASH_H
#define TETRAGON_GENERIC_STASH_H

/* Entry records of return: true hooks, waiting for the syscall's exit (key: pid_tgid). */
#define STASH_MAX 16384
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
	__type(key, __u64);
	__type(value, struct gen_stash);
} gen_stash SEC(".maps");

#endif
