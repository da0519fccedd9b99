/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * THE contract between the BPF programs and the Python decoder (src/tetragon/events/layout.py).
 * Every record that crosses the ring buffer is defined here with fixed sizes; the variable part of
 * an exec record follows its fixed header, in the order and with the lengths the header gives.
 * tests/unit/test_layout.py compiles this header and checks sizeof/offsetof against Python.
 */
#ifndef TETRAGON_EVENTS_H
#define TETRAGON_EVENTS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Message ops: the first byte of every record (same numbers as Tetragon's). */
#define MSG_OP_EXECVE 5
#define MSG_OP_EXIT 7
#define MSG_OP_CLONE 23

/* Caps on the variable parts of an exec record. */
#define EXEC_FILENAME_MAX 4096 /* bprm->filename, incl. NUL */
#define EXEC_ARGS_MAX 8192     /* argv[0..] NUL-separated, as in mm->arg_start..arg_end */
#define EXEC_CWD_MAX 4096      /* cwd built by walking dentries and mounts */
#define EXEC_CGROUP_MAX 256    /* cgroup (default hierarchy) leaf name */
#define EXEC_EXE_MAX 1024      /* path of an executed file with no links left (memfd, deleted) */
#define EXEC_PATH_DEPTH 128    /* path components walked before giving up */

/* msg_exec.flags */
#define EXEC_F_TRUNC_ARGS (1 << 0)     /* arguments longer than EXEC_ARGS_MAX */
#define EXEC_F_TRUNC_FILENAME (1 << 1) /* filename did not fit */
#define EXEC_F_ERR_ARGS (1 << 2)       /* argument area could not be read */
#define EXEC_F_ERR_CWD (1 << 3)        /* cwd walk failed */
#define EXEC_F_TRUNC_CWD (1 << 4)      /* cwd longer than EXEC_CWD_MAX or deeper than EXEC_PATH_DEPTH */
#define EXEC_F_ERR_CGROUP (1 << 5)     /* cgroup name not readable */

/* msg_exec.privs: privileges raised by this exec (Tetragon's PRIVILEGES_RAISED_*) */
#define EXEC_PRIV_FILE_CAP (1 << 0)
#define EXEC_PRIV_SETUID (1 << 1)
#define EXEC_PRIV_SETGID (1 << 2)

/* Namespace slots in msg_exec.ns, in Tetragon's Namespaces field order. */
#define NS_UTS 0
#define NS_IPC 1
#define NS_MNT 2
#define NS_PID 3
#define NS_PID_FOR_CHILDREN 4
#define NS_NET 5
#define NS_TIME 6
#define NS_TIME_FOR_CHILDREN 7
#define NS_CGROUP 8
#define NS_USER 9
#define NS_COUNT 10

/* Slots of the per-CPU stats array map "tg_stats". */
#define STAT_EXEC_SENT 0
#define STAT_EXEC_LOST 1
#define STAT_EXIT_SENT 2
#define STAT_EXIT_LOST 3
#define STAT_CLONE_SENT 4
#define STAT_CLONE_LOST 5
#define STAT_COUNT 8

struct msg_common {
	__u8 op;
	__u8 flags;
	__u8 pad[2];
	__u32 size; /* whole record, header included */
	__u64 ktime; /* bpf_ktime_get_boot_ns() at the event */
};

struct msg_exec {
	struct msg_common common;
	__u32 pid;   /* tgid, host pid namespace */
	__u32 tid;
	__u32 ppid;  /* real_parent tgid */
	__u32 nspid; /* pid in the process's own pid namespace */
	__u32 uid, gid, euid, egid, suid, sgid, fsuid, fsgid;
	__u32 auid;
	__u32 securebits;
	__u64 cap_permitted, cap_effective, cap_inheritable;
	__u32 ns[NS_COUNT];
	__u32 userns_level, userns_uid, userns_gid;
	__u32 flags;  /* EXEC_F_* */
	__u32 privs;  /* EXEC_PRIV_* */
	__u32 file_uid, file_gid; /* owner of the executed file */
	__u32 file_nlink;
	__u64 file_ino;
	__u64 cgroup_id;
	__u32 argc;
	__u16 filename_len; /* bytes that follow, NUL not included */
	__u16 args_len;
	__u16 cwd_len;
	__u16 cgroup_len;
	__u16 exe_len; /* 0 unless the executed file has no links left */
	__u16 pad;
	/* then: cgroup name, filename, args, exe path, cwd, back to back */
};

struct msg_clone {
	struct msg_common common;
	__u32 pid;   /* child tgid */
	__u32 tid;
	__u32 ppid;  /* tgid of the task that forked */
	__u32 nspid;
};

struct msg_exit {
	struct msg_common common;
	__u32 pid;
	__u32 tid;
	__u32 exit_code; /* task->exit_code: status << 8 | signal (0x80 = core dump) */
	__u32 pad;
};

#endif
