/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The event ring buffers and their batched wake-up policy.
 *
 * Two rings, so that no policy's volume can cost the agent a process's exec or exit (its process cache
 * would go wrong): `tg_rb_events` carries the base sensor's process lifecycle records (exec, clone,
 * exit), `tg_rb_policy` every policy's records. The base sensor creates both, the generic objects reuse
 * them; each is --rb-size bytes. The agent reads both from one epoll and merges them by msg_common.ktime
 * (src/tetragon/bpf/ringbuf.py), so a policy event still finds the exec before it and the exit after it.
 *
 * A wake-up of the consumer costs the producing task an irq_work (~7.5 us here) and, when the agent
 * is idle, a full reschedule (~40 us), so records are submitted with BPF_RB_NO_WAKEUP except two:
 * the first record into an empty ring (the agent drained everything and may sleep for long: this
 * wakes it, then it batches for its 50 ms interval, Agent.run in src/tetragon/agent.py) and the
 * record that makes its ring's pending data cross `tg_wakeup_bytes`. So the agent at rest sleeps without a
 * timer, and under load it is woken at most once per drain.
 */
#ifndef TETRAGON_RINGBUF_H
#define TETRAGON_RINGBUF_H

/* process lifecycle records: the base sensor's only (Tetragon's name for its one event ring) */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 * 1024 * 1024); /* resized by the agent from --rb-size */
} tg_rb_events SEC(".maps");

/* policy (generic) records of every policy */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 * 1024 * 1024); /* resized by the agent from --rb-size */
} tg_rb_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} tg_stats SEC(".maps");

const volatile __u64 tg_wakeup_bytes = 256 * 1024; /* both rings have the same size */

static __always_inline void tg_count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&tg_stats, &slot);
	if (v)
		*v += 1; /* per-CPU slot: no atomic needed */
}

/* returns 1 when the record is in `ring`, 0 when it was lost (no room) */
static __always_inline int tg_submit(void *ring, void *data, __u64 size, __u32 sent_slot, __u32 lost_slot)
{
	__u64 avail = bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA);
	__u64 flags = BPF_RB_NO_WAKEUP;

	if (avail == 0 || (avail < tg_wakeup_bytes && avail + size >= tg_wakeup_bytes))
		flags = BPF_RB_FORCE_WAKEUP;
	if (bpf_ringbuf_output(ring, data, size, flags) == 0) {
		tg_count(sent_slot);
		return 1;
	}
	tg_count(lost_slot);
	return 0;
}

#endif
