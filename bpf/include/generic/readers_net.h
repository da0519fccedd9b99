/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Network arguments of kernel functions (included by readers.h, which it builds on): `skb` (the
 * packet's IP and TCP/UDP tuple read from its headers, its length, hash, priority, mark and IPsec
 * path), `sockaddr` in kernel memory (a connect's address once the kernel copied it), `socket` (its
 * struct sock) and `net_device` (its name). All read with CO-RE.
 *
 * read_net_arg() is a subprogram (__noinline) of its own, called only by kernel-function hooks, so
 * read_arg, which every other mechanism calls, is unchanged by these types.
 *
 * Socket tracking (TrackSock / UntrackSock, returnArgAction): tg_socktrack maps a struct sock * to
 * the pid_tgid of the process that tracked it; a record with a tracked sock or socket argument is
 * then that process's event, whatever context the kernel called the function in (a softirq, another
 * task), as Tetragon attributes it. The map is shared by the hooks of one policy.
 */
#ifndef TETRAGON_GENERIC_READERS_NET_H
#define TETRAGON_GENERIC_READERS_NET_H

#define NET_AF_INET 2
#define NET_AF_INET6 10
#define NET_IPPROTO_TCP 6
#define NET_IPPROTO_UDP 17
#define NET_IFNAMSIZ 16

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* memory only for the socks tracked */
	__type(key, __u64);   /* struct sock * */
	__type(value, __u64); /* pid_tgid of the owner */
} tg_socktrack SEC(".maps");

static __always_inline void sock_track(__u64 sk, int track)
{
	if (!sk)
		return;
	if (track) {
		__u64 owner = bpf_get_current_pid_tgid();
		bpf_map_update_elem(&tg_socktrack, &sk, &owner, BPF_ANY);
	} else {
		bpf_map_delete_elem(&tg_socktrack, &sk);
	}
}

/* the record of a call with a tracked sock (or socket) argument is its owner's */
static __always_inline void sock_owner(struct gen_heap *h, struct msg_generic *m)
{
#pragma unroll
	for (int i = 0; i < GEN_ARGS_MAX; i++) {
		if (i >= cfg.nargs)
			break;
		if ((cfg.args[i].reader != RD_SOCK && cfg.args[i].reader != RD_SOCKET) || !h->akind[i])
			continue;
		__u64 sk = h->val[i];
		__u64 *owner = bpf_map_lookup_elem(&tg_socktrack, &sk);
		if (owner) {
			m->pid = *owner >> 32;
			m->tid = (__u32)*owner;
			return;
		}
	}
}

/* the IPsec path of an skb with the sec_path extension: its lengths, as Tetragon reports them */
static __always_inline void skb_secpath(struct gen_skb *gs, struct sk_buff *skb)
{
	if (!bpf_core_field_exists(skb->active_extensions) || !bpf_core_field_exists(skb->extensions) ||
	    !bpf_core_enum_value_exists(enum skb_ext_id, SKB_EXT_SEC_PATH))
		return;
	__u8 active = BPF_CORE_READ(skb, active_extensions);
	int id = bpf_core_enum_value(enum skb_ext_id, SKB_EXT_SEC_PATH);
	if (!(active & (1 << (id & 7))))
		return;
	struct skb_ext *ext = BPF_CORE_READ(skb, extensions);
	__u8 chunk = 0;
	bpf_probe_read_kernel(&chunk, 1, &ext->offset[id & 3]);
	struct sec_path *sp = (struct sec_path *)((char *)ext + ((__u64)chunk << 3));
	gs->secpath_len = BPF_CORE_READ(sp, len);
	gs->secpath_olen = BPF_CORE_READ(sp, olen);
}

/* an sk_buff: the tuple from its network header (IPv4 or IPv6) and its TCP/UDP ports */
static __always_inline __u32 put_skb(struct gen_heap *h, __u32 off, struct sk_buff *skb, __u32 *aflags)
{
	struct gen_skb *gs = (struct gen_skb *)&h->buf[(off + sizeof(struct gen_arg)) & REC_OFF_MASK];
	__u8 proto = 0, first = 0;
	__u32 l4 = 0;

	__builtin_memset(gs, 0, sizeof(*gs));
	if (!skb) {
		*aflags |= GEN_AF_ERR;
		return sizeof(*gs);
	}
	gs->len = BPF_CORE_READ(skb, len);
	gs->hash = BPF_CORE_READ(skb, hash);
	gs->tuple.priority = BPF_CORE_READ(skb, priority);
	gs->tuple.mark = BPF_CORE_READ(skb, mark);
	skb_secpath(gs, skb);

	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 l3 = BPF_CORE_READ(skb, network_header);
	if (l3 == (__u16)~0U || bpf_probe_read_kernel(&first, 1, head + l3))
		return sizeof(*gs); /* no network header yet */
	if (first >> 4 == 4) {
		struct iphdr ip;
		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + l3))
			return sizeof(*gs);
		proto = ip.protocol;
		gs->tuple.family = NET_AF_INET;
		__builtin_memcpy(gs->tuple.saddr, &ip.saddr, 4);
		__builtin_memcpy(gs->tuple.daddr, &ip.daddr, 4);
		l4 = l3 + ip.ihl * 4;
	} else if (first >> 4 == 6) {
		struct ipv6hdr ip6;
		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + l3))
			return sizeof(*gs);
		proto = ip6.nexthdr; /* extension headers are not walked: a packet with them has no ports */
		gs->tuple.family = NET_AF_INET6;
		__builtin_memcpy(gs->tuple.saddr, &ip6.saddr, 16);
		__builtin_memcpy(gs->tuple.daddr, &ip6.daddr, 16);
		l4 = l3 + sizeof(ip6);
	} else {
		return sizeof(*gs);
	}
	gs->tuple.protocol = proto;
	if (proto == NET_IPPROTO_TCP || proto == NET_IPPROTO_UDP) {
		__be16 ports[2] = {};
		/* both headers start with the source and destination ports */
		if (!bpf_probe_read_kernel(ports, sizeof(ports), head + l4)) {
			gs->tuple.sport = bpf_ntohs(ports[0]);
			gs->tuple.dport = bpf_ntohs(ports[1]);
		}
	}
	return sizeof(*gs);
}

/* Read argument i of a network type (RD_SKB, RD_KSOCKADDR, RD_SOCKET, RD_NETDEV) into a blob at *off. */
static __noinline int read_net_arg(void *ctx, struct gen_heap *h, __u32 i, __u32 *off)
{
	__u32 r = cfg.args[i].reader, o = *off, aflags = 0, len;
	__u32 poff = (o + sizeof(struct gen_arg)) & 0xffff;
	__u64 v = h->val[i];
	__u8 kind;

	if (o > REC_OFF_MASK) /* no room left in the record */
		return -1;
	if (r == RD_SKB) {
		kind = GEN_KIND_SKB;
		len = put_skb(h, o, (struct sk_buff *)v, &aflags);
	} else if (r == RD_KSOCKADDR) {
		kind = GEN_KIND_SOCKADDR;
		len = put_sockaddr(h, o, (const void *)v, &aflags, 1);
	} else if (r == RD_SOCKET) {
		kind = GEN_KIND_SOCK;
		struct sock *sk = BPF_CORE_READ((struct socket *)v, sk);
		h->val[i] = (__u64)sk; /* what TrackSock and sock_owner() key on */
		len = put_sock(h, o, sk, &aflags);
	} else if (r == RD_NETDEV) {
		kind = GEN_KIND_STR;
		struct net_device *dev = (struct net_device *)v;
		long n = bpf_probe_read_kernel_str(&h->buf[poff & REC_OFF_MASK], NET_IFNAMSIZ, dev->name);
		len = str_len(n, &aflags);
	} else {
		return 0;
	}
	return arg_done(h, i, o, poff, kind, aflags, len, off);
}

#endif
