"""Decoder of ring-buffer records (bpf/include/events.h) into typed Python values."""

from __future__ import annotations

from typing import NamedTuple

from tetragon.abi import events_h as L
from tetragon.process.model import ExecInfo

_EXEC = L.MSG_EXEC
_EXEC_SIZE = L.MSG_EXEC.size


class CloneRecord(NamedTuple):
    ktime: int
    pid: int
    tid: int
    ppid: int
    nspid: int


class ExitRecord(NamedTuple):
    ktime: int
    pid: int
    tid: int
    exit_code: int


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
