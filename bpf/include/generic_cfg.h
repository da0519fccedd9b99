/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Configuration of one generic hook (a tracepoint, syscall, raw tracepoint or uprobe of a
 * TracingPolicy), written by the agent into the object's .rodata before load
 * (src/tetragon/abi/generic_cfg_h.py mirrors it; tests/unit/test_gencfg_layout.py checks the two agree).
 *
 * Being read-only data, every field is a constant to the verifier: it follows only the branches this
 * hook's configuration takes, so unused argument types, operators and selectors cost nothing.
 */
#ifndef TETRAGON_GENERIC_CFG_H
#define TETRAGON_GENERIC_CFG_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define GEN_MAX_SELECTORS 5
#define GEN_MAX_MATCHARGS 5 /* matchArgs per selector; matchReturnArgs use slot GEN_MAX_MATCHARGS */
#define GEN_MAX_VALUES 8    /* values per matchArgs entry */
#define GEN_STRVAL_LEN 264  /* one string value incl. NUL (prefix <= 256 characters) */
#define GEN_MAX_PIDS 4      /* matchPIDs entries per selector */
#define GEN_MAX_PIDVALS 4
#define GEN_MAX_BINVALS 8 /* matchBinaries values */
#define GEN_BIN_LEN 256   /* binary path compared by matchBinaries, incl. NUL */
#define GEN_MAX_NS 10     /* matchNamespaces entries */
#define GEN_MAX_NSVALS 4
#define GEN_MAX_CAPS 3 /* matchCapabilities entries (one per type) */
#define GEN_MAX_ACTIONS 4
#define GEN_ANCESTOR_DEPTH 16 /* followChildren / followForks look this far up */

/* hook mechanism: where raw argument values come from */
#define MECH_TRACEPOINT 1 /* ctx is the trace record: arg.off is a byte offset */
#define MECH_RAW_TP 2     /* ctx is u64 args[]: arg.off is the slot */
#define MECH_UPROBE 3     /* pt_regs: arg.off is the C argument position */
#define MECH_KPROBE 4     /* pt_regs: same as uprobe (kprobe, kprobe.multi) */
#define MECH_USDT 5       /* pt_regs of a USDT probe point: arg.off is the USDT argument (generic/usdt.h) */
#define MECH_LOADER 6     /* perf_event_mmap_output's pt_regs: arg.off is a slot of generic/loader.h */

/* how an argument is read (arg.reader) */
#define RD_INT 1       /* the raw value */
#define RD_USTR 2      /* NUL-terminated string at a user pointer */
#define RD_KSTR 3      /* NUL-terminated string at a kernel pointer */
#define RD_DATALOC 4   /* tracepoint __data_loc char[]: (len << 16 | offset) into the record */
#define RD_FILENAME 5  /* user path string made absolute against the dirfd argument or the cwd */
#define RD_FD 6        /* file descriptor: the open file's path */
#define RD_FILE 7      /* kernel struct file * */
#define RD_PATH 8      /* kernel struct path * */
#define RD_BINPRM 9    /* kernel struct linux_binprm *: its file */
#define RD_UBUF 10     /* user buffer, size from arg.size_arg or the return value */
#define RD_IOVEC 11    /* user struct iovec array, count from arg.size_arg */
#define RD_SOCK_FD 12  /* file descriptor of a socket: its struct sock */
#define RD_SOCK 13     /* kernel struct sock * */
#define RD_USOCKADDR 14 /* user struct sockaddr * */
#define RD_CRED 15     /* kernel struct cred * */
#define RD_SYSCALL64 16 /* syscall number; bit 31 set for an ia32 syscall */
#define RD_DENTRY 17   /* kernel struct dentry *: its name up to the root */
#define RD_CUR_CRED 18 /* the current task's credentials (arg value ignored) */
#define RD_STR 19      /* kernel function `string`: NUL-terminated at a user or kernel pointer */
#define RD_KFILENAME 20 /* kernel struct filename *: its name */
#define RD_BUF 21      /* kernel function `char_buf`: at a user or kernel pointer, size as RD_UBUF */
/* kernel functions' network types (generic/readers_net.h): 40 and up */
#define RD_SKB 40       /* kernel struct sk_buff * */
#define RD_KSOCKADDR 41 /* struct sockaddr * in kernel memory */
#define RD_SOCKET 42    /* kernel struct socket *: its struct sock */
#define RD_NETDEV 43    /* kernel struct net_device *: its name */
/* kernel objects of kernel-function arguments (generic/readers_kern.h): 60 and up; RD_DENTRY is one of them */
#define RD_KERN_FIRST 60
#define RD_MODULE 60     /* struct module * */
#define RD_LOAD_INFO 61  /* struct load_info *: the module being loaded */
#define RD_USER_NS 62    /* struct user_namespace * */
#define RD_KIOCB 63      /* struct kiocb *: its file */
#define RD_IOV_ITER 64   /* struct iov_iter *: the user buffer it walks (first segment) */
#define RD_BPF_ATTR 65   /* union bpf_attr * of BPF_PROG_LOAD */
#define RD_BPF_MAP 66    /* struct bpf_map * */
#define RD_PERF_EVENT 67 /* struct perf_event * */

/* comparison operators (Tetragon's kernel numbering where it has one) */
#define OP_GT 1
#define OP_LT 2
#define OP_EQ 3
#define OP_NEQ 4
#define OP_IN 5
#define OP_NOTIN 6
#define OP_PREFIX 8
#define OP_POSTFIX 9
#define OP_INMAP 10
#define OP_NOTINMAP 11
#define OP_MASK 12
#define OP_SADDR 13
#define OP_DADDR 14
#define OP_SPORT 15
#define OP_DPORT 16
#define OP_PROTOCOL 17
#define OP_NOTSPORT 18
#define OP_NOTDPORT 19
#define OP_SPORTPRIV 20
#define OP_NOTSPORTPRIV 21
#define OP_DPORTPRIV 22
#define OP_NOTDPORTPRIV 23
#define OP_NOTSADDR 24
#define OP_NOTDADDR 25
#define OP_NOTPREFIX 26
#define OP_NOTPOSTFIX 27
#define OP_FAMILY 28
#define OP_STATE 29
#define OP_INRANGE 31
#define OP_NOTINRANGE 32

/* what a matchArgs entry compares (set by the agent from the argument type) */
#define CMP_INT 1      /* signed 64-bit value */
#define CMP_UINT 2     /* unsigned 64-bit value */
#define CMP_STR 3      /* string / path bytes */
#define CMP_SOCK 4     /* struct gen_sock fields */
#define CMP_SOCKADDR 5 /* struct gen_sockaddr fields */

/* matchPIDs / matchBinaries flags */
#define PF_FOLLOW 1 /* followForks / followChildren */
#define PF_NSPID 2  /* isNamespacePID */

/* rateLimitScope */
#define RL_THREAD 0
#define RL_PROCESS 1
#define RL_GLOBAL 2

struct gen_arg_cfg {
	__u8 reader;      /* RD_* (0 = unused slot) */
	__u8 size;        /* MECH_TRACEPOINT field size: 1, 2, 4 or 8 */
	__u8 is_signed;   /* sign-extend the raw value */
	__u8 has_size;    /* RD_UBUF/RD_IOVEC: size (count) comes from the argument at size_off */
	__u8 has_dirfd;   /* RD_FILENAME: relative to the directory fd at dirfd_off (else the cwd) */
	__u8 return_copy; /* RD_UBUF: read the buffer at return, size = return value */
	__u16 off;        /* MECH_TRACEPOINT: byte offset; others: argument slot */
	__u16 size_off;   /* where the size argument is (same units as off; 8-byte value) */
	__u16 dirfd_off;  /* where the directory fd argument is (same units as off; 8-byte value) */
	__u32 max_data;   /* byte cap of a buffer */
};

struct gen_match {
	__u8 arg;   /* position in args; GEN_MATCH_RET = the return value */
	__u8 op;    /* OP_* */
	__u8 cmp;   /* CMP_* */
	__u8 nvals;
	__u32 map_id; /* OP_INMAP / OP_NOTINMAP: key prefix in tg_gen_inmap; CMP_STR: 0 = the values are
		       * inline (str, len), else in gen_str_maps[map_id - 1] (generic/strmaps.h) */
	__u64 lo[GEN_MAX_VALUES]; /* number; range / port low; IPv4 or IPv6 bytes 0-7 */
	__u64 hi[GEN_MAX_VALUES]; /* range / port high; IPv6 bytes 8-15 */
	__u16 len[GEN_MAX_VALUES]; /* string length; CIDR prefix length (bits) */
	__u8 fam[GEN_MAX_VALUES];  /* CIDR: 4 or 6 */
	char str[GEN_MAX_VALUES][GEN_STRVAL_LEN]; /* string values as given, NUL-terminated */
};
#define GEN_MATCH_RET 255
/* gen_inmap set of the selectors whose Post has imaHash (values: selector index; LSM hooks) */
#define INMAP_IMA_SELECTORS 65535

struct gen_match_pid {
	__u8 op;    /* OP_IN / OP_NOTIN */
	__u8 flags; /* PF_* */
	__u8 nvals;
	__u8 pad;
	__u32 vals[GEN_MAX_PIDVALS];
};

struct gen_match_bin {
	__u8 op;    /* OP_IN (= Equal) / OP_NOTIN / OP_PREFIX / OP_NOTPREFIX / OP_POSTFIX / OP_NOTPOSTFIX */
	__u8 flags; /* PF_FOLLOW */
	__u8 nvals;
	__u8 pad;
	__u16 len[GEN_MAX_BINVALS];
	char str[GEN_MAX_BINVALS][GEN_STRVAL_LEN];
};

struct gen_match_ns {
	__u8 ns; /* NS_* slot */
	__u8 op; /* OP_IN / OP_NOTIN */
	__u8 nvals;
	__u8 pad;
	__u32 vals[GEN_MAX_NSVALS];
};

struct gen_match_caps {
	__u8 type; /* 0 effective, 1 inheritable, 2 permitted */
	__u8 op;   /* OP_IN / OP_NOTIN */
	__u8 isns; /* isNamespaceCapability: only in a non-initial user namespace */
	__u8 pad[5];
	__u64 mask;
};

#define STACK_KERNEL 1 /* Post kernelStackTrace */
#define STACK_USER 2   /* Post userStackTrace */

struct gen_action {
	__u8 id;    /* ACTION_* */
	__u8 scope; /* RL_* */
	__u8 stack; /* Post: STACK_* */
	__u8 pad;
	__s32 arg_error; /* Set: argValue */
	__u32 arg_sig;   /* Set: argIndex */
	__u32 arg_sock;  /* TrackSock / UntrackSock: the position of the sock or socket argument */
	__u64 rate_limit_ns; /* Post rateLimit; 0 = none */
};

struct gen_selector {
	__u8 nmatch;     /* matchArgs entries */
	__u8 has_ret;    /* a matchReturnArgs entry in match[GEN_MAX_MATCHARGS] */
	__u8 npids;
	__u8 has_bin;
	__u8 nns;
	__u8 ncaps;
	__u8 nactions;
	__u8 nret_actions;
	__u8 ns_changes_op;   /* matchNamespaceChanges: OP_IN / OP_NOTIN, 0 = none */
	__u8 caps_changes_op; /* matchCapabilityChanges: OP_IN / OP_NOTIN, 0 = none */
	__u16 ns_changes;     /* NS_* bit mask */
	__u32 pad;
	__u64 caps_changes;   /* capability bit mask (effective set) */
	struct gen_match match[GEN_MAX_MATCHARGS + 1];
	struct gen_match_pid pids[GEN_MAX_PIDS];
	struct gen_match_bin bin;
	struct gen_match_ns ns[GEN_MAX_NS];
	struct gen_match_caps caps[GEN_MAX_CAPS];
	struct gen_action actions[GEN_MAX_ACTIONS];
	struct gen_action ret_actions[GEN_MAX_ACTIONS];
};

struct gen_hook_cfg {
	__u32 policy_id;
	__u32 hook_id;
	__u8 mech;      /* MECH_* */
	__u8 op;        /* MSG_OP_GENERIC_* of the records */
	__u8 nargs;
	__u8 nselectors; /* 0 = post every call */
	__u8 has_return; /* entry + return merged: the exit program completes the record */
	__u8 ret_signed;
	__u8 syscall;    /* a syscall hook: compat tasks flagged */
	__u8 func_cookie; /* a list of kernel functions: records carry the attach cookie (the function's
			   * position in the list) in func_id */
	/* derived by the agent from the fields below (derive_masks), so the hot path need not loop:
	 * proc_sel: bit s = selector s has a process filter (matchPIDs, matchBinaries, ...);
	 * sel_args: bit i = argument i is read before the selectors are decided (a matchArgs compares
	 * it, or every argument when an action has a rateLimit) */
	__u8 proc_sel;
	__u8 sel_args;
	__u8 ret_reader; /* RD_SOCK: the return value is a struct sock *, read into a blob (GEN_RET_INDEX) */
	__u8 ret_action; /* returnArgAction: ACTION_TRACKSOCK / ACTION_UNTRACKSOCK on the returned sock */
	struct gen_arg_cfg args[GEN_ARGS_MAX];
	struct gen_selector sel[GEN_MAX_SELECTORS];
};

/* Value of the per-object array map "policy_conf" (index 0), changed at run time by the agent. */
#define POLICY_MODE_ENFORCE 0
#define POLICY_MODE_MONITOR 1
struct gen_policy_conf {
	__u32 mode;
	__u32 pad;
};

/* Slots of the per-object per-CPU counters "gen_stats" */
#define GSTAT_CALLS 0       /* the hook ran: summed by the agent from the outcomes below */
#define GSTAT_FILTERED 1    /* no selector matched: nothing sent */
#define GSTAT_POSTED 2      /* a record was written to the ring */
#define GSTAT_LOST 3        /* a record found no room in the ring */
#define GSTAT_NOPOST 4      /* matched, but NoPost or rate limit */
#define GSTAT_ENFORCED 5    /* Sigkill / Signal / NotifyEnforcer carried out */
#define GSTAT_MONITORED 6   /* enforcement skipped because of monitor mode */
#define GSTAT_RATELIMITED 7 /* Post suppressed by rateLimit */
#define GSTAT_COUNT 8

/* tg_execve_map: what the base sensor knows of each process, for matchBinaries / matchPIDs */
struct gen_proc {
	__u32 ppid;     /* real parent tgid */
	__u32 exec_pid; /* tgid of the process whose exec this image comes from (itself unless forked) */
	__u32 nspid;
	__u32 exec_nspid;
	__u32 ns[10];   /* namespaces at exec (matchNamespaceChanges) */
	__u64 cap_effective; /* at exec (matchCapabilityChanges) */
	__u16 bin_len;
	__u16 pad[3];
	char bin[GEN_BIN_LEN]; /* the program (for a script: its interpreter), absolute, NUL-terminated */
};

#endif
