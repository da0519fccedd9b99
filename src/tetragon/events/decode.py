"""Kernel records (bpf/include/events.h) into typed Python values: no rendering here.

Exec, clone and exit records become the process package's ExecInfo / CloneRecord / ExitRecord.
A generic (TracingPolicy) record is a `msg_generic` header (GenericHeader) followed by `nargs`
argument blobs, each a `gen_arg` header and `len` payload bytes; generic_blobs checks and locates
them. What a blob becomes is rendering (events.generic_args), decided by the policy's argument type.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from tetragon.abi import events_h as L
from tetragon.process.model import CloneRecord, ExecInfo, ExitRecord

__all__ = [
    "CloneRecord",
    "DecodeError",
    "ExitRecord",
    "GenericArg",
    "GenericHeader",
    "decode_clone",
    "decode_exec",
    "decode_exit",
    "decode_generic_header",
    "generic_blobs",
]

_EXEC = L.MSG_EXEC
_EXEC_SIZE = L.MSG_EXEC.size


class DecodeError(ValueError):
    pass


def _text(raw: bytes | memoryview) -> str:
    return bytes(raw).decode("utf-8", "replace")


def decode_exec(buf: memoryview | bytes) -> ExecInfo:
    if len(buf) < _EXEC_SIZE:
        raise DecodeError(f"exec record of {len(buf)} bytes, header needs {_EXEC_SIZE}")
    (
        _op,
        _cflags,
        _size,
        ktime,
        pid,
        tid,
        ppid,
        nspid,
        uid,
        gid,
        euid,
        egid,
        suid,
        sgid,
        fsuid,
        fsgid,
        auid,
        securebits,
        cap_p,
        cap_e,
        cap_i,
        *rest,
    ) = _EXEC.unpack_from(buf)
    ns = tuple(rest[:10])
    (
        userns_level,
        userns_uid,
        userns_gid,
        flags,
        privs,
        file_uid,
        file_gid,
        file_nlink,
        file_ino,
        _cgroup_id,
        _argc,
        filename_len,
        args_len,
        cwd_len,
        cgroup_len,
        exe_len,
    ) = rest[10:]
    off = _EXEC_SIZE
    end = off + cgroup_len + filename_len + args_len + exe_len + cwd_len
    if end > len(buf):
        raise DecodeError(f"exec record of {len(buf)} bytes, lengths need {end}")
    cgroup = _text(buf[off : off + cgroup_len])
    off += cgroup_len
    filename = _text(buf[off : off + filename_len])
    off += filename_len
    raw_args = bytes(buf[off : off + args_len])
    off += args_len
    exe = _text(buf[off : off + exe_len])
    off += exe_len
    cwd = _text(buf[off : off + cwd_len])

    argv = raw_args.split(b"\0")
    if argv and argv[-1] == b"" and not flags & L.EXEC_F_TRUNC_ARGS:
        argv.pop()
    names: set[str] = {"execve"}
    if flags & L.EXEC_F_TRUNC_ARGS:
        names.add("truncArgs")
    if flags & L.EXEC_F_ERR_ARGS:
        names.add("errorArgs")
    if flags & L.EXEC_F_TRUNC_FILENAME:
        names.add("errorFilename")
    if flags & (L.EXEC_F_ERR_CWD | L.EXEC_F_TRUNC_CWD):
        names.add("errorCWD")
    if flags & L.EXEC_F_ERR_CGROUP:
        names.add("errorCgroupName")
    if cwd == "/":
        names.add("rootcwd")
    return ExecInfo(
        ktime=ktime,
        pid=pid,
        tid=tid,
        ppid=ppid,
        nspid=nspid,
        uid=uid,
        gid=gid,
        euid=euid,
        egid=egid,
        suid=suid,
        sgid=sgid,
        fsuid=fsuid,
        fsgid=fsgid,
        auid=auid,
        securebits=securebits,
        cap_permitted=cap_p,
        cap_effective=cap_e,
        cap_inheritable=cap_i,
        ns=ns,
        userns_level=userns_level,
        userns_uid=userns_uid,
        userns_gid=userns_gid,
        binary=filename,
        argv=[a.decode("utf-8", "replace") for a in argv],
        cwd=cwd,
        cgroup_name=cgroup,
        flags=names,
        privs=privs,
        file_uid=file_uid,
        file_gid=file_gid,
        file_nlink=file_nlink,
        file_ino=file_ino,
        exe=exe,
    )


def decode_clone(buf: memoryview | bytes) -> CloneRecord:
    if len(buf) < L.MSG_CLONE.size:
        raise DecodeError(f"clone record of {len(buf)} bytes")
    _op, _f, _s, ktime, pid, tid, ppid, nspid = L.MSG_CLONE.unpack_from(buf)
    return CloneRecord(ktime, pid, tid, ppid, nspid)


def decode_exit(buf: memoryview | bytes) -> ExitRecord:
    if len(buf) < L.MSG_EXIT.size:
        raise DecodeError(f"exit record of {len(buf)} bytes")
    _op, _f, _s, ktime, pid, tid, code = L.MSG_EXIT.unpack_from(buf)
    return ExitRecord(ktime, pid, tid, code)


# --- generic (TracingPolicy) records ---------------------------------------------------------


class GenericHeader(NamedTuple):
    """struct msg_generic, field for field (abi.events_h.GENERIC_FIELDS)."""

    op: int
    common_flags: int
    size: int  # the record's bytes: this header and every blob
    ktime: int
    pid: int
    tid: int
    policy_id: int
    hook_id: int
    action: int  # ACTION_* of the matched selector's first action
    return_action: int  # ACTION_* at return, when GEN_F_RETURN
    selector: int  # the matched selector, GEN_SELECTOR_NONE when the hook has none
    nargs: int
    flags: int  # GEN_F_*
    func_id: int  # syscall-list hooks: the syscall number (bit 31: ia32)
    ret: int


@dataclass
class GenericArg:
    """One argument blob: its gen_arg header and payload bytes."""

    kind: int
    flags: int
    index: int
    payload: bytes


GENERIC_OPS = frozenset(
    (
        L.MSG_OP_GENERIC_KPROBE,
        L.MSG_OP_GENERIC_TRACEPOINT,
        L.MSG_OP_GENERIC_UPROBE,
        L.MSG_OP_GENERIC_LSM,
        L.MSG_OP_GENERIC_USDT,
    )
)
GENERIC_HEAD_SIZE = L.MSG_GENERIC.size
_unpack_generic = L.MSG_GENERIC.unpack_from
_new_header = tuple.__new__
# checked before the header is made: a NamedTuple's attribute reads cost more than a tuple's items
_OP, _SIZE = GenericHeader._fields.index("op"), GenericHeader._fields.index("size")
GEN_ARG_SIZE = L.GEN_ARG.size
unpack_gen_arg = L.GEN_ARG.unpack_from
unpack_i32 = struct.Struct("<i").unpack_from


def decode_generic_header(buf: bytes) -> GenericHeader:
    """The `msg_generic` header of a record; ValueError when it is short, `size` is out of range or
    the op is not a generic one."""
    if len(buf) < GENERIC_HEAD_SIZE:
        raise ValueError(f"generic record of {len(buf)} bytes, header needs {GENERIC_HEAD_SIZE}")
    fields = _unpack_generic(buf)
    size = fields[_SIZE]
    if size < GENERIC_HEAD_SIZE or size > len(buf):
        raise ValueError(f"generic record size {size} outside [{GENERIC_HEAD_SIZE}, {len(buf)}]")
    if fields[_OP] not in GENERIC_OPS:
        raise ValueError(f"op {fields[_OP]} is not a generic record")
    return _new_header(GenericHeader, fields)


def generic_blobs(buf: bytes, nargs: int, size: int) -> list[tuple[int, int, int, int, int]]:
    """(kind, flags, index, start, end) of each blob, payload buf[start:end], in record order;
    ValueError when a blob has an unknown kind or overruns `size`."""
    blobs: list[tuple[int, int, int, int, int]] = []
    pos = GENERIC_HEAD_SIZE
    for i in range(nargs):
        if pos + GEN_ARG_SIZE > size:
            raise ValueError(f"argument {i} header at {pos} overruns record size {size}")
        kind, aflags, index, length = unpack_gen_arg(buf, pos)
        pos += GEN_ARG_SIZE
        if kind not in L.GEN_KINDS:
            raise ValueError(f"argument {i} has unknown kind {kind}")
        if pos + length > size:
            raise ValueError(f"argument {i} payload of {length} bytes overruns record size {size}")
        blobs.append((kind, aflags, index, pos, pos + length))
        pos += length
    return blobs
