// SPDX-License-Identifier: GPL-2.0
/*
 * Base sensor: process lifecycle from scheduler tracepoints (tp_btf), no kprobes needed.
 *   sched_process_exec -> msg_exec  (binary, args, cwd, creds, caps, namespaces, cgroup, privileges)
 *   sched_process_fork -> msg_clone (new thread groups only)
 *   sched_process_exit -> msg_exit  (last thread of a group only: signal->live == 0)
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "events.h"
#include "ringbuf.h"
#include "generic_cfg.h"
#include "execve_map.h"
#include "bound.h"

char LICENSE[] SEC("license") = "GPL";

#define S_ISUID 0004000
#define S_ISGID 0002000
#define S_IXGRP 00010

/* The process's tg_execve_map entry is built here, past anything the record can use. */
#define PROC_SCRATCH_OFF 28672

/* Scratch: the exec record is built here, then copied into the ring with its real size. */
#define EXEC_BUF_SIZE 32768
#define EXEC_DATA_OFF ((__u32)sizeof(struct msg_exec))
/* every variable offset into exec_buf goes through it */
#define BOUND_OFF(x) BOUND(x, 0x3fff) /* + at most 8 KiB written after it: fits EXEC_BUF_SIZE */
struct exec_buf {
	char data[EXEC_BUF_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_buf);
} tg_exec_heap SEC(".maps");

#include "path.h"

/*
 * tp_btf arguments are BTF pointers: plain dereferences compile to CO-RE-relocated, fault-safe
 * loads, much cheaper than one bpf_probe_read_kernel() call per field. Helpers remain where the
 * verifier needs them (variable array index, reads into buffers).
 */
static __always_inline void read_namespaces(struct task_struct *task, struct msg_exec *e)
{
	struct nsproxy *nsp = task->nsproxy;
	struct pid *tpid = task->thread_pid;
	unsigned int level = tpid->level;
	struct upid up;

	bpf_core_read(&up, sizeof(up), &tpid->numbers[level & 31]);
	e->nspid = up.nr;
	e->ns[NS_PID] = up.ns ? BPF_CORE_READ(up.ns, ns.inum) : 0;
	if (!nsp)
		return;
	e->ns[NS_UTS] = nsp->uts_ns->ns.inum;
	e->ns[NS_IPC] = nsp->ipc_ns->ns.inum;
	e->ns[NS_MNT] = nsp->mnt_ns->ns.inum;
	e->ns[NS_PID_FOR_CHILDREN] = nsp->pid_ns_for_children->ns.inum;
	e->ns[NS_NET] = nsp->net_ns->ns.inum;
	if (bpf_core_field_exists(nsp->time_ns)) {
		e->ns[NS_TIME] = nsp->time_ns->ns.inum;
		e->ns[NS_TIME_FOR_CHILDREN] = nsp->time_ns_for_children->ns.inum;
	}
	e->ns[NS_CGROUP] = nsp->cgroup_ns->ns.inum;
}

static __always_inline void read_creds(struct task_struct *task, struct msg_exec *e)
{
	const struct cred *c = task->cred;
	struct user_namespace *uns = c->user_ns;

	e->uid = c->uid.val;
	e->gid = c->gid.val;
	e->euid = c->euid.val;
	e->egid = c->egid.val;
	e->suid = c->suid.val;
	e->sgid = c->sgid.val;
	e->fsuid = c->fsuid.val;
	e->fsgid = c->fsgid.val;
	e->securebits = c->securebits;
	/* kernel_cap_t is u64 since 6.3 and u32[2] before: copy the 8 bytes either way */
	bpf_core_read(&e->cap_permitted, sizeof(__u64), &c->cap_permitted);
	bpf_core_read(&e->cap_effective, sizeof(__u64), &c->cap_effective);
	bpf_core_read(&e->cap_inheritable, sizeof(__u64), &c->cap_inheritable);
	e->ns[NS_USER] = uns->ns.inum;
	e->userns_level = uns->level;
	e->userns_uid = uns->owner.val;
	e->userns_gid = uns->group.val;
	if (bpf_core_field_exists(task->loginuid))
		e->auid = task->loginuid.val;
	else
		e->auid = (__u32)-1;
}

/*
 * Privileges this exec raised. The old creds are gone at this tracepoint, so the executed file's
 * mode and owner tell setuid/setgid; bprm->secureexec tells a file-capability raise.
 */
static __always_inline void read_privileges(struct linux_binprm *bprm, struct msg_exec *e)
{
	struct inode *inode = bprm->file->f_inode;
	umode_t mode = inode->i_mode;

	e->file_uid = inode->i_uid.val;
	e->file_gid = inode->i_gid.val;
	e->file_nlink = inode->__i_nlink;
	e->file_ino = inode->i_ino;
	if ((mode & S_ISUID) && e->euid == e->file_uid && e->uid != e->euid)
		e->privs |= EXEC_PRIV_SETUID;
	if ((mode & S_ISGID) && (mode & S_IXGRP) && e->egid == e->file_gid && e->gid != e->egid)
		e->privs |= EXEC_PRIV_SETGID;
	/*
	 * The capability LSM marks an exec secure (AT_SECURE) when ids change or file capabilities
	 * grant a non-root task capabilities; without an id change, that is a file-capability raise.
	 */
	if (BPF_CORE_READ_BITFIELD_PROBED(bprm, secureexec) && !(e->privs & (EXEC_PRIV_SETUID | EXEC_PRIV_SETGID)) &&
	    e->euid != 0 && e->cap_permitted != 0)
		e->privs |= EXEC_PRIV_FILE_CAP;
}


/*
 * tg_execve_map entry of the new image: what matchBinaries compares is the interpreter of a script
 * (bprm->interp), the program itself otherwise, made absolute against the cwd left in tg_path_heap
 * by the exec program (at tg_path_heap[cwd_pos..PATH_BUF_SIZE-1)).
 */
static __always_inline void update_execve_map(struct exec_buf *buf, struct msg_exec *e, struct linux_binprm *bprm,
					       struct path_buf *pb)
{
	struct gen_proc *p = (struct gen_proc *)&buf->data[PROC_SCRATCH_OFF];
	const char *interp = BPF_CORE_READ(bprm, interp);
	char first = 0;
	long n;

	__builtin_memset(p, 0, sizeof(*p));
	p->ppid = e->ppid;
	p->exec_pid = e->pid;
	p->nspid = e->nspid;
	p->exec_nspid = e->nspid;
	for (int i = 0; i < NS_COUNT; i++)
		p->ns[i] = e->ns[i];
	p->cap_effective = e->cap_effective;
	bpf_probe_read_kernel(&first, 1, interp);
	if (first == '/' || !pb || !e->cwd_len) {
		n = bpf_probe_read_kernel_str(p->bin, GEN_BIN_LEN, interp);
		p->bin_len = n > 0 ? n - 1 : 0;
	} else {
		/* relative: cwd + "/" + name ("./" dropped) */
		__u32 clen = e->cwd_len;
		if (clen > GEN_BIN_LEN - 2)
			clen = GEN_BIN_LEN - 2;
		BOUND(clen, 0xff);
		bpf_probe_read_kernel(p->bin, clen, &pb->data[(PATH_BUF_SIZE - 1 - e->cwd_len) & (PATH_BUF_SIZE - 1)]);
		if (clen == 1) /* cwd "/" */
			clen = 0;
		char second = 0;
		bpf_probe_read_kernel(&second, 1, interp + 1);
		if (first == '.' && second == '/')
			interp += 2;
		__u32 at = clen;
		BOUND(at, 0xff);
		p->bin[at] = '/';
		at += 1;
		__u32 room = GEN_BIN_LEN - 1 - at;
		BOUND(at, 0xff);
		BOUND(room, 0xff);
		n = bpf_probe_read_kernel_str(&p->bin[at], room, interp);
		p->bin_len = at + (n > 0 ? n - 1 : 0);
	}
	if (bpf_map_update_elem(&tg_execve_map, &p->exec_pid, p, BPF_ANY))
		tg_count(STAT_EXECVE_MAP_UPDATE_ERR); /* tetragon_map_errors_update_total{map="execve_map"} */
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(tg_process_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 zero = 0;
	struct exec_buf *buf = bpf_map_lookup_elem(&tg_exec_heap, &zero);
	struct path_buf *pb;
	struct msg_exec *e;
	long n;
	__u32 off;

	if (!buf)
		return 0;
	e = (struct msg_exec *)buf->data;
	__builtin_memset(e, 0, sizeof(*e));
	e->common.op = MSG_OP_EXECVE;
	e->common.ktime = bpf_ktime_get_boot_ns();
	e->pid = task->tgid;
	e->tid = task->pid;
	e->ppid = task->real_parent->tgid;
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->argc = bprm->argc;
	read_creds(task, e);
	read_namespaces(task, e);
	read_privileges(bprm, e);

	/*
	 * Variable part: cgroup name, filename, args, exe path (unlinked files only), cwd. Offsets are masked right before each use
	 * (asm keeps clang from folding the mask into an earlier range check the verifier cannot see).
	 */
	off = EXEC_DATA_OFF;

	/* cgroup leaf name (default hierarchy): the container id lives here */
	const char *cgname = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, name);
	n = cgname ? bpf_probe_read_kernel_str(&buf->data[off], EXEC_CGROUP_MAX, cgname) : 0;
	if (n > 0) {
		e->cgroup_len = n - 1;
		off += n - 1;
	} else {
		e->flags |= EXEC_F_ERR_CGROUP;
	}

	/* filename as given to execve (made absolute against cwd in user space) */
	BOUND_OFF(off);
	n = bpf_probe_read_kernel_str(&buf->data[off], EXEC_FILENAME_MAX, BPF_CORE_READ(bprm, filename));
	if (n <= 0) {
		n = 1;
		e->flags |= EXEC_F_TRUNC_FILENAME;
	}
	e->filename_len = n - 1;
	off += n - 1;

	/* arguments: the new mm's argv area, NUL-separated, argv[0] included */
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	unsigned long arg_start = BPF_CORE_READ(mm, arg_start);
	unsigned long arg_end = BPF_CORE_READ(mm, arg_end);
	__u32 alen = arg_end - arg_start;
	if (arg_end - arg_start > EXEC_ARGS_MAX) {
		alen = EXEC_ARGS_MAX;
		e->flags |= EXEC_F_TRUNC_ARGS;
	}
	BOUND_OFF(off);
	BOUND(alen, 0x1fff);
	if (alen && bpf_probe_read_user(&buf->data[off], alen, (void *)arg_start) == 0) {
		e->args_len = alen;
		off += alen;
	} else if (arg_end > arg_start) {
		e->flags |= EXEC_F_ERR_ARGS;
	}

	/*
	 * Executed file with no name left (memfd, deleted, O_TMPFILE): its path, for
	 * binary_properties.file; the filename given to execve (/proc/self/fd/N) says little.
	 */
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	pb = bpf_map_lookup_elem(&tg_path_heap, &zero);
	if (pb && fs && e->file_nlink == 0) {
		__u32 wflags = 0;
		int pos = walk_path(&bprm->file->f_path, &fs->root, &wflags);
		__u32 xsize = (__u32)(PATH_BUF_SIZE - 1 - pos);
		if (xsize > EXEC_EXE_MAX) { /* keep the end: the name */
			pos += xsize - EXEC_EXE_MAX;
			xsize = EXEC_EXE_MAX;
		}
		BOUND(xsize, 0x7ff);
		BOUND_OFF(off);
		if (xsize && bpf_probe_read_kernel(&buf->data[off], xsize, &pb->data[pos & (PATH_BUF_SIZE - 1)]) == 0) {
			e->exe_len = xsize;
			off += xsize;
		}
	}

	/* cwd */
	if (pb && fs) {
		__u32 wflags = 0;
		int pos = walk_path(&fs->pwd, &fs->root, &wflags);
		if (wflags)
			e->flags |= EXEC_F_TRUNC_CWD;
		__u32 csize = path_len_or_root(pb, &pos);
		BOUND(csize, 0xfff);
		BOUND_OFF(off);
		if (csize && bpf_probe_read_kernel(&buf->data[off], csize, &pb->data[pos & (PATH_BUF_SIZE - 1)]) == 0) {
			e->cwd_len = csize;
			off += csize;
		}
	} else {
		e->flags |= EXEC_F_ERR_CWD;
	}

	BOUND(off, 0x7fff);
	e->common.size = off;
	tg_submit(&tg_rb_events, buf->data, off, STAT_EXEC_SENT, STAT_EXEC_LOST);
	update_execve_map(buf, e, bprm, pb);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(tg_process_fork, struct task_struct *parent, struct task_struct *child)
{
	struct msg_clone m = {};
	__u32 tgid = child->tgid;

	if (tgid == parent->tgid)
		return 0; /* a new thread, not a new process */
	m.common.op = MSG_OP_CLONE;
	m.common.size = sizeof(m);
	m.common.ktime = bpf_ktime_get_boot_ns();
	m.pid = tgid;
	m.tid = child->pid;
	m.ppid = parent->tgid;
	struct pid *tpid = child->thread_pid;
	unsigned int level = tpid->level;
	m.nspid = BPF_CORE_READ(tpid, numbers[level & 31].nr);
	tg_submit(&tg_rb_events, &m, sizeof(m), STAT_CLONE_SENT, STAT_CLONE_LOST);

	/* the child runs its parent's image until it execs: same tg_execve_map entry, own ids */
	__u32 zero = 0;
	__u32 ptgid = m.ppid;
	struct gen_proc *pp = bpf_map_lookup_elem(&tg_execve_map, &ptgid);
	struct exec_buf *buf = bpf_map_lookup_elem(&tg_exec_heap, &zero);
	if (pp && buf) {
		struct gen_proc *c = (struct gen_proc *)&buf->data[PROC_SCRATCH_OFF];
		__builtin_memcpy(c, pp, sizeof(*c));
		c->ppid = ptgid;
		c->nspid = m.nspid;
		if (bpf_map_update_elem(&tg_execve_map, &tgid, c, BPF_ANY))
			tg_count(STAT_EXECVE_MAP_UPDATE_ERR);
	}
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(tg_process_exit, struct task_struct *task)
{
	struct msg_exit m = {};

	/* do_exit() decrements signal->live before this tracepoint: 0 means the whole group is gone */
	if (task->signal->live.counter != 0)
		return 0;
	m.common.op = MSG_OP_EXIT;
	m.common.size = sizeof(m);
	m.common.ktime = bpf_ktime_get_boot_ns();
	m.pid = task->tgid;
	m.tid = task->pid;
	m.exit_code = task->exit_code;
	tg_submit(&tg_rb_events, &m, sizeof(m), STAT_EXIT_SENT, STAT_EXIT_LOST);
	if (bpf_map_delete_elem(&tg_execve_map, &m.pid))
		tg_count(STAT_EXECVE_MAP_DELETE_ERR); /* tetragon_map_errors_delete_total{map="execve_map"} */
	return 0;
}
