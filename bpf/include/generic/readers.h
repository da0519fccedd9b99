/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Argument readers: each argument becomes one blob, a struct gen_arg header and its payload, appended
 * to the record in gen_heap.buf: integers, strings, paths (fd, file, path, a user filename joined to
 * its dirfd or the cwd), sockets, sockaddrs, creds, user buffers and iovecs.
 *
 * read_arg() is a subprogram (__noinline): one copy of its code serves every argument slot instead
 * of one per slot. emit_arg() writes an integer inline and calls read_arg() for the rest.
 */
#ifndef TETRAGON_GENERIC_READERS_H
#define TETRAGON_GENERIC_READERS_H

/* the header of argument i's blob at off, followed by len payload bytes */
static __always_inline void put_arg_header(struct gen_heap *h, __u32 off, __u8 kind, __u32 aflags, __u32 i,
					   __u32 len)
{
	BOUND(off, REC_OFF_MASK);
	struct gen_arg *a = (struct gen_arg *)&h->buf[off];
	a->kind = kind;
	a->flags = aflags;
	a->index = i;
	a->pad = 0;
	a->len = len;
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
	struct task_struct *task = cur_task();
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
	__u32 len = path_len_or_root(pb, &pos);
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
	struct task_struct *task = cur_task();
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

/* a buffer of `size` bytes (at most max) at a user pointer, or a kernel one when `kernel` */
static __always_inline __u32 put_buf(struct gen_heap *h, __u32 off, const void *uptr, __u64 size, __u32 max,
				     __u32 *aflags, int kernel)
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
	if (n && (kernel ? bpf_probe_read_kernel(&h->buf[doff], n, uptr)
			 : bpf_probe_read_user(&h->buf[doff], n, uptr))) {
		*aflags |= GEN_AF_ERR;
		return sizeof(*gb);
	}
	return sizeof(*gb) + n;
}

static __always_inline __u32 put_ubuf(struct gen_heap *h, __u32 off, const void *uptr, __u64 size, __u32 max,
				      __u32 *aflags)
{
	return put_buf(h, off, uptr, size, max, aflags, 0);
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

/* a struct sockaddr at a user pointer, or a kernel one when `kernel` */
static __always_inline __u32 put_sockaddr(struct gen_heap *h, __u32 off, const void *uaddr, __u32 *aflags,
					  int kernel)
{
	struct gen_sockaddr *sa = (struct gen_sockaddr *)&h->buf[(off + sizeof(struct gen_arg)) & REC_OFF_MASK];
	struct {
		__u16 family;
		__u16 port;
		__u32 v4_or_flow;
		__u8 v6[16];
	} raw = {};

	__builtin_memset(sa, 0, sizeof(*sa));
	if (!uaddr || (kernel ? bpf_probe_read_kernel : bpf_probe_read_user)(&raw, sizeof(raw), uaddr)) {
		/* a short AF_INET sockaddr at the end of a page: try its 8 meaningful bytes */
		if (!uaddr || (kernel ? bpf_probe_read_kernel : bpf_probe_read_user)(&raw, 8, uaddr)) {
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

/* the length of a string a *_str helper returned n for (with its NUL), its error/truncation flags */
static __always_inline __u32 str_len(long n, __u32 *aflags)
{
	if (n <= 0) {
		*aflags |= GEN_AF_ERR;
		n = 1;
	} else if (n == GEN_STRING_MAX) {
		*aflags |= GEN_AF_TRUNC;
	}
	return n - 1;
}

/* argument i's blob (len payload bytes at poff) is complete: its header, where it is, *off past it */
static __always_inline int arg_done(struct gen_heap *h, __u32 i, __u32 o, __u32 poff, __u8 kind, __u32 aflags,
				    __u32 len, __u32 *off)
{
	put_arg_header(h, o, kind, aflags, i, len);
	h->aoff[i] = poff;
	h->alen[i] = len;
	h->akind[i] = kind;
	*off = o + sizeof(struct gen_arg) + len;
	return 1;
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
		len = str_len(n, &aflags);
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
		len = put_sockaddr(h, o, (const void *)v, &aflags, 0);
	} else if (r == RD_CRED || r == RD_CUR_CRED) {
		kind = GEN_KIND_CRED;
		const struct cred *c = r == RD_CRED ? (const struct cred *)v : BPF_CORE_READ(cur_task(), cred);
		len = put_cred(h, o, c, &aflags);
	} else {
		return 0; /* unused slot */
	}

	return arg_done(h, i, o, poff, kind, aflags, len, off);
}

/*
 * Read argument i of a kernel function whose memory may be the user's or the kernel's (x86-only: user
 * addresses are the lower half, the kernel's the upper, sign bit set): `string` (RD_STR), `char_buf`
 * (RD_BUF), and struct filename's name (RD_KFILENAME). A subprogram of its own, so read_arg, which
 * every other mechanism calls, is unchanged by them.
 */
static __noinline int read_kernel_arg(void *ctx, struct gen_heap *h, __u32 i, __u32 *off)
{
	__u64 v = h->val[i], size;
	__u32 o = *off, aflags = 0, len;
	long n;

	if (o > REC_OFF_MASK)
		return -1;
	__u32 poff = o + sizeof(struct gen_arg);
	BOUND(poff, 0xffff);
	if (cfg.args[i].reader == RD_BUF) {
		size = cfg.args[i].has_size ? raw_at(ctx, cfg.args[i].size_off, 8, 0) : cfg.args[i].max_data;
		len = put_buf(h, o, (const void *)v, size, cfg.args[i].max_data, &aflags, (__s64)v < 0);
		return arg_done(h, i, o, poff, GEN_KIND_BYTES, aflags, len, off);
	}
	if (cfg.args[i].reader == RD_KFILENAME)
		v = (__u64)BPF_CORE_READ((struct filename *)v, name);
	if ((__s64)v < 0)
		n = bpf_probe_read_kernel_str(&h->buf[poff & REC_OFF_MASK], GEN_STRING_MAX, (void *)v);
	else
		n = bpf_probe_read_user_str(&h->buf[poff & REC_OFF_MASK], GEN_STRING_MAX, (void *)v);
	len = str_len(n, &aflags);
	return arg_done(h, i, o, poff, GEN_KIND_STR, aflags, len, off);
}

#include "readers_kern.h"
#include "readers_net.h"

/* Argument i into the record at *off (integers inline, the rest through read_arg, or read_kernel_arg
 * for a kernel function's (kfunc) arguments that read_arg does not know). */
static __always_inline void emit_arg(void *ctx, struct gen_heap *h, __u32 i, __u32 *off, struct msg_generic *m,
				     int kfunc)
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
		__u32 poff = o + sizeof(struct gen_arg);
		put_arg_header(h, o, GEN_KIND_INT, 0, i, 8);
		*(__u64 *)&h->buf[poff & REC_OFF_MASK] = h->val[i];
		h->aoff[i] = poff;
		h->alen[i] = 8;
		h->akind[i] = GEN_KIND_INT;
		*off = poff + 8;
		m->nargs++;
		return;
	}
	if (kfunc) { /* a constant: other mechanisms do not even load the reader again */
		__u32 r = cfg.args[i].reader;
		if (r == RD_STR || r == RD_BUF || r == RD_KFILENAME) {
			if (read_kernel_arg(ctx, h, i, off) > 0)
				m->nargs++;
			return;
		}
		if (r == RD_DENTRY || r >= RD_KERN_FIRST) {
			if (read_kern_obj_arg(ctx, h, i, off) > 0)
				m->nargs++;
			return;
		}
		if (r >= RD_SKB && r <= RD_NETDEV) {
			if (read_net_arg(ctx, h, i, off) > 0)
				m->nargs++;
			return;
		}
	}
	if (read_arg(ctx, h, i, off) > 0)
		m->nargs++;
}

#endif
