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
	__u64 avail = bpf_ringbuf_query(&tg_rb_events, BPF_RB_AVAIL_DATA);
	__u64 flags = BPF_RB_NO_WAKEUP;
	if (avail < tg_wakeup_bytes && avail + size >= tg_wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	if (bpf_ringbuf_output(&tg_rb_events, h->buf, size, flags) == 0) {
		tg_count(STAT_GENERIC_SENT);
		gstat(GSTAT_POSTED);
	} else {
		tg_count(STAT_GENERIC_LOST);
		gstat(GSTAT_LOST);
	}
}

#endif
