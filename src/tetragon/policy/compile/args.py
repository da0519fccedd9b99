"""Where a hook's arguments are in the kernel's context and how each is read (struct gen_arg_cfg).

The mechanism decides the place (a tracepoint record's field offset, a raw_tp slot, a register);
the argument type decides the reader. Tracepoint fields come from tracefs `format` files.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tetragon.abi import generic_cfg_h as G
from tetragon.policy.compile.args_kern import KERN_OBJ_READERS, KERN_PATH_TYPES, fill_kern_obj_arg
from tetragon.policy.compile.args_net import NET_KERNEL_READERS, net_kernel_reader
from tetragon.policy.compile.plan import unsupported
from tetragon.policy.errors import PolicyError
from tetragon.policy.schema import KProbeArg

TRACEFS = Path("/sys/kernel/tracing")
BUF_DEFAULT = 4096
BUF_MAX_DATA = 32768
SYSCALL_ARG_OFF = 16  # syscalls/sys_enter_X and raw_syscalls/sys_enter: 8-byte arguments from here

INT_SIZES = {
    "int": (4, True),
    "int32": (4, True),
    "sint32": (4, True),
    "uint32": (4, False),
    "int16": (2, True),
    "sint16": (2, True),
    "uint16": (2, False),
    "int8": (1, True),
    "sint8": (1, True),
    "uint8": (1, False),
    "int64": (8, True),
    "sint64": (8, True),
    "long": (8, True),
    "uint64": (8, False),
    "ulong": (8, False),
    "size_t": (8, False),
    "capability": (4, True),
    "syscall64": (8, False),
    "kernel_cap_t": (8, False),
    "cap_inheritable": (8, False),
    "cap_permitted": (8, False),
    "cap_effective": (8, False),
    "bpf_cmd": (4, True),
}
SIGNED_TYPES = {t for t, (_, signed) in INT_SIZES.items() if signed}
STRING_TYPES = {
    "string",
    "filename",
    "data_loc",
    "fd",
    "file",
    "path",
    "linux_binprm",
    "char_buf",
    "char_iovec",
    *KERN_PATH_TYPES,
    "net_device",
}
DIRFD_FIELDS = ("dfd", "olddfd", "newdfd", "dirfd", "fd")


@dataclass
class Field:
    name: str
    ctype: str
    offset: int
    size: int
    signed: bool


# --- tracefs ---------------------------------------------------------------------------------
_FIELD = re.compile(r"field:(?P<decl>[^;]+);\s*offset:(\d+);\s*size:(\d+);\s*signed:(\d+);")


def tracepoint_format(subsys: str, event: str, tracefs: Path = TRACEFS) -> list[Field]:
    """Fields of a tracepoint in format order, common_* fields included (Tetragon's arg index)."""
    path = tracefs / "events" / subsys / event / "format"
    try:
        text = path.read_text()
    except OSError as exc:
        raise unsupported(
            f"tracepoint {subsys}/{event} does not exist on this kernel ({path}: {exc.strerror})"
        ) from None
    fields = []
    for m in _FIELD.finditer(text):
        decl = m.group("decl").strip()
        name = decl.split()[-1]
        ctype = decl[: -len(name)].strip()
        if "[" in name:
            ctype += name[name.index("[") :]
            name = name[: name.index("[")]
        fields.append(Field(name, ctype, int(m.group(2)), int(m.group(3)), m.group(4) == "1"))
    return fields


def ftrace_functions(pattern: str, tracefs: Path, where: str) -> list[str]:
    """A `generated_ftrace` list: the traceable kernel functions whose names match `pattern` (a regular
    expression searched in each name, as Tetragon does), from tracefs available_filter_functions."""
    path = tracefs / "available_filter_functions"
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise unsupported(
            f"{where}: cannot read the traceable kernel functions ({path}: {exc.strerror})"
        ) from None
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise PolicyError(f"{where}: pattern {pattern!r} is not a regular expression: {exc}") from None
    # unique, in file order; "name [module]" lines; placeholders of functions ftrace dropped left out
    names = dict.fromkeys(
        n for n in (line.split()[0] for line in lines if line.strip()) if not n.startswith("__ftrace_invalid")
    )
    found = [n for n in names if regex.search(n)]
    if not found:
        raise PolicyError(f"{where}: pattern {pattern!r} matches no traceable kernel function")
    return found


# --- arguments -------------------------------------------------------------------------------
@dataclass
class ArgSrc:
    """Where a hook's raw argument i lives, for the chosen mechanism."""

    mech: int
    user_memory: bool  # pointers in arguments are user pointers (syscalls, uprobes)
    off: Callable[[int], tuple[int, int, bool]]  # index -> (off, size, signed) of the raw value
    field: Callable[[int], Field | None] = lambda i: None
    dirfd: Callable[[int], int | None] = lambda i: None  # index -> raw location of its dirfd


def resolve_type(arg: KProbeArg, fld: Field | None, where: str) -> str:
    t = arg.type
    if t != "auto":
        return t
    if fld is None:
        return "int"
    if fld.ctype.startswith("__data_loc"):
        return "data_loc"
    if "char *" in fld.ctype or "char*" in fld.ctype:
        return "string"
    if "*" in fld.ctype or "[" in fld.ctype:
        raise PolicyError(
            f"{where}: type auto cannot read field {fld.name} ({fld.ctype}); give the argument a type"
        )
    return (
        {1: "int8", 2: "int16", 4: "int32", 8: "int64"}[fld.size]
        if fld.signed
        else {
            1: "uint8",
            2: "uint16",
            4: "uint32",
            8: "uint64",
        }[fld.size]
    )


def fill_arg(out: G.ArgCfg, arg: KProbeArg, t: str, src: ArgSrc, where: str) -> None:
    off, size, signed = src.off(arg.index)
    out.off, out.size, out.is_signed = off, size, 1 if signed else 0
    if arg.return_copy and t not in ("char_buf",):
        raise PolicyError(f"{where}: returnCopy applies to char_buf arguments")
    if t == "nop":
        return  # not read, not reported: it only keeps the positions of the arguments after it
    if t in INT_SIZES:
        out.reader = G.RD_SYSCALL64 if t == "syscall64" else G.RD_INT
        isize, isigned = INT_SIZES[t]
        # registers and raw_tp slots are 8 bytes: an `int` is their low 4, sign-extended before matching
        if src.mech != G.MECH_TRACEPOINT or size >= isize:
            out.size, out.is_signed = isize, 1 if isigned else 0
        else:
            out.is_signed = 1 if isigned else 0
        return
    if t == "fd":
        out.reader, out.size, out.is_signed = G.RD_FD, min(size, 4) or 4, 1
        return
    if t in ("string", "data_loc", "filename"):
        if t == "data_loc":
            out.reader = G.RD_DATALOC
        elif t == "filename" and src.user_memory:
            out.reader = G.RD_FILENAME
            d = src.dirfd(arg.index)
            if d is not None:
                out.has_dirfd, out.dirfd_off = 1, d
        elif t == "filename" and src.mech == G.MECH_KPROBE:
            out.reader = G.RD_KFILENAME  # a kernel function's struct filename *
        elif t == "string" and src.mech == G.MECH_KPROBE:
            out.reader = G.RD_STR  # a kernel function's char *: user or kernel memory, as Tetragon reads it
        else:
            out.reader = G.RD_USTR if src.user_memory else G.RD_KSTR
        return
    if t in ("char_buf", "char_iovec"):
        kernel_buf = t == "char_buf" and src.mech == G.MECH_KPROBE
        if not src.user_memory and not kernel_buf:
            raise unsupported(f"{where}: {t} arguments are read from user memory (syscalls, uprobes) only")
        if kernel_buf and arg.return_copy:
            raise unsupported(f"{where}: returnCopy on a kernel function's char_buf is not implemented yet")
        out.reader = G.RD_BUF if kernel_buf else G.RD_UBUF if t == "char_buf" else G.RD_IOVEC
        out.max_data = BUF_MAX_DATA if arg.max_data else BUF_DEFAULT
        if arg.size_arg_index:
            out.has_size = 1
            out.size_off = src.off(arg.size_arg_index - 1)[0]
        out.return_copy = 1 if arg.return_copy else 0
        return
    if t == "sock":
        out.reader = G.RD_SOCK_FD if src.user_memory else G.RD_SOCK
        return
    if t in NET_KERNEL_READERS:
        out.reader = net_kernel_reader(t, src.mech, src.user_memory, where)
        return
    if t in KERN_OBJ_READERS:
        fill_kern_obj_arg(out, arg, t, src.mech, BUF_MAX_DATA if arg.max_data else BUF_DEFAULT, where)
        return
    kernel_ptr = {"file": G.RD_FILE, "path": G.RD_PATH, "linux_binprm": G.RD_BINPRM, "cred": G.RD_CRED}
    if t in kernel_ptr:
        if src.user_memory:
            raise PolicyError(
                f"{where}: a {t} argument is a kernel pointer; a syscall or uprobe argument cannot be one"
            )
        out.reader = kernel_ptr[t]
        return
    raise unsupported(f"{where}: argument type {t} is not supported by this agent")


def cmp_kind(arg_type: str) -> int:
    if arg_type in ("sock", "skb", "socket"):
        return G.CMP_SOCK
    if arg_type == "sockaddr":
        return G.CMP_SOCKADDR
    if arg_type in STRING_TYPES:
        return G.CMP_STR
    return G.CMP_INT if arg_type in SIGNED_TYPES or arg_type == "auto" else G.CMP_UINT


def syscall_src(fields: list[Field] | None) -> ArgSrc:
    def off(i: int) -> tuple[int, int, bool]:
        return SYSCALL_ARG_OFF + 8 * i, 8, False

    def fld(i: int) -> Field | None:
        if fields is None:
            return None
        args = [f for f in fields if not f.name.startswith("common_") and f.name != "__syscall_nr"]
        return args[i] if i < len(args) else None

    def dirfd(i: int) -> int | None:
        if fields is None:
            return None
        args = [f for f in fields if not f.name.startswith("common_") and f.name != "__syscall_nr"]
        if 0 < i < len(args) and args[i - 1].name in DIRFD_FIELDS:
            return SYSCALL_ARG_OFF + 8 * (i - 1)
        return None

    return ArgSrc(G.MECH_TRACEPOINT, True, off, fld, dirfd)


def record_src(fields: list[Field], subsystem: str, event: str, where: str) -> ArgSrc:
    """A tracepoint's arguments: the fields of its record, by position (common_* fields included)."""

    def off(i: int) -> tuple[int, int, bool]:
        if i >= len(fields):
            raise PolicyError(
                f"{where}: argument index {i} is past the last field of {subsystem}/{event} "
                f"({len(fields) - 1})"
            )
        f = fields[i]
        return f.offset, min(f.size, 8), f.signed

    def fld(i: int) -> Field | None:
        return fields[i] if i < len(fields) else None

    def dirfd(i: int) -> int | None:
        if 0 < i < len(fields) and fields[i - 1].name in DIRFD_FIELDS:
            return fields[i - 1].offset
        return None

    return ArgSrc(G.MECH_TRACEPOINT, subsystem in ("syscalls", "raw_syscalls"), off, fld, dirfd)
