"""BPF ring buffer consumer that walks the shared mappings directly (no libbpf callback).

Layout (kernel/bpf/ringbuf.c): page 0 = consumer position (read-write for us), page 1 = producer
position, then the data area, which the kernel lets a reader map twice so that a record that wraps is
contiguous. We map it once: the kernel maps every page of a ring mapping at mmap time, so the second
copy added the ring's whole size to the agent's RSS (8 MiB per ring by default) for the rare record
that wraps, which is copied instead. Each record has an 8-byte header (8-aligned, so a header and a
record's leading ktime never straddle the end): u32 length with BUSY (bit 31) and DISCARD (bit 30)
flags, u32 page offset.

Two rings (bpf/include/ringbuf.h): the process lifecycle ring and the policy ring, read from one
epoll and merged into one stream by each record's msg_common.ktime, so the pipeline sees a policy
event after the exec of its process and before its exit, as it did when both shared one ring. The
merge rests on two facts. A record's ktime is taken before its ring space is reserved. And if record
Y must come before record X (Y's program finished before X's began: an exec and its process's
openat, an openat and its process's exit), Y was committed before X's ktime was taken; then the head
of Y's ring, reserved no later than Y, has a ktime below X's, and the merge takes it first. So:
- both rings hold records: the one with the lower ktime goes first (ties: lifecycle first);
- one ring is empty: the other is read up to a producer position read *before* the empty ring's, so
  every record that must precede one read was committed, and would have been seen, in the empty ring;
- a head still BUSY (being written) ends the drain, as with one ring; the timer brings the next.
A policy flood with a quiet lifecycle ring is thus read in chunks with the same per-record work as
one ring; the per-record ktime comparison happens only while both rings hold records.
One order differs from a single ring's: a `return: true` record keeps its entry's ktime but is
submitted at the return, so a call that spans its process's exec (sys_execve with return: true) comes
before that exec when both are read in one drain, and its event names the image that made the call,
as Tetragon's does (it takes the process at entry); one ring put it after the exec.

The producer side (bpf/include/ringbuf.h) submits with BPF_RB_NO_WAKEUP and forces a wake-up only
for the first record into an empty ring and when a ring's pending data crosses a threshold; the agent
batches the rest on a timer (Agent.run). The consumer position is published with a native 8-byte
store through a memoryview: struct.pack_into zeroes the destination first, and a momentary
consumer_pos of 0 makes the kernel see a full ring.

x86-only memory ordering: libbpf reads producer_pos and a record header with smp_load_acquire and
publishes consumer_pos with smp_store_release. Here they are plain loads and stores through
memoryviews, which x86-64's total store order makes enough: a load is not reordered with an older
load (the record's bytes are read after the producer_pos and header that cover them; one ring's
producer_pos after the other's) and a store not with an older load (consumer_pos moves only after the
record was read). Weaker architectures (arm64) need acquire/release barriers, which Python cannot
issue: there, this reader must go native (or use libbpf's ring_buffer__consume).
"""

from __future__ import annotations

import mmap
import os
import select
from collections.abc import Callable

from tetragon.bpf.libbpf import Map

_BUSY = 1 << 31
_DISCARD = 1 << 30
_LEN_MASK = ~(_BUSY | _DISCARD)
_HDR = 8
_KTIME = _HDR + 8  # msg_common.ktime, from a record header's start: 8-aligned, as headers are

Handler = Callable[[memoryview], None]


def _wrapped(data: memoryview, start: int, rlen: int, size: int) -> memoryview:
    """A record's bytes from `start` (past the end: from the beginning), copied when they wrap."""
    start &= size - 1
    if start + rlen <= size:
        return data[start : start + rlen]
    return memoryview(bytes(data[start:size]) + bytes(data[: start + rlen - size]))


class Ring:
    """One ring's views: consumer and producer positions, the data area (mapped once), its record
    headers and ktimes. `mapped` makes them from a ring map's fd; tests make them from plain buffers."""

    def __init__(self, cons: memoryview, prod: memoryview, data: memoryview, size: int) -> None:
        if size & (size - 1):
            raise ValueError(f"ring buffer size {size} is not a power of two")
        if len(data) < size:
            raise ValueError(f"ring data area of {len(data)} bytes, want {size}")
        data = data[:size]
        self.size = size
        self.mask = size - 1
        self.cons = cons.cast("Q")
        self.prod = prod[:8].cast("Q")
        self.data = data
        self.hdr = data.cast("I")  # record headers are 8-byte aligned
        self.words = data.cast("Q")  # and so is the ktime 16 bytes into each
        self._maps: tuple[mmap.mmap, ...] = ()
        self._views: tuple[memoryview, ...] = (cons, prod, data)

    @classmethod
    def mapped(cls, ring: Map) -> Ring:
        size, fd, page = ring.max_entries, ring.fd, mmap.PAGESIZE
        cons_mm = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        prod_mm = mmap.mmap(fd, page + size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        whole = memoryview(prod_mm)
        self = cls(memoryview(cons_mm), whole[:page], whole[page:], size)
        self._maps = (prod_mm, cons_mm)
        self._views = (*self._views, whole)
        return self

    def walk(self, end: int, handle: Handler, limit: int) -> tuple[int, bool]:
        """Records committed below producer position `end`, in order: (handled, reached `end`)."""
        cons_pos = self.cons
        cons = int(cons_pos[0])
        mask = self.mask
        size = self.size
        data = self.data
        hdr = self.hdr
        n = 0
        while cons < end:
            if n >= limit:
                return n, False
            off = cons & mask
            length = hdr[off >> 2]  # acquire-ordered on x86 only (module docstring)
            if length & _BUSY:
                return n, False
            rlen = length & _LEN_MASK
            if not length & _DISCARD:
                start = off + _HDR
                if start + rlen <= size:
                    handle(data[start : start + rlen])
                else:
                    handle(_wrapped(data, start, rlen, size))
                n += 1
            cons += (rlen + _HDR + 7) & ~7
            cons_pos[0] = cons  # release-ordered on x86 only
        return n, True

    def close(self) -> None:
        for view in (self.words, self.hdr, self.prod, self.cons, *self._views):
            view.release()
        for m in self._maps:
            m.close()


def _merge(a: Ring, a_end: int, b: Ring, b_end: int, handle: Handler, limit: int) -> tuple[int, bool]:
    """Both rings' records in ktime order until either reaches its end: (handled, reached an end)."""
    a_cons, b_cons = a.cons, b.cons
    ca, cb = int(a_cons[0]), int(b_cons[0])
    n = 0
    while ca < a_end and cb < b_end:
        if n >= limit:
            return n, False
        off_a = ca & a.mask
        len_a = a.hdr[off_a >> 2]
        off_b = cb & b.mask
        len_b = b.hdr[off_b >> 2]
        if (len_a | len_b) & _BUSY:
            return n, False
        if len_a & _DISCARD:
            ca += ((len_a & _LEN_MASK) + _HDR + 7) & ~7
            a_cons[0] = ca
        elif len_b & _DISCARD:
            cb += ((len_b & _LEN_MASK) + _HDR + 7) & ~7
            b_cons[0] = cb
        elif a.words[((off_a + _KTIME) & a.mask) >> 3] <= b.words[((off_b + _KTIME) & b.mask) >> 3]:
            rlen = len_a & _LEN_MASK
            handle(_wrapped(a.data, off_a + _HDR, rlen, a.size))
            n += 1
            ca += (rlen + _HDR + 7) & ~7
            a_cons[0] = ca  # release-ordered on x86 only
        else:
            rlen = len_b & _LEN_MASK
            handle(_wrapped(b.data, off_b + _HDR, rlen, b.size))
            n += 1
            cb += (rlen + _HDR + 7) & ~7
            b_cons[0] = cb
    return n, True


def drain_rings(life: Ring, policy: Ring | None, handle: Handler, limit: int) -> int:
    """Records of `life` and `policy` in the order the module docstring argues for; how many."""
    n = 0
    while n < limit:
        if policy is None:
            end = int(life.prod[0])
            if int(life.cons[0]) >= end:
                break
            k, whole = life.walk(end, handle, limit - n)
        else:
            # the order of these loads is what makes the chunks below safe (module docstring)
            policy_end = int(policy.prod[0])
            life_end = int(life.prod[0])
            if int(life.cons[0]) >= life_end:
                if int(policy.cons[0]) >= policy_end:
                    break
                k, whole = policy.walk(policy_end, handle, limit - n)
            else:
                policy_end = int(policy.prod[0])
                if int(policy.cons[0]) >= policy_end:
                    k, whole = life.walk(life_end, handle, limit - n)
                else:
                    k, whole = _merge(life, life_end, policy, policy_end, handle, limit - n)
        n += k
        if not whole:
            break
    return n


class RingBufferReader:
    """The process lifecycle ring and (optionally) the policy ring, one epoll, one merged stream."""

    def __init__(self, lifecycle: Map, policy: Map | None = None) -> None:
        self._life = Ring.mapped(lifecycle)
        self._policy = Ring.mapped(policy) if policy is not None else None
        self._epoll = select.epoll()
        # edge-triggered: wait() returns at each kernel wake-up, not for as long as records are pending
        for ring in (lifecycle, policy):
            if ring is not None:
                self._epoll.register(ring.fd, select.EPOLLIN | select.EPOLLET)
        # interrupt() ends a wait early (the agent's timer may be backed off to a second)
        self._interrupt = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._interrupt, select.EPOLLIN)
        self.received = 0

    def wait(self, timeout: float) -> None:
        """Block until the kernel forces a wake-up, interrupt() is called or `timeout` seconds pass."""
        for fd, _ in self._epoll.poll(timeout):
            if fd == self._interrupt:
                os.eventfd_read(self._interrupt)

    @property
    def size(self) -> int:
        """Bytes of each ring (both are --rb-size)."""
        return self._life.size

    def pending(self) -> int:
        """Bytes the kernel has submitted to either ring that drain() has not consumed yet."""
        rings = (self._life,) if self._policy is None else (self._life, self._policy)
        return sum(int(r.prod[0]) - int(r.cons[0]) for r in rings)

    def interrupt(self) -> None:
        """End the current (or the next) wait(); safe from a signal handler or another thread."""
        os.eventfd_write(self._interrupt, 1)

    def drain(self, handle: Handler, limit: int = 1 << 30) -> int:
        """Hand every committed record to `handle` (a view valid only during the call), both rings
        merged in ktime order (module docstring)."""
        n = drain_rings(self._life, self._policy, handle, limit)
        self.received += n
        return n

    def close(self) -> None:
        self._epoll.close()
        os.close(self._interrupt)
        self._life.close()
        if self._policy is not None:
            self._policy.close()
