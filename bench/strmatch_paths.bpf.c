/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The compiled path of one string matchArgs compare, inline values against an entry's LPM trie
 * (bpf/include/generic/strmaps.h): match_str specialised per operator and number of values, so that
 * the compiler folds the configuration the verifier would see as constants. Not loaded; counted:
 *
 *   clang-19 -g -O2 -target bpf -D__TARGET_ARCH_x86 -Ibpf -Ibpf/include -c bench/strmatch_paths.bpf.c -o /tmp/p.o
 *   for f in inline_prefix_1 inline_prefix_8 map_prefix ...; do
 *       llvm-objdump -d --no-show-raw-insn /tmp/p.o --disassemble-symbols=$f | grep -cE '^ +[0-9]+:'
 *   done
 *
 * Counts with clang-19 (docs/policies.md): inline Prefix 42 (1 value), 61 (2), 95 (4), 168 (8);
 * inline Equal 56 (1), 241 (8); inline Postfix 54 (1), 239 (8); trie Prefix 66, Equal 66, Postfix 84
 * (its loop once). Each inline value costs one bpf_strncmp on the executed path; the trie path costs
 * an outer-array lookup, bpf_probe_read_kernel of the key (Prefix/Equal) and the trie lookup.
 */
#define volatile /* the .rodata configuration as compile-time constants */
#include "generic.bpf.c"
#undef volatile

#define PATH(name, OP, N, MAPID)                                                                     \
	static const struct gen_match name##_m = {                                                   \
		.op = OP,                                                                            \
		.cmp = CMP_STR,                                                                      \
		.nvals = N,                                                                          \
		.map_id = MAPID,                                                                     \
		.len = {5, 5, 5, 5, 5, 5, 5, 5},                                                     \
		.str = {"/etc/", "/usr/", "/var/", "/bin/", "/lib/", "/opt/", "/srv/", "/mnt/"},     \
	};                                                                                           \
	__noinline int name(struct gen_heap *h, __u32 off, __u32 len)                                \
	{                                                                                            \
		BOUND(off, REC_OFF_MASK);                                                            \
		if (len > GEN_STRING_MAX)                                                            \
			len = GEN_STRING_MAX;                                                        \
		return match_str(&name##_m, &h->buf[off], len, h);                                   \
	}

PATH(inline_prefix_1, OP_PREFIX, 1, 0)
PATH(inline_prefix_2, OP_PREFIX, 2, 0)
PATH(inline_prefix_4, OP_PREFIX, 4, 0)
PATH(inline_prefix_8, OP_PREFIX, 8, 0)
PATH(inline_equal_1, OP_EQ, 1, 0)
PATH(inline_equal_8, OP_EQ, 8, 0)
PATH(inline_postfix_1, OP_POSTFIX, 1, 0)
PATH(inline_postfix_8, OP_POSTFIX, 8, 0)
PATH(map_prefix, OP_PREFIX, 0, 1)
PATH(map_equal, OP_EQ, 0, 1)
PATH(map_postfix, OP_POSTFIX, 0, 1)
