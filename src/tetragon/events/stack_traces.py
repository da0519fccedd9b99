"""Post's kernelStackTrace / userStackTrace: the return addresses a record carries after its argument
blobs (bpf/include/generic/stacks.h) symbolized into Tetragon's `kernel_stack_trace` /
`user_stack_trace` lists of StackTraceEntry {address, offset, symbol, module}.

Kernel addresses are looked up in /proc/kallsyms; user addresses in the process's mappings
(/proc/PID/maps, the file through /proc/PID/map_files so that another mount namespace's file is the
one read) and that ELF file's symbols (.symtab, else .dynsym). `address` is left out (0), as Tetragon
leaves it without --expose-stack-addresses. A frame that cannot be symbolized keeps its offset: into
its module (user), or the address itself (kernel, user without a mapping).
"""

from __future__ import annotations

import bisect
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tetragon.abi import events_h as L
from tetragon.events.decode import GEN_ARG_SIZE, GENERIC_HEAD_SIZE, unpack_gen_arg
from tetragon.jsontypes import Event

STACK_FLAGS = L.GEN_F_KSTACK | L.GEN_F_USTACK
PROC = Path("/proc")


def stack_blobs(buf: bytes, nargs: int, size: int) -> dict[int, list[int]]:
    """The stack blobs after the record's `nargs` argument blobs: kind -> return addresses."""
    pos = GENERIC_HEAD_SIZE
    for _ in range(nargs):
        if pos + GEN_ARG_SIZE > size:
            return {}
        pos += GEN_ARG_SIZE + unpack_gen_arg(buf, pos)[3]
    out: dict[int, list[int]] = {}
    while pos + GEN_ARG_SIZE <= size:
        kind, _, _, length = unpack_gen_arg(buf, pos)
        pos += GEN_ARG_SIZE
        if pos + length > size or kind not in (L.GEN_KIND_KSTACK, L.GEN_KIND_USTACK):
            break
        addrs = [a for (a,) in struct.iter_unpack("<Q", buf[pos : pos + length - length % 8])]
        out[kind] = addrs[: addrs.index(0)] if 0 in addrs else addrs
        pos += length
    return out


class KernelSymbols:
    """/proc/kallsyms, sorted by address (read on first use; again when an address is past its end,
    as a module loaded since would be, at most every RELOAD_S: with kptr_restrict every address reads
    as 0, and the file must not be read again for every frame)."""

    RELOAD_S = 10.0

    def __init__(self, path: Path = PROC / "kallsyms") -> None:
        self.path = path
        self._addrs: list[int] = []
        self._names: list[str] = []
        self._loaded_at = -self.RELOAD_S

    def _load(self) -> None:
        now = time.monotonic()
        if now - self._loaded_at < self.RELOAD_S:
            return
        self._loaded_at = now
        syms = []
        with open(self.path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] in "tTwW":
                    syms.append((int(parts[0], 16), parts[2]))
        syms.sort()
        self._addrs = [a for a, _ in syms]
        self._names = [n for _, n in syms]

    def entry(self, addr: int) -> Event:
        if not self._addrs or addr > self._addrs[-1] + (1 << 20):
            self._load()
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0 or self._addrs[i] == 0:
            return {"offset": str(addr)}
        offset = addr - self._addrs[i]
        return {"offset": str(offset), "symbol": self._names[i]} if offset else {"symbol": self._names[i]}


_ElfSymbols = tuple[list[tuple[int, int]], list[str], list[tuple[int, int, int]]]
_ELF_CACHE_SIZE = 64
# per file identity (device, inode, mtime, size), not per path: each process reaches libc through its
# own /proc/<pid>/map_files/<range>, and parsing it again per process stalled the pipeline
_elf_cache: dict[tuple[int, int, int, int], _ElfSymbols] = {}


def _elf_symbols_of(path: str) -> _ElfSymbols:
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    found = _elf_cache.pop(key, None)
    if found is None:
        found = _elf_symbols(path)
        if len(_elf_cache) >= _ELF_CACHE_SIZE:
            del _elf_cache[next(iter(_elf_cache))]  # the least recently used
    _elf_cache[key] = found
    return found


def _elf_symbols(path: str) -> _ElfSymbols:
    """Function symbols of an ELF file, sorted ((address, size), name), and its PT_LOAD segments
    (file offset, virtual address, file size): file offsets become symbol addresses through them."""
    from elftools.elf.elffile import ELFFile  # only when a user stack is rendered

    with open(path, "rb") as f:
        elf = ELFFile(f)
        loads = [
            (seg["p_offset"], seg["p_vaddr"], seg["p_filesz"])
            for seg in elf.iter_segments()
            if seg["p_type"] == "PT_LOAD"
        ]
        syms: list[tuple[int, int, str]] = []
        for name in (".symtab", ".dynsym"):
            table = elf.get_section_by_name(name)
            if table is None or not hasattr(table, "iter_symbols"):
                continue
            for sym in table.iter_symbols():
                if sym["st_info"]["type"] in ("STT_FUNC", "STT_GNU_IFUNC") and sym["st_value"] and sym.name:
                    syms.append((sym["st_value"], sym["st_size"], sym.name))
            if syms:
                break
    syms.sort()
    return [(a, s) for a, s, _ in syms], [n for _, _, n in syms], loads


def _elf_symbol(path: str, file_off: int) -> tuple[str, int] | None:
    """The function symbol holding a file offset of an ELF file, and the offset into it."""
    try:
        spans, names, loads = _elf_symbols_of(path)
    except Exception:  # not an ELF file, unreadable, gone: the frame keeps its module offset
        return None
    vaddr = next((file_off - off + va for off, va, size in loads if off <= file_off < off + size), file_off)
    i = bisect.bisect_right(spans, (vaddr, 1 << 64)) - 1
    if i < 0:
        return None
    start, size = spans[i]
    if size and vaddr >= start + size:
        return None
    return names[i], vaddr - start


def _mappings(pid: int, proc: Path) -> list[tuple[int, int, int, str]]:
    """(start, end, file offset, path) of the process's file mappings, by start address."""
    out: list[tuple[int, int, int, str]] = []
    try:
        text = (proc / str(pid) / "maps").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or not parts[5].startswith("/"):
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        out.append((start, end, int(parts[2], 16), parts[5]))
    return out


def user_stack(pid: int, addrs: list[int], proc: Path = PROC) -> list[Event]:
    maps = _mappings(pid, proc)
    starts = [m[0] for m in maps]
    out: list[Event] = []
    for addr in addrs:
        i = bisect.bisect_right(starts, addr) - 1
        if i < 0 or addr >= maps[i][1]:
            out.append({"offset": str(addr)})
            continue
        start, end, file_off, path = maps[i]
        offset = addr - start + file_off
        readable = proc / str(pid) / "map_files" / f"{start:x}-{end:x}"
        found = _elf_symbol(str(readable) if readable.exists() else path, offset)
        if found is None:
            out.append({"offset": str(offset), "module": path})
            continue
        name, into = found
        entry: Event = {"offset": str(into)} if into else {}
        entry.update(symbol=name, module=path)
        out.append(entry)
    return out


_KSYMS = KernelSymbols()
# ProcessKprobe's fields in order: the stack lists go after `action` and after `tags`
_BEFORE_KSTACK = ("process", "parent", "function_name", "args", "return", "action")
_BEFORE_USTACK = (*_BEFORE_KSTACK, "policy_name", "return_action", "message", "tags")


def with_stack_traces(
    event: Event, buf: bytes, nargs: int, size: int, pid: int, ksyms: Callable[[int], Event] = _KSYMS.entry
) -> Event:
    """A process_kprobe event with the record's stack traces in their places."""
    body: dict[str, Any] | None = event.get("process_kprobe")
    stacks = stack_blobs(buf, nargs, size)
    if body is None or not stacks:
        return event
    kernel = [ksyms(a) for a in stacks.get(L.GEN_KIND_KSTACK, [])]
    user = user_stack(pid, stacks[L.GEN_KIND_USTACK]) if L.GEN_KIND_USTACK in stacks else []
    out: dict[str, Any] = {}
    for key, value in body.items():
        if kernel and key not in _BEFORE_KSTACK:
            out["kernel_stack_trace"], kernel = kernel, []
        if user and key not in _BEFORE_USTACK:
            out["user_stack_trace"], user = user, []
        out[key] = value
    if kernel:
        out["kernel_stack_trace"] = kernel
    if user:
        out["user_stack_trace"] = user
    event["process_kprobe"] = out
    return event
