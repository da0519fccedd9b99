"""libbpf (libbpf.so.1) through ctypes: the library, the signatures of the calls the agent uses,
the C structs they take, and libbpf's log routed to Python logging.

The object, program, link and map wrappers built on these are in tetragon.bpf.libbpf and
tetragon.bpf.libbpf_map.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("tetragon.bpf.libbpf")

_c_ptr = ctypes.c_void_p


class BpfError(Exception):
    """A libbpf call failed; `errno` holds the positive error number."""

    def __init__(self, message: str, errno: int = 0) -> None:
        if errno:
            message = f"{message}: {os.strerror(errno)} (errno {errno})"
        super().__init__(message)
        self.errno = errno


def _load_library() -> ctypes.CDLL:
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise BpfError(f"cannot load libbpf ({name}); install Debian's libbpf1: {exc}") from exc


_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()

_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
_libc.vsnprintf.restype = ctypes.c_int

# libbpf's log of the current thread's load: the verifier log is the useful part of a load error.
_log_capture = threading.local()


@_PRINT_FN
def _print_cb(level: int, fmt: bytes, args: int) -> int:
    # one buffer per thread: libbpf prints ~2,400 lines per object load, and a fresh zeroed 256 KiB
    # buffer each was a third of the time a 180-hook policy took to load
    buf = getattr(_log_capture, "buffer", None)
    if buf is None:
        buf = _log_capture.buffer = ctypes.create_string_buffer(1 << 18)
    _libc.vsnprintf(buf, len(buf), fmt, args)
    text = buf.value.decode(errors="replace")
    lines = getattr(_log_capture, "lines", None)
    if lines is not None and len(lines) < 2000:
        lines.append(text)
    if level <= 0:  # LIBBPF_WARN
        log.debug("libbpf: %s", text.rstrip())
    return 0


def lib() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is None:
            _lib = _load_library()
            _declare(_lib)
            _lib.libbpf_set_print(_print_cb)
        return _lib


def _declare(lb: ctypes.CDLL) -> None:
    sig: dict[str, tuple[list[Any], Any]] = {
        "libbpf_set_print": ([_PRINT_FN], _c_ptr),
        "bpf_object__open_file": ([ctypes.c_char_p, _c_ptr], _c_ptr),
        "bpf_object__load": ([_c_ptr], ctypes.c_int),
        "bpf_object__close": ([_c_ptr], None),
        "bpf_object__find_program_by_name": ([_c_ptr, ctypes.c_char_p], _c_ptr),
        "bpf_object__find_map_by_name": ([_c_ptr, ctypes.c_char_p], _c_ptr),
        "bpf_object__next_program": ([_c_ptr, _c_ptr], _c_ptr),
        "bpf_program__name": ([_c_ptr], ctypes.c_char_p),
        "bpf_object__next_map": ([_c_ptr, _c_ptr], _c_ptr),
        "bpf_map__name": ([_c_ptr], ctypes.c_char_p),
        "bpf_program__set_autoload": ([_c_ptr, ctypes.c_bool], ctypes.c_int),
        "bpf_program__set_attach_target": ([_c_ptr, ctypes.c_int, ctypes.c_char_p], ctypes.c_int),
        "bpf_program__attach": ([_c_ptr], _c_ptr),
        "bpf_program__attach_tracepoint": ([_c_ptr, ctypes.c_char_p, ctypes.c_char_p], _c_ptr),
        "bpf_program__attach_raw_tracepoint": ([_c_ptr, ctypes.c_char_p], _c_ptr),
        "bpf_program__attach_uprobe_opts": (
            [_c_ptr, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, _c_ptr],
            _c_ptr,
        ),
        "bpf_program__attach_kprobe_opts": ([_c_ptr, ctypes.c_char_p, _c_ptr], _c_ptr),
        "bpf_program__attach_kprobe_multi_opts": ([_c_ptr, ctypes.c_char_p, _c_ptr], _c_ptr),
        "bpf_map__reuse_fd": ([_c_ptr, ctypes.c_int], ctypes.c_int),
        "bpf_link__destroy": ([_c_ptr], ctypes.c_int),
        "bpf_map__fd": ([_c_ptr], ctypes.c_int),
        "bpf_map__set_max_entries": ([_c_ptr, ctypes.c_uint32], ctypes.c_int),
        "bpf_map__set_value_size": ([_c_ptr, ctypes.c_uint32], ctypes.c_int),
        "bpf_map__max_entries": ([_c_ptr], ctypes.c_uint32),
        "bpf_map__value_size": ([_c_ptr], ctypes.c_uint32),
        "bpf_map__key_size": ([_c_ptr], ctypes.c_uint32),
        "bpf_map__initial_value": ([_c_ptr, ctypes.POINTER(ctypes.c_size_t)], _c_ptr),
        "bpf_map_lookup_elem": ([ctypes.c_int, _c_ptr, _c_ptr], ctypes.c_int),
        "bpf_map_update_elem": ([ctypes.c_int, _c_ptr, _c_ptr, ctypes.c_uint64], ctypes.c_int),
        "bpf_map_delete_elem": ([ctypes.c_int, _c_ptr], ctypes.c_int),
        "bpf_map_create": (
            [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, _c_ptr],
            ctypes.c_int,
        ),
        "libbpf_num_possible_cpus": ([], ctypes.c_int),
        "bpf_object__btf": ([_c_ptr], _c_ptr),
        "btf__find_by_name_kind": ([_c_ptr, ctypes.c_char_p, ctypes.c_uint32], ctypes.c_int32),
        "btf__type_by_id": ([_c_ptr, ctypes.c_uint32], _c_ptr),
        "btf__name_by_offset": ([_c_ptr, ctypes.c_uint32], ctypes.c_char_p),
        "btf__parse": ([ctypes.c_char_p, _c_ptr], _c_ptr),
        "btf__free": ([_c_ptr], None),
        "btf__type_cnt": ([_c_ptr], ctypes.c_uint32),
    }
    for name, (argtypes, restype) in sig.items():
        fn = getattr(lb, name)
        fn.argtypes = argtypes
        fn.restype = restype


def errno_value() -> int:
    """The errno the last libbpf call of this thread left (0 when none)."""
    return ctypes.get_errno() or 0


@contextlib.contextmanager
def libbpf_log() -> Iterator[list[str]]:
    """The messages libbpf prints from this thread while the block runs (e.g. a verifier log)."""
    lines: list[str] = []
    _log_capture.lines = lines
    try:
        yield lines
    finally:
        _log_capture.lines = None


def num_possible_cpus() -> int:
    n = lib().libbpf_num_possible_cpus()
    if n <= 0:
        raise BpfError("cannot read possible CPUs", -n)
    return int(n)


class BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size", ctypes.c_uint32)]


class BtfVarSecinfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("offset", ctypes.c_uint32), ("size", ctypes.c_uint32)]


BTF_KIND_DATASEC = 15


class OpenOpts(ctypes.Structure):
    """struct bpf_object_open_opts as of libbpf 1.1 (sz tells newer libbpfs which fields we know)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("object_name", ctypes.c_char_p),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", ctypes.c_char_p),
        ("_attach_prog_fd", ctypes.c_uint32),
        ("kconfig", ctypes.c_char_p),
        ("btf_custom_path", ctypes.c_char_p),
        ("kernel_log_buf", ctypes.c_char_p),
        ("kernel_log_size", ctypes.c_size_t),
        ("kernel_log_level", ctypes.c_uint32),
    ]


class MapCreateOpts(ctypes.Structure):
    """struct bpf_map_create_opts as of libbpf 1.0 (sz tells newer libbpfs which fields we know)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("btf_fd", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
        ("numa_node", ctypes.c_uint32),
        ("map_ifindex", ctypes.c_uint32),
    ]


class UprobeOpts(ctypes.Structure):
    """struct bpf_uprobe_opts (libbpf 1.x)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ref_ctr_offset", ctypes.c_size_t),
        ("bpf_cookie", ctypes.c_uint64),
        ("retprobe", ctypes.c_bool),
        ("func_name", ctypes.c_char_p),
        ("attach_mode", ctypes.c_int),
    ]


class KprobeOpts(ctypes.Structure):
    """struct bpf_kprobe_opts as of libbpf 1.1 (sz tells newer libbpfs which fields we know)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("bpf_cookie", ctypes.c_uint64),
        ("offset", ctypes.c_size_t),
        ("retprobe", ctypes.c_bool),
    ]


class KprobeMultiOpts(ctypes.Structure):
    """struct bpf_kprobe_multi_opts as of libbpf 1.1: the functions by name (syms[cnt])."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("syms", ctypes.POINTER(ctypes.c_char_p)),
        ("addrs", ctypes.c_void_p),
        ("cookies", ctypes.c_void_p),
        ("cnt", ctypes.c_size_t),
        ("retprobe", ctypes.c_bool),
    ]
