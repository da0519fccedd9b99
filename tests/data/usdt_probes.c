/*
 * A program with USDT probes for the tests: the probe notes are written the way sys/sdt.h writes
 * them (note type 3 in .note.stapsdt, a .stapsdt.base section, semaphores in .probes), without
 * needing sys/sdt.h. The compiler picks each operand ("nor": constant, memory or register), so the
 * argument specs are what a real build produces, e.g. `-4@-20(%rbp) 8@%rax -4@$42`.
 *
 * usage: usdt_probes N   runs N iterations of:
 *   tgtest:args(int a = i - 2, long b = -(10^12 + i), char *s = "tg-usdt-<i>")
 *   tgtest:consts(42, -7)
 *   tgtest:setme(int v = 7 + i, in memory)   then prints "setme <v after the probe>"
 *   tgtest:gated(int i)                        only while its semaphore is nonzero
 * and prints "gated <how many iterations found the semaphore set>" at the end.
 */
#include <stdio.h>
#include <stdlib.h>

#define TG_NOTE(prov, name, sem, fmt)                                                   \
	"990: nop\n"                                                                    \
	".pushsection .note.stapsdt,\"?\",\"note\"\n"                                   \
	".balign 4\n"                                                                   \
	".4byte 992f-991f, 994f-993f, 3\n"                                              \
	"991: .asciz \"stapsdt\"\n"                                                     \
	"992: .balign 4\n"                                                              \
	"993: .8byte 990b\n"                                                            \
	".8byte _.stapsdt.base\n"                                                       \
	".8byte " sem "\n"                                                              \
	".asciz \"" prov "\"\n"                                                         \
	".asciz \"" name "\"\n"                                                         \
	".asciz \"" fmt "\"\n"                                                          \
	"994: .balign 4\n"                                                              \
	".popsection\n"                                                                 \
	".ifndef _.stapsdt.base\n"                                                      \
	".pushsection .stapsdt.base,\"aG\",\"progbits\",.stapsdt.base,comdat\n"        \
	".weak _.stapsdt.base\n"                                                        \
	".hidden _.stapsdt.base\n"                                                      \
	"_.stapsdt.base: .space 1\n"                                                    \
	".size _.stapsdt.base, 1\n"                                                     \
	".popsection\n"                                                                 \
	".endif\n"

/* %n prints the negated constant: 4 -> "-4" (signed int), -8 -> "8" (pointer) */
#define S_INT 4
#define S_LONG 8
#define S_PTR -8

unsigned short tgtest_gated_semaphore __attribute__((section(".probes"), used));

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1;
	int gated = 0;
	char buf[32];

	for (int i = 0; i < n; i++) {
		volatile int a = i - 2;
		long b = -(1000000000000L + i);
		char *s = buf;
		volatile int v = 7 + i;

		snprintf(buf, sizeof buf, "tg-usdt-%d", i);
		__asm__ __volatile__(TG_NOTE("tgtest", "args", "0", "%n[s0]@%[a0] %n[s1]@%[a1] %n[s2]@%[a2]")
				     :: [s0] "n"(S_INT), [a0] "nor"(a), [s1] "n"(S_LONG), [a1] "nor"(b),
				     [s2] "n"(S_PTR), [a2] "nor"(s));
		__asm__ __volatile__(TG_NOTE("tgtest", "consts", "0", "%n[s0]@%[a0] %n[s1]@%[a1]")
				     :: [s0] "n"(S_INT), [a0] "nor"(42), [s1] "n"(S_INT), [a1] "nor"(-7));
		__asm__ __volatile__(TG_NOTE("tgtest", "setme", "0", "%n[s0]@%[a0]")
				     :: [s0] "n"(S_INT), [a0] "m"(v) : "memory");
		printf("setme %d\n", v);
		if (tgtest_gated_semaphore) {
			gated++;
			__asm__ __volatile__(TG_NOTE("tgtest", "gated", "tgtest_gated_semaphore", "%n[s0]@%[a0]")
					     :: [s0] "n"(S_INT), [a0] "nor"(i));
		}
	}
	printf("gated %d\n", gated);
	return 0;
}
