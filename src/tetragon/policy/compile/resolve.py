"""`resolve` on a hook argument: a BTF field path from the struct the argument points to (e.g.
`mm.owner.real_parent.comm` from bprm_check_security's struct linux_binprm *), compiled at load time
against the running kernel's BTF into the steps of bpf/include/generic/resolve.h: add an offset, and
read the pointer there when the field is one. The last field is read as the argument's `type` says:
an integer field of its size, a pointer field's value, or an array's or embedded struct's address.

Served where the argument has a kernel type in BTF: kernel functions (kprobes, fmod_ret), LSM hooks
(bpf_lsm_<hook>) and raw tracepoints (`__bpf_trace_<event>`, whose first parameter is the tracepoint's
data pointer), as Tetragon does. As in Tetragon, a last field whose type is named like an argument
type (struct file, struct path, int, ...) is read as that type; `[n]` indexes an array or a pointer;
anonymous struct and union members are searched through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tetragon.abi import generic_cfg_h as G
from tetragon.abi.resolve_h import RESOLVE_STEPS, ResolveArgs, ResolveCfg
from tetragon.policy.compile.args import INT_SIZES
from tetragon.policy.compile.plan import unsupported
from tetragon.policy.errors import PolicyError
from tetragon.policy.names import ARG_TYPES, INT_ARG_TYPES
from tetragon.policy.resolve_btf import (
    ARRAY,
    DEFAULT_BTF,
    ENUM,
    ENUM64,
    FWD,
    INT,
    MODIFIERS,
    PTR,
    STRUCT,
    UNION,
    BtfError,
    KernelBtf,
    Member,
)
from tetragon.policy.schema import KProbeArg

_ELEMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\[\d+\]")
_INT_KINDS = (INT, ENUM, ENUM64)
# argument types whose value is an integer (the rest read kernel memory at a pointer)
_INTEGER_VALUED = INT_ARG_TYPES - {"auto"}
# integer argument types by (size, signed), for `type: auto`
_AUTO_INT = {(1, True): "int8", (2, True): "int16", (4, True): "int32", (8, True): "int64"} | {
    (1, False): "uint8",
    (2, False): "uint16",
    (4, False): "uint32",
    (8, False): "uint64",
}


@dataclass
class ResolvedArg:
    """An argument's path as resolve.h's steps, and the type its last field is read as."""

    arg_type: str
    steps: list[tuple[int, bool]] = field(default_factory=list)  # (offset, read the pointer there)
    last_size: int = 0  # the last field is an integer read of this many bytes
    last_signed: bool = False

    def cfg(self) -> ResolveCfg:
        out = ResolveCfg()
        out.nsteps = len(self.steps)
        out.last_size, out.last_signed = self.last_size, 1 if self.last_signed else 0
        for k, (off, deref) in enumerate(self.steps):
            out.step[k].off, out.step[k].deref = off, 1 if deref else 0
        return out


class BtfSource:
    """The kernel's BTF for one policy's compile: parsed when the first `resolve` needs it."""

    def __init__(self, path: str = DEFAULT_BTF) -> None:
        self.path = path
        self._btf: KernelBtf | None = None

    def get(self, where: str) -> KernelBtf:
        if self._btf is None:
            try:
                self._btf = KernelBtf(self.path)
            except BtfError as exc:
                raise unsupported(f"{where}.resolve: {exc}") from None
        return self._btf


@dataclass(frozen=True)
class ResolveRoot:
    """Where a hook's `resolve` paths start: BTF function `func`'s parameters from `shift` on are the
    hook's arguments; no `func`: the hook has no BTF-typed arguments, `why_not` says why."""

    func: str = ""
    shift: int = 0
    why_not: str = "its arguments have no kernel type in BTF"


class HookResolve:
    """The `resolve` paths of one hook's arguments, as its `resolve_args` read-only data."""

    def __init__(self, btf: BtfSource, root: ResolveRoot) -> None:
        self.btf, self.root = btf, root
        self.cfg = ResolveArgs()
        self.used = False

    def arg_type(self, i: int, arg: KProbeArg, t: str, where: str) -> str:
        """Compile argument i's path (if it has one); the type its last field is read as."""
        if not arg.resolve:
            return t
        if arg.source:
            raise unsupported(f"{where}.source: {arg.source} as the root of a resolve path is not supported")
        if not self.root.func:
            raise unsupported(
                f"{where}.resolve: BTF field paths start from kernel structs; {self.root.why_not}"
            )
        path = resolve_arg(
            self.btf.get(where), self.root.func, arg.index + self.root.shift, arg.index, arg, t, where
        )
        self.cfg[i] = path.cfg()
        self.used = True
        return path.arg_type

    def place(self, i: int, out: G.ArgCfg) -> None:
        """A resolved argument's raw value is the path's root pointer: all 8 bytes of it, unnarrowed
        (the last field's size and sign are resolve.h's)."""
        if self.cfg[i].nsteps:
            out.size, out.is_signed = 8, 0

    def rodata(self) -> dict[str, bytes]:
        return {"resolve_args": bytes(self.cfg)} if self.used else {}


def parse_path(path: str, where: str) -> list[str]:
    """`a.b[2].c` -> ["a", "b", "[2]", "c"]; PolicyError when it is not a field path."""
    parts: list[str] = []
    for dotted in path.split("."):
        found = _ELEMENT.findall(dotted)
        if not dotted or "".join(found) != dotted or dotted.startswith("["):
            raise PolicyError(f"{where}.resolve: {path!r} is not a field path (fields separated by '.')")
        parts.extend(found)
    return parts


def root_struct(btf: KernelBtf, func: str, index: int, shown: int, where: str) -> int:
    """The struct (or union) that parameter `index` of BTF function `func` points to."""
    fid = btf.find_func(func)
    if not fid:
        raise unsupported(f"{where}.resolve: {func} is not a function in the kernel's BTF ({btf.path})")
    params = btf.params(fid)
    if index >= len(params):
        raise PolicyError(f"{where}.resolve: {func} has no argument {shown}")
    ptr = btf.strip(params[index][1])
    target = btf.strip(btf.target(ptr)) if btf.kind(ptr) == PTR else 0
    if btf.kind(target) not in (STRUCT, UNION):
        raise PolicyError(
            f"{where}.resolve: argument {shown} of {func} is {btf.describe(params[index][1])}, "
            f"not a pointer to a struct"
        )
    return target


def _find_member(btf: KernelBtf, tid: int, name: str) -> Member | None:
    """Member `name` of a struct or union, also inside its anonymous members (offset from tid's start)."""
    for m in btf.members(tid):
        if m.name == name:
            return m
        inner = btf.strip(m.type_id)
        if not m.name and btf.kind(inner) in (STRUCT, UNION):
            found = _find_member(btf, inner, name)
            if found is not None:
                return Member(found.name, found.type_id, m.bit_offset + found.bit_offset, found.bitfield)
    return None


def _sizeof(btf: KernelBtf, tid: int) -> int:
    tid = btf.strip(tid)
    kind = btf.kind(tid)
    if kind == PTR:
        return 8
    if kind == ARRAY:
        elem, n = btf.array(tid)
        return _sizeof(btf, elem) * n
    return btf.size(tid)


def walk(btf: KernelBtf, root: int, path: str, where: str) -> tuple[list[tuple[int, bool]], int, int, int]:
    """The path from struct `root` as (offset, deref) steps, the offset into the last struct, and the
    last field's type id (through typedefs and qualifiers, and as declared). PolicyError names the field
    the walk stopped at."""
    steps: list[tuple[int, bool]] = []
    cur, raw, off, seen = root, root, 0, ""
    for part in parse_path(path, where):
        here = f"{where}.resolve {path!r}: {seen or 'the argument'}"
        kind = btf.kind(cur)
        if part.startswith("["):
            n = int(part[1:-1])
            if kind == ARRAY:
                elem, count = btf.array(cur)
                if n >= count:
                    raise PolicyError(f"{here} has {count} elements, index {n} is past them")
                off, raw = off + n * _sizeof(btf, elem), elem
            elif kind == PTR:
                steps.append((off, True))
                off, raw = n * _sizeof(btf, btf.target(cur)), btf.target(cur)
            else:
                raise PolicyError(f"{here} is {btf.describe(cur)}: not an array or pointer to index")
            cur = btf.strip(raw)
            seen += part
            continue
        if kind == PTR:  # a field of the struct a pointer points to: read the pointer first
            steps.append((off, True))
            off, cur = 0, btf.strip(btf.target(cur))
            kind = btf.kind(cur)
        if kind == FWD:
            raise PolicyError(f"{here} is {btf.describe(cur)}, only declared in the kernel's BTF: no fields")
        if kind not in (STRUCT, UNION):
            raise PolicyError(f"{here} is {btf.describe(cur)}, not a struct: it has no field {part!r}")
        m = _find_member(btf, cur, part)
        if m is None:
            raise PolicyError(f"{here} ({btf.describe(cur)}) has no field {part!r}")
        if m.bitfield or m.bit_offset % 8:
            raise unsupported(f"{where}.resolve {path!r}: {part} is a bit field, which is not read")
        off, raw, cur = off + m.bit_offset // 8, m.type_id, btf.strip(m.type_id)
        seen += ("." if seen else "") + part
    return steps, off, cur, raw


def _type_named(btf: KernelBtf, tid: int) -> str:
    """Tetragon's rule: a last field whose type (or the type it points to) is named like an argument
    type is read as that type (struct file -> file, pid_t -> int)."""
    for _ in range(16):
        name = btf.name(tid)
        if name in ARG_TYPES and name != "auto":
            return name
        kind = btf.kind(tid)
        if kind != PTR and kind not in MODIFIERS:
            return ""
        tid = btf.target(tid)
    return ""


def _auto_type(btf: KernelBtf, last: int, where: str) -> str:
    kind = btf.kind(last)
    if kind in _INT_KINDS:
        size = btf.size(last)
        return _AUTO_INT.get((size, btf.int_signed(last)), "uint64")
    pointee = btf.strip(btf.target(last)) if kind in (PTR, ARRAY) else 0
    if kind == ARRAY:
        pointee = btf.strip(btf.array(last)[0])
    if btf.kind(pointee) == INT and btf.size(pointee) == 1:
        return "string"
    raise PolicyError(
        f"{where}.resolve: type auto cannot read {btf.describe(last)}; give the argument a type"
    )


def resolve_arg(
    btf: KernelBtf, func: str, index: int, shown: int, arg: KProbeArg, t: str, where: str
) -> ResolvedArg:
    """Argument `arg` (parameter `index` of BTF function `func`, shown as index `shown`) through its
    resolve path: the steps, and the type its last field is read as (`t` unless BTF names one)."""
    try:
        steps, off, last, declared = walk(
            btf, root_struct(btf, func, index, shown, where), arg.resolve, where
        )
        named = _type_named(btf, declared)
        if named:
            t = named
        elif arg.type == "auto":
            t = _auto_type(btf, last, where)
        kind = btf.kind(last)
        out = ResolvedArg(t)
        if t == "nop":
            return out
        if t in _INTEGER_VALUED:
            if kind in _INT_KINDS:
                size = btf.size(last)
                if size > 8:
                    raise unsupported(f"{where}.resolve: {arg.resolve} is a {size}-byte integer")
                tsize, tsigned = INT_SIZES.get(t, (8, False))
                out.last_size = min(size, tsize)
                out.last_signed = tsigned if tsize <= size else btf.int_signed(last)
                out.steps = [*steps, (off, False)]
            elif kind == PTR:
                out.steps = [*steps, (off, True)]  # the pointer's value, as a number
            else:
                raise PolicyError(
                    f"{where}.resolve: {arg.resolve} is {btf.describe(last)}: an argument of type {t} "
                    f"reads an integer"
                )
        elif kind == PTR:
            out.steps = [*steps, (off, True)]  # what the argument's reader reads is at the pointer
        elif kind in (STRUCT, UNION, ARRAY):
            out.steps = [*steps, (off, False)]  # ... or at the field itself
        else:
            raise PolicyError(
                f"{where}.resolve: {arg.resolve} is {btf.describe(last)}: an argument of type {t} reads "
                f"kernel memory at a pointer; give it an integer type"
            )
    except BtfError as exc:
        raise unsupported(f"{where}.resolve: {exc}") from None
    if len(out.steps) > RESOLVE_STEPS:
        raise unsupported(
            f"{where}.resolve: {arg.resolve} reads {len(out.steps) - 1} pointers on the way; at most "
            f"{RESOLVE_STEPS - 1} are followed"
        )
    return out
