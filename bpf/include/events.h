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
#define MSG_OP_GENERIC_KPROBE 13     /* kprobes and syscall hooks: process_kprobe */
#define MSG_OP_GENERIC_TRACEPOINT 14 /* tracepoints and raw tracepoints: process_tracepoint */
#define MSG_OP_GENERIC_UPROBE 15     /* uprobes: process_uprobe */
#define MSG_OP_GENERIC_LSM 16        /* BPF LSM hooks (spec.lsmhooks): process_lsm */
#define MSG_OP_GENERIC_USDT 28       /* USDT probes (spec.usdts): process_usdt */

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
#define STAT_GENERIC_SENT 6 /* generic (policy) records written to the ring */
#define STAT_GENERIC_LOST 7 /* generic records that found no room */
#define STAT_EXECVE_MAP_UPDATE_ERR 8 /* tg_execve_map updates that failed (full: E2BIG, ENOMEM) */
#define STAT_EXECVE_MAP_DELETE_ERR 9 /* tg_execve_map deletes that failed (no entry: ENOENT) */
#define STAT_COUNT 10

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

/*
 * Generic (TracingPolicy) records: msg_generic, then `nargs` argument blobs back to back, each a
 * struct gen_arg header followed by `len` payload bytes. The kind says how to read the payload; the
 * policy's arg `type` (known to the agent by policy_id/hook_id and arg position) says which
 * KprobeArgument variant it becomes.
 */
#define GEN_ARGS_MAX 5         /* EventConfigMaxArgs */
#define GEN_STRING_MAX 4096    /* string / path payload, NUL not included */
#define GEN_BYTES_MAX 32768    /* char_buf / char_iovec payload with maxData */
#define GEN_BYTES_DEFAULT 4096 /* char_buf payload without maxData */
#define GEN_RECORD_MAX 65536   /* largest record */

/* msg_generic.flags */
#define GEN_F_RETURN (1 << 0)   /* `ret` holds the hook's return value (merged entry + return) */
#define GEN_F_MONITOR (1 << 1)  /* policy in monitor mode: the selector's enforcement was not done */
#define GEN_F_ENFORCED (1 << 2) /* a Sigkill / Signal / NotifyEnforcer was carried out */
#define GEN_F_COMPAT (1 << 3)   /* the task made a 32-bit (ia32) syscall */
#define GEN_F_NOPOST (1 << 4)   /* kernel-internal: a stashed entry whose return only runs returnArgAction */
#define GEN_F_KSTACK (1 << 5)   /* Post kernelStackTrace: a GEN_KIND_KSTACK blob follows the arguments */
#define GEN_F_USTACK (1 << 6)   /* Post userStackTrace: a GEN_KIND_USTACK blob follows (after the kernel's) */
#define GEN_F_IMA (1 << 7)      /* the record ends with a struct gen_ima (imaHash of an LSM hook) */

#define GEN_SELECTOR_NONE 255 /* msg_generic.selector of a hook without selectors */
#define GEN_RET_INDEX 255     /* gen_arg.index of the return value's blob (a returnArg of type sock) */

/* gen_arg.kind */
#define GEN_KIND_INT 1      /* payload: __u64, the value zero-extended from its kernel size */
#define GEN_KIND_STR 2      /* payload: the bytes, NUL not included */
#define GEN_KIND_BYTES 3    /* payload: struct gen_bytes, then the bytes read */
#define GEN_KIND_PATH 4     /* payload: struct gen_path, then the absolute path */
#define GEN_KIND_SOCK 5     /* payload: struct gen_sock */
#define GEN_KIND_SOCKADDR 6 /* payload: struct gen_sockaddr */
#define GEN_KIND_CRED 7     /* payload: struct gen_cred */
#define GEN_KIND_SKB 16     /* payload: struct gen_skb (kernel functions' network types: 16 and up) */
/* kernel objects of kernel-function arguments (readers_kern.h) */
#define GEN_KIND_MODULE 20     /* payload: struct gen_module (module, load_info) */
#define GEN_KIND_USERNS 21     /* payload: struct gen_userns */
#define GEN_KIND_BPF_ATTR 22   /* payload: struct gen_bpf_attr */
#define GEN_KIND_BPF_MAP 23    /* payload: struct gen_bpf_map */
#define GEN_KIND_PERF_EVENT 24 /* payload: struct gen_perf_event */
/* stack traces, after the `nargs` argument blobs (not counted in nargs) */
#define GEN_KIND_KSTACK 30 /* payload: __u64 kernel return addresses, innermost first */
#define GEN_KIND_USTACK 31 /* payload: __u64 user return addresses, innermost first */
#define GEN_STACK_DEPTH 127 /* frames kept (the kernel's default perf_event_max_stack) */

/* gen_arg.flags */
#define GEN_AF_TRUNC (1 << 0) /* string / path longer than the payload */
#define GEN_AF_ERR (1 << 1)   /* could not be read (bad pointer, closed fd): payload may be empty */

struct msg_generic {
	struct msg_common common;
	__u32 pid;           /* tgid */
	__u32 tid;
	__u32 policy_id;     /* the agent's id of the policy */
	__u32 hook_id;       /* the hook's position in the agent's list for this policy */
	__u32 action;        /* action id (ACTION_*) of the matched selector's first action; 0 = Post */
	__u32 return_action; /* action id at return (merged return events) */
	__u8 selector;       /* index of the matched selector; 255 = the hook has none */
	__u8 nargs;          /* argument blobs that follow */
	__u8 flags;          /* GEN_F_* */
	__u8 pad;
	__u32 func_id;       /* syscall-list hooks: the syscall number (bit 31: ia32); else 0 */
	__s64 ret;           /* return value when GEN_F_RETURN */
};

struct gen_arg {
	__u8 kind;  /* GEN_KIND_* */
	__u8 flags; /* GEN_AF_* */
	__u8 index; /* position of this argument in the hook's `args` list */
	__u8 pad;
	__u32 len;  /* payload bytes that follow this header */
};

struct gen_bytes {
	__u32 orig_size; /* the size the program asked for (size argument or return value) */
	__u32 pad;
};

struct gen_path {
	__u32 i_mode;  /* inode mode (type and permission bits); 0 when unknown */
	__u32 f_flags; /* open flags of the file; 0 for names without an open file */
};

struct gen_sock {
	__u16 family;
	__u16 type;
	__u16 protocol;
	__u8 state;
	__u8 pad;
	__u32 mark;
	__u32 priority;
	__u16 sport; /* host byte order */
	__u16 dport; /* host byte order */
	__u32 pad2;
	__u64 cookie;
	__u8 saddr[16]; /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
};

struct gen_sockaddr {
	__u16 family;
	__u16 port; /* host byte order */
	__u32 pad;
	__u8 addr[16]; /* IPv4 in the first 4 bytes; AF_UNIX: not filled */
};

/* an sk_buff: its IP/TCP/UDP tuple in a gen_sock's fields (family, protocol = the L4 protocol, mark,
 * priority, ports, addresses; the rest 0), so the network operators compare it as they compare a sock */
struct gen_skb {
	struct gen_sock tuple;
	__u32 len;
	__u32 hash;
	__u32 secpath_len;
	__u32 secpath_olen;
};

struct gen_cred {
	__u32 uid, gid, euid, egid, suid, sgid, fsuid, fsgid;
	__u32 securebits;
	__u32 pad;
	__u64 cap_permitted, cap_effective, cap_inheritable;
	__u32 userns_level, userns_uid, userns_gid, userns_inum;
};

/* kernel objects of kernel-function arguments (readers_kern.h) */
struct gen_module {
	char name[56];  /* MODULE_NAME_LEN */
	__u64 taints;   /* TAINT_* bit numbers set */
	__u32 sig_ok;   /* load_info: the signature checked out */
	__u32 pad;
};

struct gen_userns {
	__s32 level;
	__u32 uid, gid; /* owner, group */
	__u32 inum;
};

struct gen_bpf_attr {
	__u32 prog_type;
	__u32 insn_cnt;
	char name[16]; /* BPF_OBJ_NAME_LEN */
};

struct gen_bpf_map {
	__u32 map_type, key_size, value_size, max_entries;
	char name[16];
};

#define GEN_KSYM_LEN 128
struct gen_perf_event {
	__u32 type;
	__u32 pad;
	__u64 config;
	__u64 probe_offset;
	char kprobe_func[GEN_KSYM_LEN];
};

/* Action ids in msg_generic.action / return_action (Tetragon's kernel action ids) */
#define ACTION_POST 0
#define ACTION_FOLLOWFD 1
#define ACTION_SIGKILL 2
#define ACTION_UNFOLLOWFD 3
#define ACTION_OVERRIDE 4
#define ACTION_COPYFD 5
#define ACTION_GETURL 6
#define ACTION_DNSLOOKUP 7
#define ACTION_NOPOST 8
#define ACTION_SIGNAL 9
#define ACTION_TRACKSOCK 10
#define ACTION_UNTRACKSOCK 11
#define ACTION_NOTIFYENFORCER 12
#define ACTION_CLEANUPENFORCER 13
#define ACTION_SET 14 /* USDT hooks: write argValue to argument argIndex (generic/usdt.h) */

/* imaHash: the last bytes of a GEN_F_IMA record (after the argument blobs) */
struct gen_ima {
	__s32 algo; /* enum hash_algo of the kernel (4 = sha256); a record is flagged only when > 0 */
	__u8 hash[64];
};

#endif
