/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Readers of kernel objects that only kernel functions pass: dentry, module, load_info, user_namespace,
 * kiocb, iov_iter, bpf_attr, bpf_map and perf_event, read with CO-RE as Tetragon reads them
 * (bpf/process/types/basic.h there). read_kern_obj_arg() is a subprogram of its own, reached only from a
 * kernel function's entry (emit_arg's kfunc branch), so the other mechanisms' code is unchanged by it.
 */
#ifndef TETRAGON_GENERIC_READERS_KERN_H
#define TETRAGON_GENERIC_READERS_KERN_H

/* kernel/module/internal.h: not in every kernel's BTF (CONFIG_MODULES), so not in vmlinux.h */
struct load_info___tg {
	const char *name;
	struct module *mod;
	bool sig_ok; /* CONFIG_MODULE_SIG only */
} __attribute__((preserve_access_index));

/* struct iov_iter before 6.4 named its iovec pointer `iov` */
struct iov_iter___old {
	const struct iovec *iov;
} __attribute__((preserve_access_index));

/* the payload of argument i's blob, zeroed: n bytes at poff */
static __always_inline void *kern_payload(struct gen_heap *h, __u32 poff, __u32 n)
{
	void *p = &h->buf[poff & REC_OFF_MASK];
	__builtin_memset(p, 0, n);
	return p;
}

static __always_inline __u32 put_module(struct gen_heap *h, __u32 poff, struct module *mod,
					const char *name, __u32 *aflags)
{
	struct gen_module *gm = kern_payload(h, poff, sizeof(struct gen_module));

	if (!mod && !name) {
		*aflags |= GEN_AF_ERR;
		return sizeof(*gm);
	}
	if (!name)
		name = mod->name;
	if (bpf_probe_read_kernel_str(gm->name, sizeof(gm->name), name) < 0)
		*aflags |= GEN_AF_ERR;
	if (mod)
		gm->taints = BPF_CORE_READ(mod, taints);
	return sizeof(*gm);
}

/* the user buffer an iov_iter walks: a ubuf, or the first iovec of an iovec array */
static __always_inline __u32 put_iov_iter(struct gen_heap *h, __u32 o, struct iov_iter *it, __u32 max,
					  __u32 *aflags)
{
	__u8 type = BPF_CORE_READ(it, iter_type);
	const void *base = NULL;
	__u64 size = 0;

	if (bpf_core_enum_value_exists(enum iter_type, ITER_UBUF) &&
	    type == bpf_core_enum_value(enum iter_type, ITER_UBUF)) {
		base = BPF_CORE_READ(it, ubuf);
		size = BPF_CORE_READ(it, count);
	} else if (type == bpf_core_enum_value(enum iter_type, ITER_IOVEC)) {
		const struct iovec *iov;
		if (bpf_core_field_exists(it->__iov))
			iov = BPF_CORE_READ(it, __iov);
		else
			iov = BPF_CORE_READ((struct iov_iter___old *)it, iov);
		base = BPF_CORE_READ(iov, iov_base);
		size = BPF_CORE_READ(iov, iov_len);
	} else {
		*aflags |= GEN_AF_ERR; /* a kernel-memory iterator (kvec, bvec, ...): not Tetragon's either */
	}
	return put_buf(h, o, base, size, max, aflags, 0);
}

static __always_inline __u32 put_perf_event(struct gen_heap *h, __u32 poff, struct perf_event *pe)
{
	struct gen_perf_event *ge = kern_payload(h, poff, sizeof(struct gen_perf_event));
	__u64 func = BPF_CORE_READ(pe, attr.kprobe_func);

	ge->type = BPF_CORE_READ(pe, attr.type);
	ge->config = BPF_CORE_READ(pe, attr.config);
	ge->probe_offset = BPF_CORE_READ(pe, attr.probe_offset);
	/* config1 names the function of a kprobe PMU event, in the caller's memory (perf_event_open);
	 * other events leave it 0 or a value that is no readable string */
	if (func && bpf_probe_read_user_str(ge->kprobe_func, sizeof(ge->kprobe_func), (void *)func) < 0)
		ge->kprobe_func[0] = 0;
	return sizeof(*ge);
}

/* Read kernel-object argument i into a blob at *off. */
static __noinline int read_kern_obj_arg(void *ctx, struct gen_heap *h, __u32 i, __u32 *off)
{
	__u64 v = h->val[i];
	__u32 o = *off, aflags = 0, len = 0;
	__u32 r = cfg.args[i].reader;
	__u8 kind;

	if (o > REC_OFF_MASK)
		return -1;
	__u32 poff = o + sizeof(struct gen_arg);
	BOUND(poff, 0xffff);
	if (!v)
		aflags |= GEN_AF_ERR;

	if (r == RD_DENTRY) {
		/* the name up to its file system's root: a dentry alone knows no mount */
		struct gen_path *gp = kern_payload(h, poff, sizeof(struct gen_path));
		struct path p = {.dentry = (struct dentry *)v, .mnt = NULL};
		kind = GEN_KIND_PATH;
		gp->i_mode = BPF_CORE_READ(p.dentry, d_inode, i_mode);
		len = sizeof(*gp) + (v ? put_path(h, poff + sizeof(*gp), &p, &aflags) : 0);
	} else if (r == RD_KIOCB) {
		kind = GEN_KIND_PATH;
		len = put_file(h, o, v ? BPF_CORE_READ((struct kiocb *)v, ki_filp) : NULL, &aflags);
	} else if (r == RD_IOV_ITER) {
		kind = GEN_KIND_BYTES;
		len = put_iov_iter(h, o, (struct iov_iter *)v, cfg.args[i].max_data, &aflags);
	} else if (r == RD_MODULE) {
		kind = GEN_KIND_MODULE;
		len = put_module(h, poff, (struct module *)v, NULL, &aflags);
	} else if (r == RD_LOAD_INFO) {
		struct load_info___tg *info = (struct load_info___tg *)v;
		const char *name = BPF_CORE_READ(info, name);
		kind = GEN_KIND_MODULE;
		len = put_module(h, poff, BPF_CORE_READ(info, mod), name, &aflags);
		if (bpf_core_field_exists(info->sig_ok)) {
			struct gen_module *gm = (struct gen_module *)&h->buf[poff & REC_OFF_MASK];
			gm->sig_ok = BPF_CORE_READ(info, sig_ok) ? 1 : 0;
		}
	} else if (r == RD_USER_NS) {
		struct user_namespace *ns = (struct user_namespace *)v;
		struct gen_userns *gu = kern_payload(h, poff, sizeof(struct gen_userns));
		kind = GEN_KIND_USERNS;
		gu->level = BPF_CORE_READ(ns, level);
		gu->uid = BPF_CORE_READ(ns, owner.val);
		gu->gid = BPF_CORE_READ(ns, group.val);
		gu->inum = BPF_CORE_READ(ns, ns.inum);
		len = sizeof(*gu);
	} else if (r == RD_BPF_ATTR) {
		union bpf_attr *ba = (union bpf_attr *)v;
		struct gen_bpf_attr *gb = kern_payload(h, poff, sizeof(struct gen_bpf_attr));
		kind = GEN_KIND_BPF_ATTR;
		gb->prog_type = BPF_CORE_READ(ba, prog_type);
		gb->insn_cnt = BPF_CORE_READ(ba, insn_cnt);
		bpf_probe_read_kernel(gb->name, sizeof(gb->name), &ba->prog_name);
		len = sizeof(*gb);
	} else if (r == RD_BPF_MAP) {
		struct bpf_map *map = (struct bpf_map *)v;
		struct gen_bpf_map *gm = kern_payload(h, poff, sizeof(struct gen_bpf_map));
		kind = GEN_KIND_BPF_MAP;
		gm->map_type = BPF_CORE_READ(map, map_type);
		gm->key_size = BPF_CORE_READ(map, key_size);
		gm->value_size = BPF_CORE_READ(map, value_size);
		gm->max_entries = BPF_CORE_READ(map, max_entries);
		bpf_probe_read_kernel(gm->name, sizeof(gm->name), &map->name);
		len = sizeof(*gm);
	} else if (r == RD_PERF_EVENT) {
		kind = GEN_KIND_PERF_EVENT;
		len = put_perf_event(h, poff, (struct perf_event *)v);
	} else {
		return 0;
	}
	return arg_done(h, i, o, poff, kind, aflags, len, off);
}

#endif
