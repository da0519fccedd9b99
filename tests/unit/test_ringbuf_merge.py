"""The two-ring reader's order (src/tetragon/bpf/ringbuf.py) on rings laid out in plain buffers as the
kernel lays them out: 8-byte headers with BUSY/DISCARD bits, records starting with msg_common."""

from __future__ import annotations

import struct

from tetragon.bpf.ringbuf import Ring, drain_rings

BUSY, DISCARD = 1 << 31, 1 << 30
EXEC, EXIT, POLICY = 5, 7, 14


class FakeRing:
    """A ring in bytearrays; records are appended at the producer position, as the kernel reserves."""

    def __init__(self, size: int = 4096) -> None:
        self.cons = bytearray(8)
        self.prod = bytearray(8)
        self.size = size
        self.data = bytearray(size)  # mapped once, as the reader maps it: records wrap at the end
        self.ring = Ring(memoryview(self.cons), memoryview(self.prod), memoryview(self.data), size)

    def _write(self, pos: int, raw: bytes) -> None:
        for i, byte in enumerate(raw):
            self.data[(pos + i) % self.size] = byte

    def put(self, op: int, ktime: int, tag: int, flags: int = 0, pad: int = 0) -> int:
        """A record (msg_common + an 8-byte tag + `pad` bytes) at the producer position; returns its
        header's position."""
        pos = struct.unpack("<Q", self.prod)[0]
        body = struct.pack("<BBxxIQQ", op, 0, 24 + pad, ktime, tag) + bytes(range(pad))
        self._write(pos, struct.pack("<II", len(body) | flags, 0) + body)
        self.prod[:] = struct.pack("<Q", pos + ((8 + len(body) + 7) & ~7))
        return pos

    def commit(self, pos: int) -> None:
        off = pos % self.size
        length = struct.unpack_from("<I", self.data, off)[0]
        struct.pack_into("<I", self.data, off, length & ~BUSY)

    @property
    def consumed(self) -> int:
        return int(struct.unpack("<Q", self.cons)[0])

    @property
    def produced(self) -> int:
        return int(struct.unpack("<Q", self.prod)[0])


def drain(life: FakeRing, policy: FakeRing | None, limit: int = 1 << 30) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []

    def handle(rec: memoryview) -> None:
        op, size, ktime, tag = rec[0], *struct.unpack_from("<IQQ", rec, 4)
        assert len(rec) == size and bytes(rec[24:]) == bytes(range(size - 24))  # whole, also wrapped
        out.append((op, ktime, tag))

    n = drain_rings(life.ring, policy.ring if policy is not None else None, handle, limit)
    assert n == len(out)
    return out


def test_records_of_both_rings_come_in_ktime_order() -> None:
    life, policy = FakeRing(), FakeRing()
    life.put(EXEC, 10, 1)
    policy.put(POLICY, 5, 2)  # before the exec (the old image's open)
    policy.put(POLICY, 11, 3)  # after it: must find the exec in the cache
    policy.put(POLICY, 12, 4)
    life.put(EXIT, 13, 5)  # after every open of the process
    policy.put(POLICY, 20, 6)
    assert [tag for _, _, tag in drain(life, policy)] == [2, 1, 3, 4, 5, 6]
    assert (life.consumed, policy.consumed) == (life.produced, policy.produced)
    assert drain(life, policy) == []


def test_a_ring_alone_keeps_its_own_order() -> None:
    """With the other ring empty, records go in ring (reservation) order even where ktimes are not
    monotonic (CPUs reserve in a different order than they read their clocks)."""
    life, policy = FakeRing(), FakeRing()
    for tag, ktime in enumerate((30, 10, 20)):
        policy.put(POLICY, ktime, tag)
    assert [tag for _, _, tag in drain(life, policy)] == [0, 1, 2]
    for tag, ktime in enumerate((7, 3)):
        life.put(EXEC, ktime, tag)
    assert [tag for _, _, tag in drain(life, policy)] == [0, 1]


def test_a_busy_head_stops_the_drain_until_it_is_committed() -> None:
    """A record still being written may precede anything in the other ring: nothing passes it."""
    life, policy = FakeRing(), FakeRing()
    busy = life.put(EXEC, 10, 1, flags=BUSY)
    policy.put(POLICY, 11, 2)
    assert drain(life, policy) == []
    assert policy.consumed == 0
    life.commit(busy)
    assert [tag for _, _, tag in drain(life, policy)] == [1, 2]


def test_a_busy_record_in_the_policy_ring_ends_the_chunk_after_the_records_before_it() -> None:
    life, policy = FakeRing(), FakeRing()
    policy.put(POLICY, 1, 1)
    busy = policy.put(POLICY, 2, 2, flags=BUSY)
    policy.put(POLICY, 3, 3)
    assert [tag for _, _, tag in drain(life, policy)] == [1]
    policy.commit(busy)
    assert [tag for _, _, tag in drain(life, policy)] == [2, 3]


def test_discarded_records_are_skipped_in_both_rings() -> None:
    life, policy = FakeRing(), FakeRing()
    life.put(EXEC, 1, 1, flags=DISCARD)
    life.put(EXEC, 4, 2)
    policy.put(POLICY, 2, 3, flags=DISCARD)
    policy.put(POLICY, 3, 4)
    assert [tag for _, _, tag in drain(life, policy)] == [4, 2]
    assert (life.consumed, policy.consumed) == (life.produced, policy.produced)


def test_limit_and_one_ring() -> None:
    life, policy = FakeRing(), FakeRing()
    for tag in range(5):
        life.put(EXEC, tag, tag)
        policy.put(POLICY, tag, 10 + tag)
    assert [tag for _, _, tag in drain(life, policy, limit=3)] == [0, 10, 1]
    assert [tag for _, _, tag in drain(life, policy)] == [11, 2, 12, 3, 13, 4, 14]
    alone = FakeRing()
    alone.put(EXEC, 2, 1)
    alone.put(EXIT, 1, 2)
    assert [tag for _, _, tag in drain(alone, None)] == [1, 2]


def test_records_that_wrap_around_the_end_arrive_whole() -> None:
    """The data area is mapped once: a record (or just its body, its header being the last 8 bytes)
    that runs past the end is copied together from both ends, alone and in the merge."""
    life, policy = FakeRing(256), FakeRing(256)
    for ring in (life, policy):  # consumed up to where the next record starts near the end
        start = 256 - 40 if ring is life else 256 - 8
        ring.prod[:] = ring.cons[:] = struct.pack("<Q", start)
    life.put(EXEC, 10, 1, pad=50)  # header at 216, body 216+8..216+82: wraps
    policy.put(POLICY, 11, 2, pad=30)  # header at 248 (the last 8 bytes), body from 0
    policy.put(POLICY, 12, 3, pad=7)
    assert [(op, tag) for op, _, tag in drain(life, policy)] == [(EXEC, 1), (POLICY, 2), (POLICY, 3)]
    life.put(EXIT, 13, 4, pad=200)  # alone, longer than what is left before the end
    assert [(op, tag) for op, _, tag in drain(life, None)] == [(EXIT, 4)]
    assert (life.consumed, policy.consumed) == (life.produced, policy.produced)
