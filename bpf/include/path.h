/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Absolute path of a (dentry, vfsmount) pair as seen from a root, built backwards in a per-CPU
 * scratch buffer by a bpf_loop over path components, crossing mount points like d_path does.
 */
#ifndef TETRAGON_PATH_H
#define TETRAGON_PATH_H

#define PATH_F_TRUNC 1 /* longer than the buffer, deeper than PATH_WALK_DEPTH, or a name over 255 bytes */
#define PATH_WALK_DEPTH EXEC_PATH_DEPTH

/* The cwd is written backwards from the end of this buffer. */
#define PATH_BUF_SIZE 4096
struct path_buf {
	char data[PATH_BUF_SIZE + 256];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct path_buf);
} tg_path_heap SEC(".maps");

struct path_walk {
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	struct dentry *root_dentry;
	struct vfsmount *root_mnt;
	int pos;  /* first byte of the path built so far */
	int done; /* reached the root */
	int last; /* this component is the last one (a pseudo file's own name) */
	int err;
};

static long path_walk_step(__u32 index, void *arg)
{
	struct path_walk *w = arg;
	/* locals, not w->x inside BPF_CORE_READ: that would record a relocation against path_walk */
	struct dentry *d = w->dentry;
	struct vfsmount *vfsmnt = w->vfsmnt;
	struct mount *mnt = w->mnt;
	__u32 zero = 0;

	if (d == w->root_dentry && vfsmnt == w->root_mnt) {
		w->done = 1;
		return 1;
	}
	if (d == BPF_CORE_READ(vfsmnt, mnt_root)) {
		struct mount *parent = BPF_CORE_READ(mnt, mnt_parent);
		if (parent == mnt) { /* root of the mount tree */
			w->done = 1;
			return 1;
		}
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = parent;
		w->vfsmnt = (struct vfsmount *)((char *)parent + bpf_core_field_offset(struct mount, mnt));
		return 0;
	}
	struct dentry *up = BPF_CORE_READ(d, d_parent);
	if (up == d) {
		/* a pseudo file (memfd:, anon): named like d_path does, by its own name */
		if (w->pos < PATH_BUF_SIZE - 1) {
			w->done = 1;
			return 1;
		}
		w->last = 1;
	}
	struct path_buf *pb = bpf_map_lookup_elem(&tg_path_heap, &zero);
	if (!pb)
		return 1;
	__u32 len = BPF_CORE_READ(d, d_name.len);
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
	int pos = w->pos - (int)len - 1;
	if (len > 255 || pos < 0) {
		w->err = PATH_F_TRUNC;
		return 1;
	}
	bpf_probe_read_kernel(&pb->data[(pos + 1) & (PATH_BUF_SIZE - 1)], len & 255, name);
	pb->data[pos & (PATH_BUF_SIZE - 1)] = '/';
	w->pos = pos;
	w->dentry = up;
	if (w->last) {
		w->done = 1;
		return 1;
	}
	return 0;
}

/* Absolute path of `pwd` as seen from the task's root; returns the start offset in tg_path_heap. */
static __always_inline int walk_path(const struct path *pwd, const struct path *root, __u32 *flags)
{
	struct path_walk w = {
		.dentry = BPF_CORE_READ(pwd, dentry),
		.vfsmnt = BPF_CORE_READ(pwd, mnt),
		.root_dentry = BPF_CORE_READ(root, dentry),
		.root_mnt = BPF_CORE_READ(root, mnt),
		.pos = PATH_BUF_SIZE - 1,
	};
	w.mnt = (struct mount *)((char *)w.vfsmnt - bpf_core_field_offset(struct mount, mnt));
	bpf_loop(PATH_WALK_DEPTH, path_walk_step, &w, 0);
	if (w.err || !w.done)
		*flags |= PATH_F_TRUNC;
	return w.pos;
}

/* Length of the path walk_path() left at pos; the root itself walks to nothing and is made "/". */
static __always_inline __u32 path_len_or_root(struct path_buf *pb, int *pos)
{
	__u32 len = (__u32)(PATH_BUF_SIZE - 1 - *pos);

	if (len == 0) {
		pb->data[PATH_BUF_SIZE - 2] = '/';
		*pos = PATH_BUF_SIZE - 2;
		len = 1;
	}
	return len;
}

#endif
