/* SPDX-License-Identifier: GPL-2.0 */
/*
 * matchArgs on strings with more values than fit inline (gen_match.str holds GEN_MAX_VALUES): the
 * values of such an entry live in an LPM trie of their own, created and filled by the agent
 * (src/tetragon/sensors/strmaps.py), reached through the object's gen_str_maps at index
 * gen_match.map_id - 1. As Tetragon does, the tries hang from an ARRAY_OF_MAPS: the verifier checks a
 * sleepable program's maps (gen_lsm_ima_*, which run the selectors too) by the outer map's type only,
 * and an LPM trie referenced directly is refused there ("Sleepable programs can only use array, hash,
 * ringbuf and local storage maps"). The tries are written before any program is attached and never
 * again, so a sleepable reader never races a node's free.
 *
 * One lookup answers the entry, whatever its number of values:
 * - Prefix: any stored string that is a prefix of the argument is found (the longest one).
 * - Equal (and In): the longest stored prefix is the argument itself exactly when it is stored; the
 *   value (the stored length) tells it from a shorter one.
 * - Postfix: the values are stored reversed and the key is the argument's tail, reversed.
 */
#ifndef TETRAGON_GENERIC_STRMAPS_H
#define TETRAGON_GENERIC_STRMAPS_H

#define STR_KEY_MAX 256     /* Tetragon's STRING_PREFIX_MAX_LENGTH: longest Prefix / Equal value */
#define STR_POSTFIX_MAX 128 /* Tetragon's STRING_POSTFIX_MAX_LENGTH */
/* the key is built in the heap's binary-compare scratch (free once match_process is done) */
#define STRKEY_SCRATCH BIN_SCRATCH

struct str_key {
	__u32 prefixlen; /* bits */
	char data[STR_KEY_MAX];
};

/* the inner maps' shape; the agent creates each with as many entries as its matchArgs entry has values */
struct str_values {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	/* sizes, not types: clang leaves struct str_key a forward declaration in this nested BTF */
	__uint(key_size, sizeof(struct str_key));
	__uint(value_size, sizeof(__u32)); /* the stored string's length in bytes */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1); /* sized by the agent: one slot per matchArgs entry kept in a map */
	__type(key, __u32);
	__array(values, struct str_values);
} gen_str_maps SEC(".maps");

/* Does the string (p, plen) hold one of the values of entry m (kept in a map), before negation? */
static __always_inline int str_map_match(const volatile struct gen_match *m, const char *p, __u32 plen,
					 struct gen_heap *h)
{
	struct str_key *k = (struct str_key *)&h->buf[STRKEY_SCRATCH];
	__u32 idx = m->map_id - 1;
	__u32 op = m->op;
	int equal = op == OP_EQ || op == OP_NEQ || op == OP_IN || op == OP_NOTIN;
	__u32 n, *len;
	void *values;

	if (equal && plen > STR_KEY_MAX)
		return 0; /* longer than any value */
	values = bpf_map_lookup_elem(&gen_str_maps, &idx);
	if (!values)
		return 0;
	if (op == OP_POSTFIX || op == OP_NOTPOSTFIX) {
		n = plen < STR_POSTFIX_MAX ? plen : STR_POSTFIX_MAX;
		for (int i = 0; i < STR_POSTFIX_MAX; i++) {
			if (i >= n)
				break;
			__u32 at = plen - 1 - i;
			BOUND(at, 0xfff);
			k->data[i] = p[at];
		}
	} else {
		n = plen < STR_KEY_MAX ? plen : STR_KEY_MAX;
		BOUND(n, 0x1ff);
		if (n > STR_KEY_MAX)
			n = STR_KEY_MAX;
		bpf_probe_read_kernel(k->data, n, p);
	}
	k->prefixlen = n * 8;
	len = bpf_map_lookup_elem(values, k);
	if (!len)
		return 0;
	return equal ? *len == plen : 1;
}

#endif
