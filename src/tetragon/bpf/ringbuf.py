"""BPF ring buffer consumer that walks the shared mapping directly (no libbpf callback).

Layout (kernel/bpf/ringbuf.c): page 0 = consumer position (read-write for us), page 1 = producer
position, then the data area mapped twice so a record that wraps is contiguous. Each record has an
8-byte header: u32 length with BUSY (bit 31) and DISCARD (bit 30) flags, u32 page offset.

The producer side (bpf/include/ringbuf.h) submits with BPF_RB_NO_WAKEUP and forces a wake-up only
for the first record into an empty ring and when the pending data crosses a threshold; the agent
batches the rest on a timer (Agent.run). The consumer
position is published with a native 8-byte store through a memoryview: struct.pack_into zeroes the
destination first, and a momentary consumer_pos of 0 makes the kernel see a full ring.

x86-only memory ordering: libbpf reads producer_pos and a record header with smp_load_acquire and
publishes consumer_pos with smp_store_release. Here they are plain loads and stores through
memoryviews, which x86-64's total store order makes enough: a load is not reordered with an older
load (the record's bytes are read after the producer_pos and header that cover them) and a store not
with an older load (consumer_pos moves only after the record was read). Weaker architectures (arm64)
need acquire/release barriers, which Python cannot issue: there, this reader must go native (or use
libbpf's ring_buffer__consume).
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


class RingBufferReader:
    def __init__(self, ring: Map) -> None:
        self.size = ring.max_entries
        if self.size & (self.size - 1):
            raise ValueError(f"ring buffer size {self.size} is not a power of two")
        self._mask = self.size - 1
        page = mmap.PAGESIZE
        fd = ring.fd
        self._cons_mm = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod_mm = mmap.mmap(fd, page + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._cons = memoryview(self._cons_mm).cast("Q")
        self._prod = memoryview(self._prod_mm)[:8].cast("Q")
        self._data = memoryview(self._prod_mm)[page:]
        self._hdr = self._data.cast("I")  # record headers are 8-byte aligned
        self._epoll = select.epoll()
        # edge-triggered: wait() returns at each kernel wake-up, not for as long as records are pending
        self._epoll.register(fd, select.EPOLLIN | select.EPOLLET)
        # interrupt() ends a wait early (the agent's timer may be backed off to a second)
        self._interrupt = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._interrupt, select.EPOLLIN)
        self.received = 0

    def wait(self, timeout: float) -> None:
        """Block until the kernel forces a wake-up, interrupt() is called or `timeout` seconds pass."""
        for fd, _ in self._epoll.poll(timeout):
            if fd == self._interrupt:
                os.eventfd_read(self._interrupt)

    def pending(self) -> int:
        """Bytes the kernel has submitted that drain() has not consumed yet."""
        return int(self._prod[0]) - int(self._cons[0])

    def interrupt(self) -> None:
        """End the current (or the next) wait(); safe from a signal handler or another thread."""
        os.eventfd_write(self._interrupt, 1)

    def drain(self, handle: Callable[[memoryview], None], limit: int = 1 << 30) -> int:
        """Hand every committed record to `handle` (a view valid only during the call)."""
        cons_pos = self._cons
        prod_pos = self._prod
        cons = int(cons_pos[0])
        prod = int(prod_pos[0])
        mask = self._mask
        data = self._data
        hdr = self._hdr
        n = 0
        while cons < prod and n < limit:
            off = cons & mask
            length = hdr[off >> 2]  # acquire-ordered on x86 only (module docstring)
            if length & _BUSY:
                break
            rlen = length & _LEN_MASK
            if not length & _DISCARD:
                start = off + _HDR
                handle(data[start : start + rlen])
                n += 1
            cons += (rlen + _HDR + 7) & ~7
            cons_pos[0] = cons  # release-ordered on x86 only
            if cons >= prod:
                prod = int(prod_pos[0])  # acquire-ordered on x86 only
        self.received += n
        return n

    def close(self) -> None:
        self._epoll.close()
        os.close(self._interrupt)
        for view in (self._hdr, self._data, self._prod, self._cons):
            view.release()
        self._prod_mm.close()
        self._cons_mm.close()
