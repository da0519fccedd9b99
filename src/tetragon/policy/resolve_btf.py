"""The kernel's BTF, read through libbpf (btf__parse), for what `resolve` needs: a function's
parameters, struct and union members, pointers, arrays, integers, and names for messages.

Only what the path compiler (policy/compile/resolve.py) asks is decoded; the parsed BTF is freed when
the reader is garbage-collected (one reader per compiled policy).
"""

from __future__ import annotations

import ctypes
import os
import weakref
from dataclasses import dataclass

from tetragon.bpf.libbpf_bindings import BtfType, errno_value, lib

DEFAULT_BTF = "/sys/kernel/btf/vmlinux"

# BTF_KIND_* (include/uapi/linux/btf.h)
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, FLOAT, TYPE_TAG, ENUM64 = 9, 10, 11, 12, 13, 16, 18, 19
MODIFIERS = frozenset({TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG})
_INT_SIGNED = 1  # BTF_INT_SIGNED in the encoding bits


class _U32x3(ctypes.Structure):
    _fields_ = [("a", ctypes.c_uint32), ("b", ctypes.c_uint32), ("c", ctypes.c_uint32)]


@dataclass(frozen=True)
class Member:
    name: str
    type_id: int
    bit_offset: int
    bitfield: bool


class BtfError(Exception):
    pass


class KernelBtf:
    """One parsed BTF file (raw BTF such as /sys/kernel/btf/vmlinux, or an ELF file with .BTF)."""

    def __init__(self, path: str = DEFAULT_BTF) -> None:
        lb = lib()
        ptr = lb.btf__parse(path.encode(), None)
        if not ptr:
            raise BtfError(f"cannot read the kernel's BTF ({path}: {os.strerror(errno_value() or 2)})")
        self.path = path
        self._lb = lb
        self._btf = ptr
        weakref.finalize(self, lb.btf__free, ptr)

    def _type(self, tid: int) -> BtfType:
        addr = self._lb.btf__type_by_id(self._btf, tid)
        if not addr:
            raise BtfError(f"no BTF type {tid} in {self.path}")
        return BtfType.from_address(addr)

    def _extra(self, tid: int) -> int:
        """Address of what follows type tid's struct btf_type (members, params, array or int info)."""
        return int(self._lb.btf__type_by_id(self._btf, tid)) + ctypes.sizeof(BtfType)

    def _name(self, off: int) -> str:
        name = self._lb.btf__name_by_offset(self._btf, off)
        return name.decode() if name else ""

    def kind(self, tid: int) -> int:
        return 0 if tid == 0 else (self._type(tid).info >> 24) & 0x1F

    def name(self, tid: int) -> str:
        return "" if tid == 0 else self._name(self._type(tid).name_off)

    def size(self, tid: int) -> int:
        """Byte size of a struct, union, integer, enum or float (0 for other kinds)."""
        return self._type(tid).size if self.kind(tid) in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT) else 0

    def target(self, tid: int) -> int:
        """The type a pointer, typedef or modifier refers to."""
        return self._type(tid).size  # the btf_type's size/type union

    def strip(self, tid: int) -> int:
        """tid through typedefs and const/volatile/restrict/type tags."""
        for _ in range(64):
            if self.kind(tid) not in MODIFIERS:
                return tid
            tid = self.target(tid)
        raise BtfError(f"BTF type chain too long at {tid}")

    def find_func(self, name: str) -> int:
        """The FUNC type of kernel function `name`, or 0."""
        tid = self._lb.btf__find_by_name_kind(self._btf, name.encode(), FUNC)
        return int(tid) if tid > 0 else 0

    def find_struct(self, name: str) -> int:
        tid = self._lb.btf__find_by_name_kind(self._btf, name.encode(), STRUCT)
        return int(tid) if tid > 0 else 0

    def params(self, func_id: int) -> list[tuple[str, int]]:
        """(name, type id) of each parameter of FUNC func_id."""
        proto = self.target(func_id)
        vlen = self._type(proto).info & 0xFFFF
        pairs = (ctypes.c_uint32 * (2 * vlen)).from_address(self._extra(proto))
        return [(self._name(pairs[2 * k]), pairs[2 * k + 1]) for k in range(vlen)]

    def members(self, tid: int) -> list[Member]:
        t = self._type(tid)
        vlen, kind_flag = t.info & 0xFFFF, bool(t.info >> 31)
        rows = (_U32x3 * vlen).from_address(self._extra(tid))
        out = []
        for r in rows:
            bits = r.c & 0xFFFFFF if kind_flag else r.c
            bitfield = kind_flag and (r.c >> 24) != 0
            out.append(Member(self._name(r.a), r.b, bits, bitfield))
        return out

    def array(self, tid: int) -> tuple[int, int]:
        """(element type id, number of elements) of an ARRAY."""
        info = _U32x3.from_address(self._extra(tid))  # struct btf_array: type, index_type, nelems
        return info.a, info.c

    def int_signed(self, tid: int) -> bool:
        if self.kind(tid) == INT:
            return bool((ctypes.c_uint32.from_address(self._extra(tid)).value >> 24) & _INT_SIGNED)
        if self.kind(tid) in (ENUM, ENUM64):
            return bool(self._type(tid).info >> 31)  # kind_flag: a signed enum
        return False

    def describe(self, tid: int) -> str:
        """A C-like name for messages: `struct task_struct`, `char[16]`, `int *`."""
        kind = self.kind(tid)
        if tid == 0:
            return "void"
        if kind == PTR:
            return f"{self.describe(self.target(tid))} *"
        if kind == ARRAY:
            elem, n = self.array(tid)
            return f"{self.describe(elem)}[{n}]"
        if kind in MODIFIERS and kind != TYPEDEF:
            return self.describe(self.target(tid))
        prefix = {STRUCT: "struct ", UNION: "union ", ENUM: "enum ", ENUM64: "enum ", FWD: "struct "}
        return prefix.get(kind, "") + (self.name(tid) or "(anon)")
