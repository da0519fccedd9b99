"""Base sensor: loads bpf/process.bpf.c, attaches its tracepoints, owns the event ring buffers (the
process lifecycle ring it writes, the policy ring the generic sensors write) and their reader."""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from types import TracebackType

from tetragon.abi import events_h as L
from tetragon.abi.generic_cfg_h import GEN_BIN_LEN, GenProc
from tetragon.bpf.libbpf import BpfError, BpfObject
from tetragon.bpf.ringbuf import RingBufferReader

log = logging.getLogger(__name__)

OBJ_DIR = Path(__file__).resolve().parent.parent / "_bpfobj"
PROGRAMS = ("tg_process_exec", "tg_process_fork", "tg_process_exit")
DEFAULT_RB_SIZE = 8 * 1024 * 1024
# each is --rb-size bytes: a policy's volume never takes room from the process lifecycle records
LIFECYCLE_RING, POLICY_RING = "tg_rb_events", "tg_rb_policy"
MAX_WAKEUP_BYTES = 256 * 1024


def ring_size(requested: int) -> int:
    """Each ring's size from --rb-size in bytes: 0 = default; otherwise rounded up to a power of two of at
    least one page. Tetragon's one ring is --rb-size-total (or --rb-size per CPU); here there are two
    rings of this size, so the kernel memory for events is twice it."""
    if requested <= 0:
        return DEFAULT_RB_SIZE
    size = 4096
    while size < requested:
        size <<= 1
    return size


class BaseSensor:
    """Owns the base object, its three links, both rings and their reader; close() undoes all of it."""

    name = "__base__"

    def __init__(self, rb_size: int = 0, obj_path: Path | None = None, btf_path: str | None = None) -> None:
        path = obj_path or OBJ_DIR / "process.bpf.o"
        if not path.exists():
            raise BpfError(f"BPF object {path} is missing: build it with `make -C bpf` (pip install does it)")
        self.obj = BpfObject(path, btf_path=btf_path)
        self.reader: RingBufferReader | None = None
        try:
            size = ring_size(rb_size)
            for ring in (LIFECYCLE_RING, POLICY_RING):
                self.obj.map(ring).set_max_entries(size)
            self.obj.set_global(
                ".rodata", "tg_wakeup_bytes", struct.pack("<Q", min(MAX_WAKEUP_BYTES, size // 4))
            )
            self.obj.load()
            for prog in PROGRAMS:
                self.obj.attach(prog)
            self.reader = RingBufferReader(self.obj.map(LIFECYCLE_RING), self.obj.map(POLICY_RING))
        except BaseException:
            self.obj.close()
            raise
        self._stats_map = self.obj.map("tg_stats")

    def stats(self) -> dict[int, int]:
        """Kernel-side counters (layout.STAT_*), summed over CPUs."""
        out: dict[int, int] = {}
        for slot in L.STAT_NAMES:
            per_cpu = self._stats_map.lookup_percpu(struct.pack("<I", slot))
            out[slot] = sum(struct.unpack("<Q", v)[0] for v in per_cpu)
        return out

    def sent(self) -> int:
        """Records the kernel put in either ring."""
        s = self.stats()
        return s[L.STAT_EXEC_SENT] + s[L.STAT_EXIT_SENT] + s[L.STAT_CLONE_SENT] + s[L.STAT_GENERIC_SENT]

    def lost(self) -> int:
        """Records that found no room in their ring: lifecycle ones (its own volume) and policy ones."""
        s = self.stats()
        return s[L.STAT_EXEC_LOST] + s[L.STAT_EXIT_LOST] + s[L.STAT_CLONE_LOST] + s[L.STAT_GENERIC_LOST]

    def shared_maps(self) -> dict[str, int]:
        """fds of the maps the generic sensors reuse: both rings (they write only the policy ring; the
        lifecycle ring is in their object too, and reusing it keeps libbpf from making another),
        counters, process map."""
        names = (LIFECYCLE_RING, POLICY_RING, "tg_stats", "tg_execve_map")
        return {name: self.obj.map(name).fd for name in names}

    def seed_process(
        self, pid: int, ppid: int, nspid: int, binary: str, ns: tuple[int, ...], cap_eff: int
    ) -> None:
        """tg_execve_map entry for a process that was running before the agent (from /proc)."""
        proc = GenProc(ppid=ppid, exec_pid=pid, nspid=nspid, exec_nspid=nspid, cap_effective=cap_eff)
        for i, inum in enumerate(ns[:10]):
            proc.ns[i] = inum
        raw = binary.encode()[: GEN_BIN_LEN - 1]
        proc.bin = raw
        proc.bin_len = len(raw)
        try:
            self.obj.map("tg_execve_map").update(struct.pack("<I", pid), bytes(proc), 1)  # BPF_NOEXIST
        except BpfError as exc:
            if exc.errno != 17:  # EEXIST: it exec'd since the sensor attached, the kernel's entry is newer
                raise

    def detach(self) -> None:
        """Stop the producers: after this, `sent()` no longer grows and one drain reads the rest."""
        self.obj.detach()

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        self.obj.close()

    def __enter__(self) -> BaseSensor:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
