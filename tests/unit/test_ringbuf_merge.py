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
        self.data = bytearray(2 * size)
        self.ring = Ring(memoryview(self.cons), memoryview(self.prod), memoryview(self.data), size)

    def put(self, op: int, ktime: int, tag: int, flags: int = 0) -> int:
        """A record (msg_common + an 8-byte tag) at the producer position; returns its header offset."""
        pos = struct.unpack("<Q", self.prod)[0]
        body = struct.pack("<BBxxIQQ", op, 0, 24, ktime, tag)
        struct.pack_into("<II", self.data, pos, len(body) | flags, 0)
        self.data[pos + 8 : pos + 8 + len(body)] = body
        self.prod[:] = struct.pack("<Q", pos + 8 + len(body))
        return pos

    def commit(self, pos: int) -> None:
        length = struct.unpack_from("<I", self.data, pos)[0]
        struct.pack_into("<I", self.data, pos, length & ~BUSY)

    @property
    def consumed(self) -> int:
        return int(struct.unpack("<Q", self.cons)[0])

    @property
    def produced(self) -> int:
        return int(struct.unpack("<Q", self.prod)[0])


def drain(life: FakeRing, policy: FakeRing | None, limit: int = 1 << 30) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []

    def handle(rec: memoryview) -> None:
        op, ktime, tag = rec[0], *struct.unpack_from("<QQ", rec, 8)
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
