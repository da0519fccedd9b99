/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The finished record to the policy ring (tg_rb_policy, never the lifecycle ring), with the wake-up
 * policy of ringbuf.h, counted in tg_stats (all policies) and in the hook's own gen_stats: a record
 * that found no room is GSTAT_LOST there, so every drop is counted against its policy (the agent sums
 * its hooks: tetragon_policy_events_lost_total{policy}) at no cost to records that fit.
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
	if (tg_submit(&tg_rb_policy, h->buf, size, STAT_GENERIC_SENT, STAT_GENERIC_LOST))
		gstat(GSTAT_POSTED);
	else
		gstat(GSTAT_LOST);
}

#endif
