// SPDX-License-Identifier: GPL-2.0
/*
 * Generic TracingPolicy hook. One object is loaded per hook with its configuration in .rodata
 * (struct gen_hook_cfg, include/generic_cfg.h); only the entry program of the hook's mechanism is
 * loaded. The mechanism only decides where raw argument values come from; reading arguments,
 * selectors, actions and the record are shared:
 *
 *   gen_tp      tracepoint (tracefs field offsets): tracepoints, syscalls/sys_enter_*, raw_syscalls
 *   gen_tp_ret  tracepoint at syscall exit: completes an entry stashed by gen_tp (return: true)
 *   gen_rawtp   raw tracepoint (u64 args[])
 *   gen_uprobe  uprobe (pt_regs)
 *   gen_enforcer  raw_syscalls/sys_exit: delivers NotifyEnforcer signals at the listed syscalls
 *
 * Order of work, cheapest first: process filters (pids, binary, namespaces, capabilities) for every
 * selector; nothing else happens when none can match. Then arguments are read into the record and
 * matchArgs decide. A call that no selector matches never reaches the ring buffer (gen_stats
 * GSTAT_FILTERED counts it).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "events.h"
#include "generic_cfg.h"
#include "ringbuf.h"
#include "execve_map.h"

char LICENSE[] SEC("license") = "GPL";

/* two levels so that a macro mask is expanded before it is pasted into the asm */
#define BOUND_(x, mask) asm volatile("%0 &= " #mask : "+r"(x))
#define BOUND(x, mask) BOUND_(x, mask)

const volatile struct gen_hook_cfg cfg = {};

/* Record scratch: a blob starts below 32 KiB and is at most 32 KiB + header long. */
#define REC_OFF_MASK 0x7fff
#define REC_BUF_SIZE (65536 + 4096 + 512) /* + the reach of a postfix compare past BIN_SCRATCH */
/* What a filtered call touches (the counter, the argument slots, the start of buf) shares one page. */
struct gen_heap {
	__u64 filtered; /* GSTAT_FILTERED of this CPU, kept here: no map lookup on the hot path */
	__u64 val[GEN_ARGS_MAX];  /* raw argument values */
	__u32 aoff[GEN_ARGS_MAX]; /* payload offset of each argument's blob in buf */
	__u32 alen[GEN_ARGS_MAX]; /* payload length */
	__u8 akind[GEN_ARGS_MAX];
	__u8 pad[7];
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

#include "path.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_policy_conf);
} policy_conf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GSTAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} gen_stats SEC(".maps");

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

/* Post rateLimit: last post time per (selector, scope id, argument prefix). */
#define RL_DATA 40
struct rl_key {
	__u32 sel;
	__u32 id;
	char data[GEN_ARGS_MAX][RL_DATA];
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192); /* the agent sets 1 for hooks without rateLimit */
	__type(key, struct rl_key);
	__type(value, __u64);
} gen_ratelimit SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rl_key);
} gen_rl_scratch SEC(".maps");

/* NotifyEnforcer: pending signal per thread, delivered by gen_enforcer at the next listed syscall. */
struct enforcer_note {
	__u32 sig;
	__s32 error;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct enforcer_note);
} tg_enforcer SEC(".maps");

static __always_inline struct task_struct *cur_task(void)
{
	return (struct task_struct *)bpf_get_current_task();
}

static __always_inline void gstat(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&gen_stats, &slot);
	if (v)
		*v += 1;
}

/* ------------------------------------------------------------------------------------------ */
/* raw values */

static __always_inline __u64 sign_extend(__u64 v, __u32 size)
{
	if (size == 1)
		return (__u64)(__s64)(__s8)v;
	if (size == 2)
		return (__u64)(__s64)(__s16)v;
	if (size == 4)
		return (__u64)(__s64)(__s32)v;
	return v;
}

/* a value of `size` bytes (1, 2, 4 or 8) out of 64 bits: upper bits cleared, or sign-extended */
static __always_inline __u64 narrow(__u64 v, __u32 size, __u32 is_signed)
{
	if (size == 1)
		v &= 0xff;
	else if (size == 2)
		v &= 0xffff;
	else if (size == 4)
		v &= 0xffffffff;
	return is_signed ? sign_extend(v, size) : v;
}

/* An 8-byte-aligned word of the first 64 bytes of a tracepoint record (every syscall argument) is
 * loaded straight from the context, without a helper call (bench/syscall_filter.py: -80 ns per run
 * for three arguments). The verifier refuses ctx + a variable offset, and a ctx pointer the compiler
 * has moved, so each offset is its own load from the unmodified ctx register (asm). */
#define CTX_WORD(ctx, k)                                                              \
	({                                                                            \
		__u64 __w;                                                            \
		asm volatile("%0 = *(u64 *)(%1 + " #k ")" : "=r"(__w) : "r"(ctx)); \
		__w;                                                                  \
	})
static __always_inline int tp_word(void *ctx, __u32 off, __u64 *v)
{
	switch (off) {
	case 8:
		*v = CTX_WORD(ctx, 8);
		return 1;
	case 16:
		*v = CTX_WORD(ctx, 16);
		return 1;
	case 24:
		*v = CTX_WORD(ctx, 24);
		return 1;
	case 32:
		*v = CTX_WORD(ctx, 32);
		return 1;
	case 40:
		*v = CTX_WORD(ctx, 40);
		return 1;
	case 48:
		*v = CTX_WORD(ctx, 48);
		return 1;
	case 56:
		*v = CTX_WORD(ctx, 56);
		return 1;
	}
	return 0;
}

static __always_inline __u64 tp_value(void *ctx, __u32 off, __u32 size, __u32 is_signed)
{
	__u64 v = 0;
	if (!tp_word(ctx, off, &v))
		bpf_probe_read_kernel(&v, size & 15, (char *)ctx + off);
	return narrow(v, size, is_signed);
}

static __always_inline __u64 reg_value(struct pt_regs *regs, __u32 n)
{
	switch (n) {
	case 0:
		return PT_REGS_PARM1_CORE(regs);
	case 1:
		return PT_REGS_PARM2_CORE(regs);
	case 2:
		return PT_REGS_PARM3_CORE(regs);
	case 3:
		return PT_REGS_PARM4_CORE(regs);
	case 4:
		return PT_REGS_PARM5_CORE(regs);
	default:
		return BPF_CORE_READ(regs, r9); /* x86-64: sixth argument */
	}
}

/* the raw value at a mechanism-specific place: byte offset (tracepoint) or argument slot */
static __always_inline __u64 raw_at(void *ctx, __u32 off, __u32 size, __u32 is_signed)
{
	__u64 v = 0;
	if (cfg.mech == MECH_TRACEPOINT)
		return tp_value(ctx, off, size, is_signed);
	if (cfg.mech == MECH_RAW_TP)
		bpf_probe_read_kernel(&v, 8, (__u64 *)ctx + (off & 15));
	else
		v = reg_value((struct pt_regs *)ctx, off);
	/* a register or raw_tp slot holds an int argument in its low bits; the upper ones are not defined */
	return narrow(v, size, is_signed);
}

static __always_inline __u64 raw_value(void *ctx, __u32 i)
{
	return raw_at(ctx, cfg.args[i].off, cfg.args[i].size, cfg.args[i].is_signed);
}

static __always_inline int task_is_compat(struct task_struct *task)
{
	/* x86: TS_COMPAT in thread_info.status while an ia32 syscall runs */
	if (bpf_core_field_exists(task->thread_info.status))
		return (BPF_CORE_READ(task, thread_info.status) & 0x0002) != 0;
	return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* argument readers: each appends one blob at *off and returns 0, or -1 when out of room */

static __always_inline struct gen_arg *blob(struct gen_heap *h, __u32 off)
{
	BOUND(off, REC_OFF_MASK);
	return (struct gen_arg *)&h->buf[off];
}

static __always_inline struct file *fd_file(struct task_struct *task, __s64 fd)
{
	struct files_struct *files = BPF_CORE_READ(task, files);
	struct fdtable *fdt = BPF_CORE_READ(files, fdt);
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	struct file **fda = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;

	if (fd < 0 || fd >= max)
		return NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fda[fd]);
	return f;
}

/* path of (dentry, mnt) into the payload at off + sizeof(gen_path); returns payload length */
static __always_inline __u32 put_path(struct gen_heap *h, __u32 poff, const struct path *p, __u32 *aflags)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	struct path_buf *pb;
	__u32 zero = 0, wflags = 0;
	int pos;

	pb = bpf_map_lookup_elem(&tg_path_heap, &zero);
	if (!pb || !fs)
		return 0;
	pos = walk_path(p, &fs->root, &wflags);
	if (wflags)
		*aflags |= GEN_AF_TRUNC;
	__u32 len = (__u32)(PATH_BUF_SIZE - 1 - pos);
	if (len == 0) {
		pb->data[PATH_BUF_SIZE - 2] = '/';
		pos = PATH_BUF_SIZE - 2;
		len = 1;
	}
	BOUND(len, 0xfff);
	BOUND(poff, REC_OFF_MASK);
	if (bpf_probe_read_kernel(&h->buf[poff], len, &pb->data[pos & (PATH_BUF_SIZE - 1)]))
		return 0;
	return len;
}

static __always_inline __u32 put_file(struct gen_heap *h, __u32 off, struct file *f, __u32 *aflags)
{
	struct gen_path *gp = (struct gen_path *)&h->buf[(off + sizeof(struct gen_arg)) & REC_OFF_MASK];
	struct path fp;

	gp->i_mode = 0;
	gp->f_flags = 0;
	if (!f) {
		*aflags |= GEN_AF_ERR;
		return sizeof(struct gen_path);
	}
	gp->i_mode = BPF_CORE_READ(f, f_inode, i_mode);
	gp->f_flags = BPF_CORE_READ(f, f_flags);
	bpf_core_read(&fp, sizeof(fp), &f->f_path);
	return sizeof(struct gen_path) +
	       put_path(h, off + sizeof(struct gen_arg) + sizeof(struct gen_path), &fp, aflags);
}

static __always_inline __u32 put_sock(struct gen_heap *h, __u32 off, struct sock *sk, __u32 *aflags)
{
	struct gen_sock *gs = (struct gen_sock *)&h->buf[(off + sizeof(struct gen_arg)) & REC_OFF_MASK];

	__builtin_memset(gs, 0, sizeof(*gs));
	if (!sk) {
		*aflags |= GEN_AF_ERR;
		return sizeof(*gs);
	}
	gs->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	gs->type = BPF_CORE_READ(sk, sk_type);
	gs->protocol = BPF_CORE_READ(sk, sk_protocol);
	gs->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	gs->mark = BPF_CORE_READ(sk, sk_mark);
	gs->priority = BPF_CORE_READ(sk, sk_priority);
	gs->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	gs->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	gs->cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	if (gs->family == 10 /* AF_INET6 */) {
		BPF_CORE_READ_INTO(&gs->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&gs->daddr, sk, __sk_common.skc_v6_daddr);
	} else {
		BPF_CORE_READ_INTO((__u32 *)gs->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)gs->daddr, sk, __sk_common.skc_daddr);
	}
	return sizeof(*gs);
}

static __always_inline __u32 put_cred(struct gen_heap *h, __u32 off, const struct cred *c, __u32 *aflags)
{
	struct gen_cred *gc = (struct gen_cred *)&h->buf[(off + sizeof(struct gen_arg)) & REC_OFF_MASK];

	__builtin_memset(gc, 0, sizeof(*gc));
	if (!c) {
		*aflags |= GEN_AF_ERR;
		return sizeof(*gc);
	}
	gc->uid = BPF_CORE_READ(c, uid.val);
	gc->gid = BPF_CORE_READ(c, gid.val);
	gc->euid = BPF_CORE_READ(c, euid.val);
	gc->egid = BPF_CORE_READ(c, egid.val);
	gc->suid = BPF_CORE_READ(c, suid.val);
	gc->sgid = BPF_CORE_READ(c, sgid.val);
	gc->fsuid = BPF_CORE_READ(c, fsuid.val);
	gc->fsgid = BPF_CORE_READ(c, fsgid.val);
	gc->securebits = BPF_CORE_READ(c, securebits);
	bpf_core_read(&gc->cap_permitted, 8, &c->cap_permitted);
	bpf_core_read(&gc->cap_effective, 8, &c->cap_effective);
	bpf_core_read(&gc->cap_inheritable, 8, &c->cap_inheritable);
	struct user_namespace *uns = BPF_CORE_READ(c, user_ns);
	gc->userns_level = BPF_CORE_READ(uns, level);
	gc->userns_uid = BPF_CORE_READ(uns, owner.val);
	gc->userns_gid = BPF_CORE_READ(uns, group.val);
	gc->userns_inum = BPF_CORE_READ(uns, ns.inum);
	return sizeof(*gc);
}

/* user path string, absolute: a relative one is joined to its directory fd's path or the cwd */
static __always_inline __u32 put_filename(struct gen_heap *h, __u32 off, const char *upath, __s64 dirfd,
					  __u32 *aflags)
{
	__u32 poff = off + sizeof(struct gen_arg) + sizeof(struct gen_path);
	struct gen_path *gp = (struct gen_path *)&h->buf[(off + sizeof(struct gen_arg)) & REC_OFF_MASK];
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	char first = 0;
	__u32 base = 0;
	long n;

	gp->i_mode = 0;
	gp->f_flags = 0;
	if (bpf_probe_read_user(&first, 1, upath)) {
		*aflags |= GEN_AF_ERR;
		return sizeof(struct gen_path);
	}
	if (first != '/') {
		struct path dir;
		if (dirfd == -100 /* AT_FDCWD */) {
			struct fs_struct *fs = BPF_CORE_READ(task, fs);
			bpf_core_read(&dir, sizeof(dir), &fs->pwd);
		} else {
			struct file *f = fd_file(task, dirfd);
			if (!f) {
				*aflags |= GEN_AF_ERR;
				return sizeof(struct gen_path);
			}
			bpf_core_read(&dir, sizeof(dir), &f->f_path);
		}
		base = put_path(h, poff, &dir, aflags);
		if (base == 1) /* "/" */
			base = 0;
		char second = 0;
		bpf_probe_read_user(&second, 1, upath + 1);
		if (first == '.' && second == '/')
			upath += 2;
		else if (first == '.' && second == 0)
			upath += 1;
		__u32 at = poff + base;
		BOUND(at, REC_OFF_MASK);
		h->buf[at] = '/';
		base += 1;
	}
	__u32 at = poff + base;
	BOUND(at, REC_OFF_MASK);
	n = bpf_probe_read_user_str(&h->buf[at], GEN_STRING_MAX, upath);
	if (n <= 0) {
		*aflags |= GEN_AF_ERR;
		n = 1;
	} else if (n == GEN_STRING_MAX) {
		*aflags |= GEN_AF_TRUNC;
	}
	__u32 len = base + n - 1;
	if (n == 1 && base > 1)
		len -= 1; /* "." alone: the directory itself, no trailing '/' */
	return sizeof(struct gen_path) + len;
}

static __always_inline __u32 put_ubuf(struct gen_heap *h, __u32 off, const void *uptr, __u64 size, __u32 max,
				      __u32 *aflags)
{
	struct gen_bytes *gb = (struct gen_bytes *)&h->buf[(off + sizeof(struct gen_arg)) & REC_OFF_MASK];
	__u32 doff = off + sizeof(struct gen_arg) + sizeof(struct gen_bytes);
	__u32 n = size > max ? max : (__u32)size;

	gb->orig_size = (__s64)size < 0 ? 0 : (__u32)size;
	gb->pad = 0;
	if ((__s64)size <= 0)
		return sizeof(*gb);
	BOUND(n, 0x7fff);
	BOUND(doff, REC_OFF_MASK);
	if (n && bpf_probe_read_user(&h->buf[doff], n, uptr)) {
		*aflags |= GEN_AF_ERR;
		return sizeof(*gb);
	}
	return sizeof(*gb) + n;
}

#define IOVEC_MAX 8
static __always_inline __u32 put_iovec(struct gen_heap *h, __u32 off, const struct iovec *uiov, __u64 cnt,
				       __u32 max, __u32 *aflags)
{
	struct gen_bytes *gb = (struct gen_bytes *)&h->buf[(off + sizeof(struct gen_arg)) & REC_OFF_MASK];
	__u32 doff = off + sizeof(struct gen_arg) + sizeof(struct gen_bytes);
	__u32 got = 0;
	__u64 total = 0;

	for (int i = 0; i < IOVEC_MAX; i++) {
		struct iovec iov;
		if (i >= cnt)
			break;
		if (bpf_probe_read_user(&iov, sizeof(iov), &uiov[i])) {
			*aflags |= GEN_AF_ERR;
			break;
		}
		total += iov.iov_len;
		__u32 room = max - got;
		__u32 n = iov.iov_len > room ? room : iov.iov_len;
		if (got >= max)
			continue;
		__u32 at = doff + got;
		BOUND(at, REC_OFF_MASK);
		BOUND(n, 0x7fff);
		if (n && bpf_probe_read_user(&h->buf[at], n, iov.iov_base) == 0)
			got += n;
	}
	gb->orig_size = total > 0xffffffff ? 0xffffffff : (__u32)total;
	gb->pad = 0;
	return sizeof(*gb) + got;
}

static __always_inline __u32 put_sockaddr(struct gen_heap *h, __u32 off, const void *uaddr, __u32 *aflags)
{
	struct gen_sockaddr *sa = (struct gen_sockaddr *)&h->buf[(off + sizeof(struct gen_arg)) & REC_OFF_MASK];
	struct {
		__u16 family;
		__u16 port;
		__u32 v4_or_flow;
		__u8 v6[16];
	} raw = {};

	__builtin_memset(sa, 0, sizeof(*sa));
	if (!uaddr || bpf_probe_read_user(&raw, sizeof(raw), uaddr)) {
		/* a short AF_INET sockaddr at the end of a page: try its 8 meaningful bytes */
		if (!uaddr || bpf_probe_read_user(&raw, 8, uaddr)) {
			*aflags |= GEN_AF_ERR;
			return sizeof(*sa);
		}
	}
	sa->family = raw.family;
	if (raw.family == 2 /* AF_INET */) {
		sa->port = bpf_ntohs(raw.port);
		__builtin_memcpy(sa->addr, &raw.v4_or_flow, 4);
	} else if (raw.family == 10 /* AF_INET6 */) {
		sa->port = bpf_ntohs(raw.port);
		__builtin_memcpy(sa->addr, raw.v6, 16);
	}
	return sizeof(*sa);
}

/* Read argument i into a blob at *off. */
static __noinline int read_arg(void *ctx, struct gen_heap *h, __u32 i, __u32 *off)
{
	__u32 o = *off;
	__u32 aflags = 0, len = 0;
	__u8 kind = GEN_KIND_INT;
	__u64 v = h->val[i];
	__u32 r = cfg.args[i].reader;
	long n;

	if (o > REC_OFF_MASK)
		return -1;
	__u32 poff = o + sizeof(struct gen_arg);
	BOUND(poff, 0xffff);

	if (r == RD_INT || r == RD_SYSCALL64) {
		if (r == RD_SYSCALL64 && task_is_compat(cur_task()))
			v |= 1ULL << 31;
		*(__u64 *)&h->buf[poff & REC_OFF_MASK] = v;
		len = 8;
	} else if (r == RD_USTR || r == RD_KSTR || r == RD_DATALOC) {
		kind = GEN_KIND_STR;
		BOUND(poff, REC_OFF_MASK);
		if (r == RD_USTR) {
			n = bpf_probe_read_user_str(&h->buf[poff], GEN_STRING_MAX, (void *)v);
		} else if (r == RD_KSTR) {
			n = bpf_probe_read_kernel_str(&h->buf[poff], GEN_STRING_MAX, (void *)v);
		} else {
			__u32 loc = (__u32)v;
			n = bpf_probe_read_kernel_str(&h->buf[poff], GEN_STRING_MAX, (char *)ctx + (loc & 0xffff));
		}
		if (n <= 0) {
			aflags |= GEN_AF_ERR;
			n = 1;
		} else if (n == GEN_STRING_MAX) {
			aflags |= GEN_AF_TRUNC;
		}
		len = n - 1;
	} else if (r == RD_FILENAME) {
		kind = GEN_KIND_PATH;
		__s64 dirfd = -100;
		if (cfg.args[i].has_dirfd)
			dirfd = (__s32)raw_at(ctx, cfg.args[i].dirfd_off, 8, 1);
		len = put_filename(h, o, (const char *)v, dirfd, &aflags);
	} else if (r == RD_FD || r == RD_FILE || r == RD_BINPRM) {
		kind = GEN_KIND_PATH;
		struct file *f;
		if (r == RD_FD)
			f = fd_file(cur_task(), (__s32)v);
		else if (r == RD_FILE)
			f = (struct file *)v;
		else
			f = BPF_CORE_READ((struct linux_binprm *)v, file);
		len = put_file(h, o, f, &aflags);
	} else if (r == RD_PATH) {
		kind = GEN_KIND_PATH;
		struct gen_path *gp = (struct gen_path *)&h->buf[poff & REC_OFF_MASK];
		struct path p;
		bpf_probe_read_kernel(&p, sizeof(p), (void *)v);
		gp->i_mode = BPF_CORE_READ(p.dentry, d_inode, i_mode);
		gp->f_flags = 0;
		len = sizeof(*gp) + put_path(h, poff + sizeof(*gp), &p, &aflags);
	} else if (r == RD_UBUF) {
		kind = GEN_KIND_BYTES;
		__u64 size = cfg.args[i].max_data;
		if (cfg.args[i].has_size)
			size = raw_at(ctx, cfg.args[i].size_off, 8, 0);
		len = put_ubuf(h, o, (const void *)v, size, cfg.args[i].max_data, &aflags);
	} else if (r == RD_IOVEC) {
		kind = GEN_KIND_BYTES;
		__u64 cnt = cfg.args[i].has_size ? raw_at(ctx, cfg.args[i].size_off, 8, 0) : 1;
		len = put_iovec(h, o, (const struct iovec *)v, cnt, cfg.args[i].max_data, &aflags);
	} else if (r == RD_SOCK_FD || r == RD_SOCK) {
		kind = GEN_KIND_SOCK;
		struct sock *sk = NULL;
		if (r == RD_SOCK) {
			sk = (struct sock *)v;
		} else {
			struct file *f = fd_file(cur_task(), (__s32)v);
			umode_t mode = f ? BPF_CORE_READ(f, f_inode, i_mode) : 0;
			if ((mode & 0170000) == 0140000 /* S_IFSOCK */) {
				struct socket *so = BPF_CORE_READ(f, private_data);
				sk = BPF_CORE_READ(so, sk);
			}
		}
		len = put_sock(h, o, sk, &aflags);
	} else if (r == RD_USOCKADDR) {
		kind = GEN_KIND_SOCKADDR;
		len = put_sockaddr(h, o, (const void *)v, &aflags);
	} else if (r == RD_CRED || r == RD_CUR_CRED) {
		kind = GEN_KIND_CRED;
		const struct cred *c = r == RD_CRED ? (const struct cred *)v : BPF_CORE_READ(cur_task(), cred);
		len = put_cred(h, o, c, &aflags);
	} else {
		return 0; /* unused slot */
	}

	struct gen_arg *a = blob(h, o);
	a->kind = kind;
	a->flags = aflags;
	a->index = i;
	a->pad = 0;
	a->len = len;
	h->aoff[i] = poff;
	h->alen[i] = len;
	h->akind[i] = kind;
	*off = o + sizeof(struct gen_arg) + len;
	return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* selectors */

/* one string value j of match m against (p, plen); size 0 never reaches bpf_strncmp */
#define STR_MATCH(p, plen, m, j)                                                                        \
	({                                                                                            \
		int __ok = 0;                                                                          \
		__u32 __vl = (m)->len[j];                                                              \
		__u32 __sz = __vl;                                                                     \
		__u32 __op = (m)->op;                                                                  \
		BOUND(__sz, 0x1ff);                                                                    \
		if (__op == OP_EQ || __op == OP_NEQ || __op == OP_IN || __op == OP_NOTIN) {            \
			if (__sz == 0)                                                                 \
				__ok = (plen) == 0;                                                    \
			else                                                                           \
				__ok = (plen) == __vl &&                                               \
				       bpf_strncmp((p), __sz, (const char *)(m)->str[j]) == 0;         \
		} else if (__sz == 0) {                                                                \
			__ok = 1;                                                                      \
		} else if (__op == OP_PREFIX || __op == OP_NOTPREFIX) {                                \
			__ok = (plen) >= __vl && bpf_strncmp((p), __sz, (const char *)(m)->str[j]) == 0; \
		} else {                                                                               \
			__u32 __at = (plen) - __vl;                                                    \
			BOUND(__at, 0xfff);                                                            \
			__ok = (plen) >= __vl &&                                                       \
			       bpf_strncmp((p) + __at, __sz, (const char *)(m)->str[j]) == 0;          \
		}                                                                                      \
		__ok;                                                                                  \
	})

static __always_inline int negated(__u32 op)
{
	return op == OP_NEQ || op == OP_NOTIN || op == OP_NOTPREFIX || op == OP_NOTPOSTFIX || op == OP_NOTINMAP ||
	       op == OP_NOTSADDR || op == OP_NOTDADDR || op == OP_NOTSPORT || op == OP_NOTDPORT ||
	       op == OP_NOTSPORTPRIV || op == OP_NOTDPORTPRIV || op == OP_NOTINRANGE;
}

static __always_inline int match_int(const volatile struct gen_match *m, __u64 v)
{
	__u32 op = m->op;
	int any = 0;

	if (op == OP_INMAP || op == OP_NOTINMAP) {
		struct inmap_key k = {.map_id = m->map_id, .value = v};
		any = bpf_map_lookup_elem(&gen_inmap, &k) != NULL;
		return op == OP_INMAP ? any : !any;
	}
	if (op == OP_GT)
		return m->cmp == CMP_INT ? (__s64)v > (__s64)m->lo[0] : v > m->lo[0];
	if (op == OP_LT)
		return m->cmp == CMP_INT ? (__s64)v < (__s64)m->lo[0] : v < m->lo[0];
	for (int j = 0; j < GEN_MAX_VALUES; j++) {
		if (j >= m->nvals)
			break;
		if (op == OP_MASK)
			any |= (v & m->lo[j]) != 0;
		else if (op == OP_INRANGE || op == OP_NOTINRANGE)
			any |= m->cmp == CMP_INT ? ((__s64)v >= (__s64)m->lo[j] && (__s64)v <= (__s64)m->hi[j])
						 : (v >= m->lo[j] && v <= m->hi[j]);
		else
			any |= v == m->lo[j];
	}
	return negated(op) ? !any : any;
}

static __always_inline int match_str(const volatile struct gen_match *m, const char *p, __u32 plen)
{
	int any = 0;

#pragma unroll
	for (int j = 0; j < GEN_MAX_VALUES; j++) {
		if (j >= m->nvals)
			break;
		if (STR_MATCH(p, plen, m, j)) {
			any = 1;
			break;
		}
	}
	return negated(m->op) ? !any : any;
}

static __always_inline int cidr_match(const volatile struct gen_match *m, int j, const __u8 *addr, int v6)
{
	__u32 bits = m->len[j];
	if (!v6) {
		if (m->fam[j] != 4)
			return 0;
		__u32 a = bpf_ntohl(*(__u32 *)addr);
		__u32 mask = bits >= 32 ? 0xffffffff : (bits == 0 ? 0 : ~((1U << (32 - bits)) - 1));
		return (a & mask) == ((__u32)m->lo[j] & mask);
	}
	if (m->fam[j] != 6)
		return 0;
	__u64 hi = __builtin_bswap64(*(__u64 *)addr);
	__u64 lo = __builtin_bswap64(*(__u64 *)(addr + 8));
	__u64 m1 = bits >= 64 ? ~0ULL : (bits == 0 ? 0 : ~((1ULL << (64 - bits)) - 1));
	__u32 b2 = bits > 64 ? bits - 64 : 0;
	__u64 m2 = b2 >= 64 ? ~0ULL : (b2 == 0 ? 0 : ~((1ULL << (64 - b2)) - 1));
	return (hi & m1) == (m->lo[j] & m1) && (lo & m2) == (m->hi[j] & m2);
}

static __always_inline int match_net(const volatile struct gen_match *m, const char *p)
{
	__u32 op = m->op;
	__u16 family, sport, dport, proto = 0, state = 0;
	const __u8 *saddr, *daddr;
	int any = 0;

	if (m->cmp == CMP_SOCK) {
		const struct gen_sock *s = (const struct gen_sock *)p;
		family = s->family;
		sport = s->sport;
		dport = s->dport;
		proto = s->protocol;
		state = s->state;
		saddr = s->saddr;
		daddr = s->daddr;
	} else {
		const struct gen_sockaddr *s = (const struct gen_sockaddr *)p;
		family = s->family;
		sport = dport = s->port;
		saddr = daddr = s->addr;
	}
	int v6 = family == 10;
	if (op == OP_SPORTPRIV || op == OP_NOTSPORTPRIV)
		any = sport < 1024;
	else if (op == OP_DPORTPRIV || op == OP_NOTDPORTPRIV)
		any = dport < 1024;
	else {
		for (int j = 0; j < GEN_MAX_VALUES; j++) {
			if (j >= m->nvals)
				break;
			if (op == OP_SADDR || op == OP_NOTSADDR)
				any |= (family == 2 || family == 10) && cidr_match(m, j, saddr, v6);
			else if (op == OP_DADDR || op == OP_NOTDADDR)
				any |= (family == 2 || family == 10) && cidr_match(m, j, daddr, v6);
			else if (op == OP_SPORT || op == OP_NOTSPORT)
				any |= sport >= m->lo[j] && sport <= m->hi[j];
			else if (op == OP_DPORT || op == OP_NOTDPORT)
				any |= dport >= m->lo[j] && dport <= m->hi[j];
			else if (op == OP_FAMILY)
				any |= family == m->lo[j];
			else if (op == OP_PROTOCOL)
				any |= proto == m->lo[j];
			else if (op == OP_STATE)
				any |= state == m->lo[j];
		}
	}
	return negated(op) ? !any : any;
}

static __always_inline int match_one(const volatile struct gen_match *m, struct gen_heap *h, __s64 ret)
{
	__u32 a = m->arg;

	if (a == GEN_MATCH_RET)
		return match_int(m, (__u64)ret);
	BOUND(a, 7);
	if (a >= GEN_ARGS_MAX)
		return 0;
	if (m->cmp == CMP_INT || m->cmp == CMP_UINT) {
		__u64 v = h->val[a];
		if (h->akind[a] == GEN_KIND_INT) /* syscall64 may carry the compat bit */
			v = *(__u64 *)&h->buf[h->aoff[a] & REC_OFF_MASK];
		return match_int(m, v);
	}
	__u32 off = h->aoff[a];
	__u32 len = h->alen[a];
	if (m->cmp == CMP_STR) {
		if (h->akind[a] == GEN_KIND_PATH) {
			off += sizeof(struct gen_path);
			len -= sizeof(struct gen_path);
		} else if (h->akind[a] == GEN_KIND_BYTES) {
			off += sizeof(struct gen_bytes);
			len -= sizeof(struct gen_bytes);
		}
		if (len > GEN_STRING_MAX)
			len = GEN_STRING_MAX;
		BOUND(off, REC_OFF_MASK);
		return match_str(m, &h->buf[off], len);
	}
	BOUND(off, REC_OFF_MASK);
	return match_net(m, &h->buf[off]);
}

static __always_inline int pid_in(const volatile struct gen_match_pid *m, __u32 pid)
{
	int any = 0;
	for (int j = 0; j < GEN_MAX_PIDVALS; j++) {
		if (j >= m->nvals)
			break;
		any |= pid == m->vals[j];
	}
	return any;
}

#define BIN_SCRATCH 65536 /* binary paths are compared from here in gen_heap.buf */
static __always_inline int bin_match_one(const volatile struct gen_match_bin *m, struct gen_proc *p,
					 struct gen_heap *h)
{
	__u32 blen;
	const char *b = &h->buf[BIN_SCRATCH];

	if (!p)
		return 0;
	blen = p->bin_len;
	if (blen >= GEN_BIN_LEN)
		blen = GEN_BIN_LEN - 1;
	bpf_probe_read_kernel(&h->buf[BIN_SCRATCH], GEN_BIN_LEN, p->bin);
#pragma unroll
	for (int j = 0; j < GEN_MAX_BINVALS; j++) {
		if (j >= m->nvals)
			break;
		if (STR_MATCH(b, blen, m, j))
			return 1;
	}
	return 0;
}

static __always_inline int match_bin(const volatile struct gen_match_bin *m, struct gen_proc *p, struct gen_heap *h)
{
	int any = bin_match_one(m, p, h);

	if (!any && (m->flags & PF_FOLLOW) && p) {
		__u32 up = p->ppid;
		for (int d = 0; d < GEN_ANCESTOR_DEPTH; d++) {
			struct gen_proc *a;
			if (up == 0)
				break;
			a = bpf_map_lookup_elem(&tg_execve_map, &up);
			if (!a)
				break;
			if (bin_match_one(m, a, h)) {
				any = 1;
				break;
			}
			up = a->ppid;
		}
	}
	return negated(m->op) ? !any : any;
}

static __always_inline __u32 ns_inum(struct task_struct *task, __u32 slot)
{
	struct nsproxy *nsp = BPF_CORE_READ(task, nsproxy);
	switch (slot) {
	case NS_UTS:
		return BPF_CORE_READ(nsp, uts_ns, ns.inum);
	case NS_IPC:
		return BPF_CORE_READ(nsp, ipc_ns, ns.inum);
	case NS_MNT:
		return BPF_CORE_READ(nsp, mnt_ns, ns.inum);
	case NS_PID: {
		struct pid *tp = BPF_CORE_READ(task, thread_pid);
		unsigned int level = BPF_CORE_READ(tp, level);
		return BPF_CORE_READ(tp, numbers[level & 31].ns, ns.inum);
	}
	case NS_PID_FOR_CHILDREN:
		return BPF_CORE_READ(nsp, pid_ns_for_children, ns.inum);
	case NS_NET:
		return BPF_CORE_READ(nsp, net_ns, ns.inum);
	case NS_TIME:
		return bpf_core_field_exists(nsp->time_ns) ? BPF_CORE_READ(nsp, time_ns, ns.inum) : 0;
	case NS_TIME_FOR_CHILDREN:
		return bpf_core_field_exists(nsp->time_ns_for_children) ? BPF_CORE_READ(nsp, time_ns_for_children, ns.inum)
									 : 0;
	case NS_CGROUP:
		return BPF_CORE_READ(nsp, cgroup_ns, ns.inum);
	default:
		return BPF_CORE_READ(task, cred, user_ns, ns.inum);
	}
}

static __always_inline __u64 task_caps(struct task_struct *task, __u32 type)
{
	const struct cred *c = BPF_CORE_READ(task, cred);
	__u64 v = 0;
	if (type == 0)
		bpf_core_read(&v, 8, &c->cap_effective);
	else if (type == 1)
		bpf_core_read(&v, 8, &c->cap_inheritable);
	else
		bpf_core_read(&v, 8, &c->cap_permitted);
	return v;
}

/* Everything of selector s that does not need the arguments. */
static __noinline int match_process(__u32 s, struct task_struct *task, __u32 tgid, struct gen_proc *p,
					 struct gen_heap *h)
{
	const volatile struct gen_selector *sel = &cfg.sel[s];

	for (int k = 0; k < GEN_MAX_PIDS; k++) {
		if (k >= sel->npids)
			break;
		const volatile struct gen_match_pid *m = &sel->pids[k];
		int any;
		if (m->flags & PF_NSPID) {
			struct pid *tp = BPF_CORE_READ(task, thread_pid);
			unsigned int level = BPF_CORE_READ(tp, level);
			/* the group leader's number in its own namespace */
			struct task_struct *leader = BPF_CORE_READ(task, group_leader);
			struct pid *lp = BPF_CORE_READ(leader, thread_pid);
			__u32 nspid = BPF_CORE_READ(lp, numbers[level & 31].nr);
			any = pid_in(m, nspid);
			if (!any && (m->flags & PF_FOLLOW) && p && p->exec_pid != tgid)
				any = pid_in(m, p->exec_nspid);
		} else {
			any = pid_in(m, tgid);
			if (!any && (m->flags & PF_FOLLOW) && p)
				any = pid_in(m, p->exec_pid);
		}
		if (m->op == OP_NOTIN ? any : !any)
			return 0;
	}
	if (sel->has_bin && !match_bin(&sel->bin, p, h))
		return 0;
	for (int k = 0; k < GEN_MAX_NS; k++) {
		if (k >= sel->nns)
			break;
		const volatile struct gen_match_ns *m = &sel->ns[k];
		__u32 inum = ns_inum(task, m->ns);
		int any = 0;
		for (int j = 0; j < GEN_MAX_NSVALS; j++) {
			if (j >= m->nvals)
				break;
			any |= inum == m->vals[j];
		}
		if (m->op == OP_NOTIN ? any : !any)
			return 0;
	}
	for (int k = 0; k < GEN_MAX_CAPS; k++) {
		if (k >= sel->ncaps)
			break;
		const volatile struct gen_match_caps *m = &sel->caps[k];
		if (m->isns && BPF_CORE_READ(task, cred, user_ns, level) == 0)
			return 0;
		int any = (task_caps(task, m->type) & m->mask) != 0;
		if (m->op == OP_NOTIN ? any : !any)
			return 0;
	}
	if (sel->ns_changes_op) {
		int any = 0;
		if (p) {
			for (int n = 0; n < NS_COUNT; n++)
				if ((sel->ns_changes >> n) & 1)
					any |= ns_inum(task, n) != p->ns[n];
		}
		if (sel->ns_changes_op == OP_NOTIN ? any : !any)
			return 0;
	}
	if (sel->caps_changes_op) {
		int any = p ? ((task_caps(task, 0) ^ p->cap_effective) & sel->caps_changes) != 0 : 0;
		if (sel->caps_changes_op == OP_NOTIN ? any : !any)
			return 0;
	}
	return 1;
}

static __noinline int match_args(__u32 s, struct gen_heap *h)
{
	const volatile struct gen_selector *sel = &cfg.sel[s];

#pragma unroll
	for (int k = 0; k < GEN_MAX_MATCHARGS; k++) {
		if (k >= sel->nmatch)
			break;
		if (!match_one(&sel->match[k], h, 0))
			return 0;
	}
	return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* actions */

static __always_inline int monitor_mode(void)
{
	__u32 zero = 0;
	struct gen_policy_conf *pc = bpf_map_lookup_elem(&policy_conf, &zero);
	return pc && pc->mode == POLICY_MODE_MONITOR;
}

static __always_inline int rate_limited(__u32 s, const volatile struct gen_action *a, struct gen_heap *h)
{
	__u32 zero = 0;
	struct rl_key *k = bpf_map_lookup_elem(&gen_rl_scratch, &zero);
	__u64 now = bpf_ktime_get_ns();
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	if (!k)
		return 0;
	__builtin_memset(k, 0, sizeof(*k));
	k->sel = s;
	k->id = a->scope == RL_THREAD ? (__u32)pid_tgid : (a->scope == RL_PROCESS ? pid_tgid >> 32 : 0);
	for (int i = 0; i < GEN_ARGS_MAX; i++) {
		if (i >= cfg.nargs)
			break;
		__u32 n = h->alen[i] > RL_DATA ? RL_DATA : h->alen[i];
		BOUND(n, 0x3f);
		if (n > RL_DATA)
			n = RL_DATA;
		bpf_probe_read_kernel(k->data[i], n, &h->buf[h->aoff[i] & REC_OFF_MASK]);
	}
	__u64 *last = bpf_map_lookup_elem(&gen_ratelimit, k);
	if (last && now - *last < a->rate_limit_ns)
		return 1;
	bpf_map_update_elem(&gen_ratelimit, k, &now, BPF_ANY);
	return 0;
}

/* Runs the actions; returns 1 when the record is to be posted. */
static __noinline int do_actions(const volatile struct gen_action *acts, __u32 nacts, __u32 s, struct gen_heap *h,
				      struct msg_generic *m)
{
	int post = 1;

	for (int k = 0; k < GEN_MAX_ACTIONS; k++) {
		if (k >= nacts)
			break;
		const volatile struct gen_action *a = &acts[k];
		__u32 id = a->id;
		if (id == ACTION_NOPOST) {
			post = 0;
		} else if (id == ACTION_POST) {
			if (a->rate_limit_ns && rate_limited(s, a, h)) {
				post = 0;
				gstat(GSTAT_RATELIMITED);
			}
		} else if (id == ACTION_SIGKILL || id == ACTION_SIGNAL || id == ACTION_NOTIFYENFORCER ||
			   id == ACTION_OVERRIDE) {
			if (monitor_mode()) {
				m->flags |= GEN_F_MONITOR;
				gstat(GSTAT_MONITORED);
				continue;
			}
			if (id == ACTION_SIGKILL) {
				bpf_send_signal(9);
			} else if (id == ACTION_SIGNAL) {
				bpf_send_signal(a->arg_sig);
			} else if (id == ACTION_NOTIFYENFORCER) {
				__u64 key = bpf_get_current_pid_tgid();
				struct enforcer_note note = {.sig = a->arg_sig, .error = a->arg_error};
				bpf_map_update_elem(&tg_enforcer, &key, &note, BPF_ANY);
			} else {
				continue; /* Override: refused by the agent in enforce mode on this kernel */
			}
			m->flags |= GEN_F_ENFORCED;
			gstat(GSTAT_ENFORCED);
		}
	}
	return post;
}

static __always_inline void submit(struct gen_heap *h, __u32 size)
{
	if (size > GEN_RECORD_MAX)
		size = GEN_RECORD_MAX;
	BOUND(size, 0x1ffff);
	if (size > GEN_RECORD_MAX)
		return;
	__u64 avail = bpf_ringbuf_query(&tg_rb_events, BPF_RB_AVAIL_DATA);
	__u64 flags = BPF_RB_NO_WAKEUP;
	if (avail < tg_wakeup_bytes && avail + size >= tg_wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	if (bpf_ringbuf_output(&tg_rb_events, h->buf, size, flags) == 0) {
		tg_count(STAT_GENERIC_SENT);
		gstat(GSTAT_POSTED);
	} else {
		tg_count(STAT_GENERIC_LOST);
		gstat(GSTAT_LOST);
	}
}

/* ------------------------------------------------------------------------------------------ */

/* Argument i into the record at *off (integers inline, the rest through read_arg). */
static __always_inline void emit_arg(void *ctx, struct gen_heap *h, __u32 i, __u32 *off, struct msg_generic *m)
{
	h->alen[i] = 0;
	h->aoff[i] = 0;
	h->akind[i] = 0;
	if (cfg.args[i].return_copy)
		return;
	if (cfg.args[i].reader == RD_INT) {
		/* integers, the most common argument, without a call: the blob read_arg would write */
		__u32 o = *off;
		if (o > REC_OFF_MASK)
			return;
		struct gen_arg *a = blob(h, o);
		__u32 poff = o + sizeof(struct gen_arg);
		a->kind = GEN_KIND_INT;
		a->flags = 0;
		a->index = i;
		a->pad = 0;
		a->len = 8;
		*(__u64 *)&h->buf[poff & REC_OFF_MASK] = h->val[i];
		h->aoff[i] = poff;
		h->alen[i] = 8;
		h->akind[i] = GEN_KIND_INT;
		*off = poff + 8;
		m->nargs++;
		return;
	}
	if (read_arg(ctx, h, i, off) > 0)
		m->nargs++;
}

static __always_inline int gen_entry(void *ctx)
{
	__u64 pid_tgid;
	__u32 tgid;
	__u32 mask = 0, off, matched = 255;
	struct gen_proc *p = NULL;
	struct gen_heap *h;
	struct msg_generic *m;

	/* GSTAT_CALLS is not counted here (a map update per call): the agent sums the outcomes */
	h = heap();
	if (!h)
		return 0;
	/* syscall-list hooks on raw_syscalls: the syscall id (offset 8) must be in the list */
	if (cfg.syscall == 2) {
		__u64 id = tp_value(ctx, 8, 8, 1);
		if (task_is_compat(cur_task()))
			id |= 1ULL << 31;
		struct inmap_key k = {.map_id = 0, .value = id};
		if (!bpf_map_lookup_elem(&gen_inmap, &k))
			return 0;
	}
	if (cfg.nselectors) {
		mask = (1U << cfg.nselectors) - 1;
		/* selectors of matchArgs alone need neither the exec entry nor a call per selector */
		if (cfg.proc_sel) {
			pid_tgid = bpf_get_current_pid_tgid();
			tgid = pid_tgid >> 32;
			p = bpf_map_lookup_elem(&tg_execve_map, &tgid);
#pragma unroll
			for (int s = 0; s < GEN_MAX_SELECTORS; s++) {
				if (s >= cfg.nselectors)
					break;
				if ((cfg.proc_sel & (1 << s)) && !match_process(s, cur_task(), tgid, p, h))
					mask &= ~(1U << s);
			}
		}
		if (!mask) {
			h->filtered++;
			return 0;
		}
	}

	m = (struct msg_generic *)h->buf;
	m->nargs = 0; /* the rest of the header is filled once a selector matched */
	m->action = 0;
	m->flags = 0;
	off = sizeof(*m);

	/*
	 * Arguments the selectors compare are read first, and only they: a call that no selector
	 * matches costs the reads its matchArgs need, nothing more.
	 */
	__u32 sel_args = cfg.sel_args;
#pragma unroll
	for (int i = 0; i < GEN_ARGS_MAX; i++) {
		if (i >= cfg.nargs)
			break;
		if (sel_args & (1U << i)) {
			h->val[i] = raw_value(ctx, i);
			emit_arg(ctx, h, i, &off, m);
		}
	}

	int post = 1;
	if (cfg.nselectors) {
#pragma unroll
		for (int s = 0; s < GEN_MAX_SELECTORS; s++) {
			if (s >= cfg.nselectors)
				break;
			if (!(mask & (1 << s)))
				continue;
			if (match_args(s, h)) {
				matched = s;
				if (cfg.sel[s].nactions)
					m->action = cfg.sel[s].actions[0].id;
				/* enforcement happens now, before the call completes, even for return hooks */
				post = do_actions(cfg.sel[s].actions, cfg.sel[s].nactions, s, h, m);
				break;
			}
		}
		if (matched == 255) {
			h->filtered++;
			return 0;
		}
	}
	if (!post) {
		gstat(GSTAT_NOPOST);
		return 0;
	}
#pragma unroll
	for (int i = 0; i < GEN_ARGS_MAX; i++) {
		if (i >= cfg.nargs)
			break;
		if (!(sel_args & (1U << i))) {
			h->val[i] = raw_value(ctx, i);
			emit_arg(ctx, h, i, &off, m);
		}
	}

	pid_tgid = bpf_get_current_pid_tgid();
	tgid = pid_tgid >> 32;
	m->common.flags = 0;
	m->common.pad[0] = 0;
	m->common.pad[1] = 0;
	m->return_action = 0;
	m->pad = 0;
	m->func_id = 0;
	m->ret = 0;
	m->common.op = cfg.op;
	m->common.ktime = bpf_ktime_get_boot_ns();
	m->pid = tgid;
	m->tid = (__u32)pid_tgid;
	m->policy_id = cfg.policy_id;
	m->hook_id = cfg.hook_id;
	m->selector = matched;
	if (cfg.syscall == 2)
		m->func_id = (__u32)tp_value(ctx, 8, 8, 1) | (task_is_compat(cur_task()) ? 1U << 31 : 0);
	if (cfg.syscall && task_is_compat(cur_task()))
		m->flags |= GEN_F_COMPAT;
	m->common.size = off;

	if (cfg.has_return) {
		struct gen_stash *st = (struct gen_stash *)&h->buf[32768]; /* scratch past any blob start */
		if (off > STASH_MAX) {
			gstat(GSTAT_LOST);
			return 0;
		}
		/* build the stash in place: the record is copied into the map value */
		struct gen_stash *slot;
		bpf_map_update_elem(&gen_stash, &pid_tgid, st, BPF_ANY);
		slot = bpf_map_lookup_elem(&gen_stash, &pid_tgid);
		if (!slot)
			return 0;
		slot->size = off;
		slot->sel = matched;
		for (int i = 0; i < GEN_ARGS_MAX; i++)
			slot->uptr[i] = i < cfg.nargs ? h->val[i] : 0;
		__u32 n = off;
		BOUND(n, 0x3fff);
		bpf_probe_read_kernel(slot->data, n, h->buf);
		return 0;
	}
	submit(h, off);
	return 0;
}

static __always_inline int gen_return(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct gen_stash *st = bpf_map_lookup_elem(&gen_stash, &pid_tgid);
	struct gen_heap *h;

	if (!st)
		return 0;
	h = heap();
	if (!h) {
		bpf_map_delete_elem(&gen_stash, &pid_tgid);
		return 0;
	}
	__u32 size = st->size;
	__u32 s = st->sel;
	BOUND(size, 0x3fff);
	bpf_probe_read_kernel(h->buf, size, st->data);
	for (int i = 0; i < GEN_ARGS_MAX; i++)
		h->val[i] = st->uptr[i];
	bpf_map_delete_elem(&gen_stash, &pid_tgid);

	struct msg_generic *m = (struct msg_generic *)h->buf;
	__s64 ret = (__s64)tp_value(ctx, 16, 8, 1);
	__u32 off = size;

	m->ret = ret;
	m->flags |= GEN_F_RETURN;
	/* returnCopy buffers: read now, as many bytes as the call returned */
#pragma unroll
	for (int i = 0; i < GEN_ARGS_MAX; i++) {
		if (i >= cfg.nargs)
			break;
		if (!cfg.args[i].return_copy)
			continue;
		__u32 aflags = 0;
		if (off > REC_OFF_MASK)
			break;
		__u32 len = put_ubuf(h, off, (const void *)h->val[i], ret < 0 ? 0 : ret, cfg.args[i].max_data, &aflags);
		struct gen_arg *a = blob(h, off);
		a->kind = GEN_KIND_BYTES;
		a->flags = aflags;
		a->index = i;
		a->pad = 0;
		a->len = len;
		off += sizeof(struct gen_arg) + len;
		m->nargs++;
	}

	int post = 1;
#pragma unroll
	for (int k = 0; k < GEN_MAX_SELECTORS; k++) {
		if (k >= cfg.nselectors)
			break;
		if (k != s)
			continue;
		if (cfg.sel[k].has_ret && !match_one(&cfg.sel[k].match[GEN_MAX_MATCHARGS], h, ret)) {
			gstat(GSTAT_FILTERED);
			return 0;
		}
		if (cfg.sel[k].nret_actions) {
			m->return_action = cfg.sel[k].ret_actions[0].id;
			post = do_actions(cfg.sel[k].ret_actions, cfg.sel[k].nret_actions, k, h, m);
		}
	}
	if (!post) {
		gstat(GSTAT_NOPOST);
		return 0;
	}
	m->common.size = off;
	submit(h, off);
	return 0;
}

SEC("tracepoint")
int gen_tp(void *ctx)
{
	return gen_entry(ctx);
}

SEC("tracepoint")
int gen_tp_ret(void *ctx)
{
	if (cfg.syscall == 2) { /* raw_syscalls/sys_exit: only the listed syscalls had an entry */
		__u64 pid_tgid = bpf_get_current_pid_tgid();
		if (!bpf_map_lookup_elem(&gen_stash, &pid_tgid))
			return 0;
	}
	return gen_return(ctx);
}

SEC("raw_tp")
int gen_rawtp(void *ctx)
{
	return gen_entry(ctx);
}

SEC("uprobe")
int gen_uprobe(struct pt_regs *ctx)
{
	return gen_entry(ctx);
}

/* raw_syscalls/sys_exit: a NotifyEnforcer note for this thread is served at a listed syscall */
SEC("tracepoint")
int gen_enforcer(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct enforcer_note *note = bpf_map_lookup_elem(&tg_enforcer, &pid_tgid);
	struct task_struct *task;

	if (!note)
		return 0;
	task = (struct task_struct *)bpf_get_current_task();
	__u64 id = tp_value(ctx, 8, 8, 1);
	if (task_is_compat(task))
		id |= 1ULL << 31;
	struct inmap_key k = {.map_id = 0, .value = id};
	if (!bpf_map_lookup_elem(&gen_inmap, &k))
		return 0;
	if (note->sig)
		bpf_send_signal(note->sig);
	bpf_map_delete_elem(&tg_enforcer, &pid_tgid);
	gstat(GSTAT_ENFORCED);
	return 0;
}
