"""libbpf (libbpf.so.1) through ctypes: objects, programs, links and maps with explicit lifetimes.

Only the calls the agent needs are bound. Every handle that owns a kernel resource is a context
manager and is closed exactly once; `BpfObject.close()` destroys its links before the object so
that unloading leaves nothing attached.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

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
    buf = ctypes.create_string_buffer(1 << 18)
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
        "bpf_object__next_map": ([_c_ptr, _c_ptr], _c_ptr),
        "bpf_program__name": ([_c_ptr], ctypes.c_char_p),
        "bpf_program__section_name": ([_c_ptr], ctypes.c_char_p),
        "bpf_program__set_autoload": ([_c_ptr, ctypes.c_bool], ctypes.c_int),
        "bpf_program__autoload": ([_c_ptr], ctypes.c_bool),
        "bpf_program__attach": ([_c_ptr], _c_ptr),
        "bpf_program__attach_tracepoint": ([_c_ptr, ctypes.c_char_p, ctypes.c_char_p], _c_ptr),
        "bpf_program__attach_raw_tracepoint": ([_c_ptr, ctypes.c_char_p], _c_ptr),
        "bpf_program__attach_uprobe_opts": (
            [_c_ptr, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, _c_ptr],
            _c_ptr,
        ),
        "bpf_map__reuse_fd": ([_c_ptr, ctypes.c_int], ctypes.c_int),
        "bpf_program__fd": ([_c_ptr], ctypes.c_int),
        "bpf_link__destroy": ([_c_ptr], ctypes.c_int),
        "bpf_link__fd": ([_c_ptr], ctypes.c_int),
        "bpf_map__fd": ([_c_ptr], ctypes.c_int),
        "bpf_map__name": ([_c_ptr], ctypes.c_char_p),
        "bpf_map__set_max_entries": ([_c_ptr, ctypes.c_uint32], ctypes.c_int),
        "bpf_map__max_entries": ([_c_ptr], ctypes.c_uint32),
        "bpf_map__value_size": ([_c_ptr], ctypes.c_uint32),
        "bpf_map__key_size": ([_c_ptr], ctypes.c_uint32),
        "bpf_map__type": ([_c_ptr], ctypes.c_int),
        "bpf_map__initial_value": ([_c_ptr, ctypes.POINTER(ctypes.c_size_t)], _c_ptr),
        "bpf_map_lookup_elem": ([ctypes.c_int, _c_ptr, _c_ptr], ctypes.c_int),
        "bpf_map_update_elem": ([ctypes.c_int, _c_ptr, _c_ptr, ctypes.c_uint64], ctypes.c_int),
        "bpf_map_delete_elem": ([ctypes.c_int, _c_ptr], ctypes.c_int),
        "bpf_map_get_next_key": ([ctypes.c_int, _c_ptr, _c_ptr], ctypes.c_int),
        "libbpf_num_possible_cpus": ([], ctypes.c_int),
        "bpf_object__btf": ([_c_ptr], _c_ptr),
        "btf__find_by_name_kind": ([_c_ptr, ctypes.c_char_p, ctypes.c_uint32], ctypes.c_int32),
        "btf__type_by_id": ([_c_ptr, ctypes.c_uint32], _c_ptr),
        "btf__name_by_offset": ([_c_ptr, ctypes.c_uint32], ctypes.c_char_p),
        "libbpf_probe_bpf_prog_type": ([ctypes.c_int, _c_ptr], ctypes.c_int),
        "libbpf_probe_bpf_helper": ([ctypes.c_int, ctypes.c_int, _c_ptr], ctypes.c_int),
    }
    for name, (argtypes, restype) in sig.items():
        fn = getattr(lb, name)
        fn.argtypes = argtypes
        fn.restype = restype


def _errno() -> int:
    return ctypes.get_errno() or 0


def num_possible_cpus() -> int:
    n = lib().libbpf_num_possible_cpus()
    if n <= 0:
        raise BpfError("cannot read possible CPUs", -n)
    return int(n)


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size", ctypes.c_uint32)]


class _BtfVarSecinfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("offset", ctypes.c_uint32), ("size", ctypes.c_uint32)]


_BTF_KIND_DATASEC = 15


class _OpenOpts(ctypes.Structure):
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


class _UprobeOpts(ctypes.Structure):
    """struct bpf_uprobe_opts (libbpf 1.x)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ref_ctr_offset", ctypes.c_size_t),
        ("bpf_cookie", ctypes.c_uint64),
        ("retprobe", ctypes.c_bool),
        ("func_name", ctypes.c_char_p),
        ("attach_mode", ctypes.c_int),
    ]


class Link:
    """An attachment of a program; destroying it detaches the program."""

    def __init__(self, ptr: int, program: str) -> None:
        self._ptr: int | None = ptr
        self.program = program

    @property
    def fd(self) -> int:
        if self._ptr is None:
            raise BpfError(f"link of {self.program} is closed")
        return int(lib().bpf_link__fd(self._ptr))

    def close(self) -> None:
        if self._ptr is not None:
            lib().bpf_link__destroy(self._ptr)
            self._ptr = None

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Map:
    """A map of a loaded (or opened, not yet loaded) object. Owned by its BpfObject."""

    def __init__(self, ptr: int, name: str) -> None:
        self._ptr = ptr
        self.name = name

    @property
    def fd(self) -> int:
        fd = int(lib().bpf_map__fd(self._ptr))
        if fd < 0:
            raise BpfError(f"map {self.name} is not loaded")
        return fd

    @property
    def max_entries(self) -> int:
        return int(lib().bpf_map__max_entries(self._ptr))

    @property
    def key_size(self) -> int:
        return int(lib().bpf_map__key_size(self._ptr))

    @property
    def value_size(self) -> int:
        return int(lib().bpf_map__value_size(self._ptr))

    def reuse_fd(self, fd: int) -> None:
        """Before load: use an existing map (another object's) instead of creating this one."""
        err = lib().bpf_map__reuse_fd(self._ptr, fd)
        if err:
            raise BpfError(f"reuse map fd for {self.name}", -err)

    def set_max_entries(self, n: int) -> None:
        err = lib().bpf_map__set_max_entries(self._ptr, n)
        if err:
            raise BpfError(f"set max_entries of {self.name} to {n}", -err)

    def initial_value(self) -> ctypes.Array[ctypes.c_char] | None:
        """The writable initial data of a global-data map (.rodata/.bss/.data) before load."""
        size = ctypes.c_size_t(0)
        ptr = lib().bpf_map__initial_value(self._ptr, ctypes.byref(size))
        if not ptr:
            return None
        return (ctypes.c_char * size.value).from_address(ptr)

    def lookup(self, key: bytes, value_size: int | None = None) -> bytes | None:
        vs = value_size if value_size is not None else self.value_size
        kbuf = ctypes.create_string_buffer(key, len(key))
        vbuf = ctypes.create_string_buffer(vs)
        if lib().bpf_map_lookup_elem(self.fd, kbuf, vbuf) != 0:
            err = _errno()
            if err == 2:  # ENOENT
                return None
            raise BpfError(f"lookup in {self.name}", err)
        return vbuf.raw

    def lookup_percpu(self, key: bytes) -> list[bytes]:
        """Per-CPU map value: one slice per possible CPU, each rounded up to 8 bytes."""
        stride = (self.value_size + 7) & ~7
        ncpu = num_possible_cpus()
        raw = self.lookup(key, stride * ncpu)
        if raw is None:
            return []
        return [raw[i * stride : i * stride + self.value_size] for i in range(ncpu)]

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        kbuf = ctypes.create_string_buffer(key, len(key))
        vbuf = ctypes.create_string_buffer(value, len(value))
        if lib().bpf_map_update_elem(self.fd, kbuf, vbuf, flags) != 0:
            raise BpfError(f"update of {self.name}", _errno())

    def delete(self, key: bytes) -> bool:
        kbuf = ctypes.create_string_buffer(key, len(key))
        if lib().bpf_map_delete_elem(self.fd, kbuf) != 0:
            err = _errno()
            if err == 2:
                return False
            raise BpfError(f"delete from {self.name}", err)
        return True

    def keys(self) -> Iterator[bytes]:
        ks = self.key_size
        cur = None
        nxt = ctypes.create_string_buffer(ks)
        while True:
            if lib().bpf_map_get_next_key(self.fd, cur, nxt) != 0:
                return
            key = nxt.raw
            yield key
            cur = ctypes.create_string_buffer(key, ks)


class BpfObject:
    """One BPF ELF object: open → (configure) → load → attach → close.

    Use as a context manager; `close()` detaches every link this object made, then frees the object
    (which closes its program and map fds).
    """

    def __init__(self, path: str | Path, btf_path: str | None = None) -> None:
        self.path = str(path)
        lb = lib()
        opts = None
        if btf_path:
            opts = _OpenOpts(sz=ctypes.sizeof(_OpenOpts), btf_custom_path=btf_path.encode())
        ptr = lb.bpf_object__open_file(self.path.encode(), ctypes.byref(opts) if opts else None)
        if not ptr:
            raise BpfError(f"cannot open BPF object {self.path}", _errno())
        self._ptr: int | None = ptr
        self.links: list[Link] = []
        self.loaded = False

    def _obj(self) -> int:
        if self._ptr is None:
            raise BpfError(f"BPF object {self.path} is closed")
        return self._ptr

    def program_names(self) -> list[str]:
        lb = lib()
        names: list[str] = []
        prog = lb.bpf_object__next_program(self._obj(), None)
        while prog:
            names.append(lb.bpf_program__name(prog).decode())
            prog = lb.bpf_object__next_program(self._obj(), prog)
        return names

    def _program(self, name: str) -> int:
        prog = lib().bpf_object__find_program_by_name(self._obj(), name.encode())
        if not prog:
            raise BpfError(f"no program {name} in {self.path}")
        return int(prog)

    def set_autoload(self, name: str, autoload: bool) -> None:
        err = lib().bpf_program__set_autoload(self._program(name), autoload)
        if err:
            raise BpfError(f"set autoload of {name}", -err)

    def only_programs(self, names: set[str]) -> None:
        for prog in self.program_names():
            self.set_autoload(prog, prog in names)

    def map(self, name: str) -> Map:
        ptr = lib().bpf_object__find_map_by_name(self._obj(), name.encode())
        if not ptr:
            raise BpfError(f"no map {name} in {self.path}")
        return Map(int(ptr), name)

    def set_global(self, section: str, name: str, value: bytes) -> None:
        """Set a global variable (e.g. a `const volatile` in .rodata) before load, found through BTF."""
        lb = lib()
        btf = lb.bpf_object__btf(self._obj())
        sec_id = lb.btf__find_by_name_kind(btf, section.encode(), _BTF_KIND_DATASEC) if btf else -1
        if sec_id < 0:
            raise BpfError(f"no section {section} in {self.path}")
        sec = _BtfType.from_address(lb.btf__type_by_id(btf, sec_id))
        vlen = sec.info & 0xFFFF
        infos = (_BtfVarSecinfo * vlen).from_address(
            lb.btf__type_by_id(btf, sec_id) + ctypes.sizeof(_BtfType)
        )
        for vsi in infos:
            var = _BtfType.from_address(lb.btf__type_by_id(btf, vsi.type))
            if lb.btf__name_by_offset(btf, var.name_off).decode() != name:
                continue
            if vsi.size != len(value):
                raise BpfError(f"{name} is {vsi.size} bytes, got {len(value)}")
            data = self.map(section).initial_value()
            if data is None:
                raise BpfError(f"section {section} has no initial value")
            ctypes.memmove(ctypes.addressof(data) + vsi.offset, value, len(value))
            return
        raise BpfError(f"no variable {name} in {section} of {self.path}")

    def load(self) -> None:
        _log_capture.lines = []
        try:
            err = lib().bpf_object__load(self._obj())
            captured = "".join(_log_capture.lines)
        finally:
            _log_capture.lines = None
        if err:
            tail = "\n".join(captured.strip().splitlines()[-15:])
            raise BpfError(
                f"cannot load BPF object {Path(self.path).name}" + (f"\n{tail}" if tail else ""), -err
            )
        self.loaded = True

    def _attach_with(self, name: str, what: str, call: Any) -> Link:
        _log_capture.lines = []
        try:
            ctypes.set_errno(0)
            ptr = call(self._program(name))
            err = _errno()
            captured = "".join(_log_capture.lines)
        finally:
            _log_capture.lines = None
        if not ptr:
            detail = captured.strip().splitlines()[-1] if captured.strip() else ""
            raise BpfError(f"cannot attach {what}" + (f" ({detail})" if detail else ""), err)
        link = Link(int(ptr), name)
        self.links.append(link)
        return link

    def attach(self, name: str) -> Link:
        """Attach a program by its section (tp_btf/..., raw_tp/..., kprobe/...)."""
        return self._attach_with(name, name, lib().bpf_program__attach)

    def attach_tracepoint(self, name: str, category: str, event: str) -> Link:
        return self._attach_with(
            name,
            f"{name} to tracepoint {category}/{event}",
            lambda prog: lib().bpf_program__attach_tracepoint(prog, category.encode(), event.encode()),
        )

    def attach_raw_tracepoint(self, name: str, tracepoint: str) -> Link:
        return self._attach_with(
            name,
            f"{name} to raw tracepoint {tracepoint}",
            lambda prog: lib().bpf_program__attach_raw_tracepoint(prog, tracepoint.encode()),
        )

    def attach_uprobe(self, name: str, binary: str, symbol: str = "", offset: int = 0, pid: int = -1) -> Link:
        """Uprobe on `binary` at `symbol` (+ `offset`), or at file `offset` when no symbol is given."""
        opts = _UprobeOpts(sz=ctypes.sizeof(_UprobeOpts), func_name=symbol.encode() if symbol else None)
        where = f"{binary}:{symbol or hex(offset)}"
        return self._attach_with(
            name,
            f"{name} to uprobe {where}",
            lambda prog: lib().bpf_program__attach_uprobe_opts(
                prog, pid, binary.encode(), offset, ctypes.byref(opts)
            ),
        )

    def close(self) -> None:
        for link in reversed(self.links):
            link.close()
        self.links.clear()
        if self._ptr is not None:
            lib().bpf_object__close(self._ptr)
            self._ptr = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
