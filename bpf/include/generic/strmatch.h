/* SPDX-License-Identifier: GPL-2.0 */
/*
 * matchArgs on strings (Equal, In, Prefix, Postfix and their negations) with any number of values,
 * as Tetragon does: the values live in two LPM tries of the hook's object, filled by the agent
 * (src/tetragon/policy/compile/strmaps.py), not in .rodata.
 *
 * gen_str_prefix holds every Equal and Prefix value as it is; gen_str_postfix every Postfix value
 * reversed. An entry's value says which matchArgs entries (bit = the entry's map_id) hold it:
 * `prefix` covers the entry and, closed by the agent, every shorter stored string that is a prefix
 * of it, so the single longest-prefix lookup of an argument answers every Prefix entry at once;
 * `equal` counts only when the entry is as long as the argument. So a string compare costs one map
 * lookup, whatever the number of values.
 */
#ifndef TETRAGON_GENERIC_STRMATCH_H
#define TETRAGON_GENERIC_STRMATCH_H

#define STR_PREFIX_MAX 256  /* Tetragon's STRING_PREFIX_MAX_LENGTH; also our Equal limit */
#define STR_POSTFIX_MAX 128 /* Tetragon's STRING_POSTFIX_MAX_LENGTH */
/* lookup keys are built in the heap's binary-compare scratch (4-byte aligned; free at match_args) */
#define STRKEY_SCRATCH BIN_SCRATCH

struct str_key {
	__u32 prefixlen; /* bits */
	char data[STR_PREFIX_MAX];
};
struct str_key_post {
	__u32 prefixlen;
	char data[STR_POSTFIX_MAX];
};
struct str_val {
	__u64 prefix; /* Prefix / Postfix entries whose value is this string or a prefix of it */
	__u64 equal;  /* Equal entries whose value is exactly this string */
	__u32 len;    /* bytes of this string */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1); /* sized by the agent */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct str_key);
	__type(value, struct str_val);
} gen_str_prefix SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct str_key_post);
	__type(value, struct str_val);
} gen_str_postfix SEC(".maps");

static __always_inline int str_is_equal_op(__u32 op)
{
	return op == OP_EQ || op == OP_NEQ || op == OP_IN || op == OP_NOTIN;
}

/* Does the string (p, plen) satisfy matchArgs entry m (before negation)? */
static __always_inline int str_lookup(const volatile struct gen_match *m, const char *p, __u32 plen,
				      struct gen_heap *h)
{
	__u32 op = m->op;
	__u64 bit = 1ULL << (m->map_id & 63);
	struct str_val *v;

	if (op == OP_POSTFIX || op == OP_NOTPOSTFIX) {
		struct str_key_post *k = (struct str_key_post *)&h->buf[STRKEY_SCRATCH];
		__u32 n = plen < STR_POSTFIX_MAX ? plen : STR_POSTFIX_MAX;
		for (int i = 0; i < STR_POSTFIX_MAX; i++) {
			if (i >= n)
				break;
			__u32 at = plen - 1 - i;
			BOUND(at, 0xfff);
			k->data[i] = p[at];
		}
		k->prefixlen = n * 8;
		v = bpf_map_lookup_elem(&gen_str_postfix, k);
		return v && (v->prefix & bit);
	}
	struct str_key *k = (struct str_key *)&h->buf[STRKEY_SCRATCH];
	__u32 n = plen < STR_PREFIX_MAX ? plen : STR_PREFIX_MAX;
	BOUND(n, 0x1ff);
	if (n > STR_PREFIX_MAX)
		n = STR_PREFIX_MAX;
	bpf_probe_read_kernel(k->data, n, p);
	k->prefixlen = n * 8;
	v = bpf_map_lookup_elem(&gen_str_prefix, k);
	if (!v)
		return 0;
	if (str_is_equal_op(op))
		return v->len == plen && (v->equal & bit);
	return (v->prefix & bit) != 0;
}

#endif
