"""USDT probes of an ELF file: its `.note.stapsdt` notes and their argument specs (x86-64).

A SystemTap SDT note (sys/sdt.h, note type 3, owner "stapsdt") names a probe point: its address,
the link-time address of the `.stapsdt.base` section (to undo prelinking), the address of its
semaphore (0 = none) and the provider, name and argument spec, e.g. `-4@%edi 8@-8(%rbp) -4@$-9`.
A uprobe attaches at the probe's file offset; the kernel increments the semaphore (uprobe
ref_ctr_offset, also a file offset) while the probe is attached, as libbpf's USDT support does.

Each argument is `SIZE@OPERAND` (a negative size is a signed value): a constant (`$-9`), a
register (`%edi`), memory at a register plus a displacement (`-8(%rbp)`), or scale-index-base
memory (`-96(%rbp,%rax,8)`). Registers are recorded as their offset in x86-64's struct pt_regs,
which is where the BPF program reads them (bpf/include/generic/usdt.h).
"""

from __future__ import annotations

import os
import re
import stat
import struct
from dataclasses import dataclass

from tetragon.abi import usdt_h as U

NT_STAPSDT = 3
_PT_LOAD = 1

# x86-64 struct pt_regs: the byte offset of each register, under every name a USDT operand uses
_PT_REGS = {
    "r15": 0,
    "r14": 8,
    "r13": 16,
    "r12": 24,
    "rbp": 32,
    "rbx": 40,
    "r11": 48,
    "r10": 56,
    "r9": 64,
    "r8": 72,
    "rax": 80,
    "rcx": 88,
    "rdx": 96,
    "rsi": 104,
    "rdi": 112,
    "rip": 128,
    "rsp": 152,
}
_LEGACY = {
    "ax": "rax",
    "bx": "rbx",
    "cx": "rcx",
    "dx": "rdx",
    "si": "rsi",
    "di": "rdi",
    "bp": "rbp",
    "sp": "rsp",
}


def register_offset(name: str) -> int:
    """offsetof(struct pt_regs, <the 64-bit register that `name` is part of>), e.g. edi -> rdi."""
    if name in _PT_REGS:
        return _PT_REGS[name]
    m = re.fullmatch(r"(r(?:8|9|1[0-5]))[dwb]", name)
    if m:
        return _PT_REGS[m.group(1)]
    base = name[1:] if len(name) == 3 and name[0] == "e" else name
    if base in _LEGACY:
        return _PT_REGS[_LEGACY[base]]
    low = {"al": "ax", "bl": "bx", "cl": "cx", "dl": "dx", "sil": "si", "dil": "di", "bpl": "bp", "spl": "sp"}
    if name in low:
        return _PT_REGS[_LEGACY[low[name]]]
    if name[1:] == "h" and name[0] in "abcd":
        raise ValueError(f"register %{name} (the second byte of a register) is not supported")
    raise ValueError(f"unknown x86-64 register %{name}")


@dataclass(frozen=True)
class UsdtArg:
    """One argument of a probe: where it is (U.ARG_*), its size in bytes and signedness."""

    kind: int
    size: int
    signed: bool
    reg_off: int = 0  # REG / REG_DEREF / SIB: base register
    val_off: int = 0  # CONST: the value; REG_DEREF / SIB: the displacement
    idx_reg_off: int = 0  # SIB: index register
    scale_shift: int = 0  # SIB: log2 of the scale

    def cfg(self) -> U.UsdtArgCfg:
        return U.UsdtArgCfg(
            kind=self.kind,
            size=self.size,
            is_signed=int(self.signed),
            scale_shift=self.scale_shift,
            reg_off=self.reg_off,
            idx_reg_off=self.idx_reg_off,
            val_off=self.val_off,
        )


_SIB = re.compile(r"(-?\d+)?\(%(\w+),%(\w+),(\d)\)")
_DEREF = re.compile(r"(-?\d+)?\(%(\w+)\)")


def parse_arg(spec: str) -> UsdtArg:
    """One `SIZE@OPERAND` of an x86-64 argument spec; ValueError for what cannot be read."""
    size_s, sep, operand = spec.partition("@")
    if not sep or not re.fullmatch(r"-?\d+", size_s):
        raise ValueError(f"USDT argument {spec!r} has no SIZE@ prefix")
    size, signed = abs(int(size_s)), size_s.startswith("-")
    if size not in (1, 2, 4, 8):
        raise ValueError(f"USDT argument {spec!r}: size {size} is not 1, 2, 4 or 8")
    if operand.startswith("$"):
        if not re.fullmatch(r"-?\d+", operand[1:]):
            raise ValueError(f"USDT argument {spec!r}: constant {operand[1:]!r} is not a number")
        return UsdtArg(U.ARG_CONST, size, signed, val_off=int(operand[1:]))
    if operand.startswith("%"):
        return UsdtArg(U.ARG_REG, size, signed, reg_off=register_offset(operand[1:]))
    m = _SIB.fullmatch(operand)
    if m:
        scale = int(m.group(4))
        if scale not in (1, 2, 4, 8):
            raise ValueError(f"USDT argument {spec!r}: scale {scale} is not 1, 2, 4 or 8")
        return UsdtArg(
            U.ARG_SIB,
            size,
            signed,
            reg_off=register_offset(m.group(2)),
            val_off=int(m.group(1) or 0),
            idx_reg_off=register_offset(m.group(3)),
            scale_shift=scale.bit_length() - 1,
        )
    m = _DEREF.fullmatch(operand)
    if m:
        if m.group(2) == "rip":
            raise ValueError(f"USDT argument {spec!r}: %rip-relative operands are not supported")
        return UsdtArg(
            U.ARG_REG_DEREF, size, signed, reg_off=register_offset(m.group(2)), val_off=int(m.group(1) or 0)
        )
    raise ValueError(f"USDT argument {spec!r}: operand {operand!r} is not understood")


def parse_args(spec: str) -> list[UsdtArg]:
    """A probe's argument spec string: arguments separated by blanks."""
    return [parse_arg(a) for a in spec.split()]


@dataclass(frozen=True)
class UsdtNote:
    """One probe point as its note says, addresses already adjusted for prelinking."""

    provider: str
    name: str
    pc: int  # virtual address of the probe's nop
    semaphore: int  # virtual address of its semaphore (unsigned short), 0 = none
    args: str  # the argument spec string


@dataclass(frozen=True)
class UsdtSite:
    """A probe point where a uprobe attaches: file offsets, and the parsed arguments."""

    provider: str
    name: str
    offset: int  # file offset of the probe point
    ref_ctr_offset: int  # file offset of its semaphore, 0 = none
    args: tuple[UsdtArg, ...]


class ElfError(ValueError):
    pass


@dataclass(frozen=True)
class _Elf:
    sections: dict[str, tuple[int, int, int]]  # name -> (addr, file offset, size)
    loads: list[tuple[int, int, int]]  # PT_LOAD: (vaddr, file offset, file size)


def _read_elf(data: bytes) -> _Elf:
    if data[:4] != b"\x7fELF":
        raise ElfError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ElfError("not a 64-bit little-endian ELF file (USDT probes are read for x86-64 only)")
    (e_phoff, e_shoff) = struct.unpack_from("<QQ", data, 0x20)
    (e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx) = struct.unpack_from("<HHHHH", data, 0x36)
    loads = []
    for i in range(e_phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, e_phoff + i * e_phentsize
        )
        if p_type == _PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
    raw = [struct.unpack_from("<IIQQQQ", data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    sections: dict[str, tuple[int, int, int]] = {}
    if raw and e_shstrndx < len(raw):
        strtab = raw[e_shstrndx][4]
        for sh_name, _type, _flags, sh_addr, sh_offset, sh_size in raw:
            end = data.index(b"\0", strtab + sh_name)
            sections[data[strtab + sh_name : end].decode(errors="replace")] = (sh_addr, sh_offset, sh_size)
    return _Elf(sections, loads)


def _cstr(desc: bytes, pos: int) -> tuple[str, int]:
    end = desc.index(b"\0", pos)
    return desc[pos:end].decode(errors="replace"), end + 1


def read_notes(data: bytes) -> list[UsdtNote]:
    """Every probe note of an ELF image, addresses adjusted as sys/sdt.h says: when `.stapsdt.base`
    is not where the note says it was at link time (prelink), pc and semaphore move by the difference."""
    elf = _read_elf(data)
    note = elf.sections.get(".note.stapsdt")
    if note is None:
        return []
    base = elf.sections.get(".stapsdt.base")
    pos, end = note[1], note[1] + note[2]
    out: list[UsdtNote] = []
    while pos + 12 <= end:
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        name_at = pos + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        pos = desc_at + ((descsz + 3) & ~3)
        if ntype != NT_STAPSDT or data[name_at : name_at + namesz].rstrip(b"\0") != b"stapsdt":
            continue
        desc = data[desc_at : desc_at + descsz]
        pc, link_base, sema = struct.unpack_from("<QQQ", desc, 0)
        provider, p = _cstr(desc, 24)
        name, p = _cstr(desc, p)
        args, _ = _cstr(desc, p) if p < len(desc) else ("", p)
        if base is not None and link_base:
            pc += base[0] - link_base
            if sema:
                sema += base[0] - link_base
        out.append(UsdtNote(provider, name, pc, sema, args))
    return out


def _file_offset(elf: _Elf, vaddr: int, what: str) -> int:
    for seg_vaddr, seg_off, seg_size in elf.loads:
        if seg_vaddr <= vaddr < seg_vaddr + seg_size:
            return vaddr - seg_vaddr + seg_off
    raise ElfError(f"{what} address {vaddr:#x} is in no loaded segment")


ELF_MAX_BYTES = 1 << 30  # a larger "binary" is refused rather than read into the agent's memory


def read_elf_file(path: str) -> bytes:
    """The bytes of a regular file of at most ELF_MAX_BYTES. Opened without blocking (a FIFO must not
    hang the policy lock) and checked with fstat before anything is read (no /dev/zero)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ElfError("not a regular file")
        if st.st_size > ELF_MAX_BYTES:
            raise ElfError(f"larger than {ELF_MAX_BYTES >> 20} MiB")
        return f.read(ELF_MAX_BYTES + 1)


def find_sites(path: str, provider: str, name: str) -> list[UsdtSite]:
    """The probe points of provider:name in the ELF file at `path` ([] when it has none); OSError
    when the file cannot be read, ElfError when it is no usable ELF file (truncated or malformed
    headers included: they raise ElfError, never struct.error or IndexError)."""
    data = read_elf_file(path)
    try:
        return _sites_of(data, provider, name)
    except (struct.error, IndexError) as exc:
        raise ElfError(f"truncated or malformed ELF file ({exc})") from None


def _sites_of(data: bytes, provider: str, name: str) -> list[UsdtSite]:
    elf = _read_elf(data)
    sites = []
    for n in read_notes(data):
        if n.provider != provider or n.name != name:
            continue
        offset = _file_offset(elf, n.pc, f"probe {provider}:{name}")
        sema = _file_offset(elf, n.semaphore, f"semaphore of {provider}:{name}") if n.semaphore else 0
        sites.append(UsdtSite(provider, name, offset, sema, tuple(parse_args(n.args))))
    return sites
