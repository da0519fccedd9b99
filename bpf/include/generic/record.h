/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The finished record to the ring buffer, with the wake-up policy of ringbuf.h, counted in tg_stats
 * and in the hook's gen_stats.
 */
#ifndef TETRAGON_GENERIC_RECORD_H
#define TETRAGON_GENERIC_RECORD_H

static __always_inline void submit(struct gen_heap *h, __u32 size)
{
	if (size > GEN_RECORD_MAX)
		size = GEN_RECORD_MAX;
	BOUND(size, 0x1ffff);
	if (size > GEN_RECORD_MAX)
		return;
	if (tg_submit(h->buf, size, STAT_GENERIC_SENT, STAT_GENERIC_LOST))
		gstat(GSTAT_POSTED);
	else
		gstat(GSTAT_LOST);
}

#endif
