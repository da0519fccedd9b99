"""BPF objects, programs and links on libbpf (bindings in tetragon.bpf.libbpf_bindings), with
explicit lifetimes.

Every handle that owns a kernel resource is a context manager and is closed exactly once;
`BpfObject.close()` destroys its links before the object so that unloading leaves nothing attached.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from types import TracebackType
from typing import Any

from tetragon.bpf.libbpf_bindings import (
    BTF_KIND_DATASEC,
    BpfError,
    BtfType,
    BtfVarSecinfo,
    KprobeMultiOpts,
    KprobeOpts,
    OpenOpts,
    UprobeOpts,
    errno_value,
    lib,
    libbpf_log,
    num_possible_cpus,
)
from tetragon.bpf.libbpf_map import CreatedMap, Map

# What the agent uses of libbpf, in one place (the bindings themselves stay behind these).
__all__ = ["BpfError", "BpfObject", "CreatedMap", "Link", "Map", "num_possible_cpus"]


class Link:
    """An attachment of a program; destroying it detaches the program."""

    def __init__(self, ptr: int, program: str) -> None:
        self._ptr: int | None = ptr
        self.program = program

    def close(self) -> None:
        if self._ptr is not None:
            lib().bpf_link__destroy(self._ptr)
            self._ptr = None

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
            opts = OpenOpts(sz=ctypes.sizeof(OpenOpts), btf_custom_path=btf_path.encode())
        ptr = lb.bpf_object__open_file(self.path.encode(), ctypes.byref(opts) if opts else None)
        if not ptr:
            raise BpfError(f"cannot open BPF object {self.path}", errno_value())
        self._ptr: int | None = ptr
        self.links: list[Link] = []

    def _obj(self) -> int:
        if self._ptr is None:
            raise BpfError(f"BPF object {self.path} is closed")
        return self._ptr

    def _names(self, next_fn: Any, name_fn: Any) -> list[str]:
        """The names of the object's programs or maps, walked with libbpf's next/name pair."""
        names: list[str] = []
        item = next_fn(self._obj(), None)
        while item:
            names.append(name_fn(item).decode())
            item = next_fn(self._obj(), item)
        return names

    def program_names(self) -> list[str]:
        lb = lib()
        return self._names(lb.bpf_object__next_program, lb.bpf_program__name)

    def map_names(self) -> list[str]:
        lb = lib()
        return self._names(lb.bpf_object__next_map, lb.bpf_map__name)

    def _program(self, name: str) -> int:
        prog = lib().bpf_object__find_program_by_name(self._obj(), name.encode())
        if not prog:
            raise BpfError(f"no program {name} in {self.path}")
        return int(prog)

    def set_autoload(self, name: str, autoload: bool) -> None:
        err = lib().bpf_program__set_autoload(self._program(name), autoload)
        if err:
            raise BpfError(f"set autoload of {name}", -err)

    def set_attach_target(self, name: str, function: str) -> None:
        """The kernel function a BTF-attached program (fentry, fmod_ret) hooks, set before load."""
        err = lib().bpf_program__set_attach_target(self._program(name), 0, function.encode())
        if err:
            raise BpfError(f"set attach target of {name} to {function}", -err)

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
        sec_id = lb.btf__find_by_name_kind(btf, section.encode(), BTF_KIND_DATASEC) if btf else -1
        if sec_id < 0:
            raise BpfError(f"no section {section} in {self.path}")
        sec = BtfType.from_address(lb.btf__type_by_id(btf, sec_id))
        vlen = sec.info & 0xFFFF
        infos = (BtfVarSecinfo * vlen).from_address(lb.btf__type_by_id(btf, sec_id) + ctypes.sizeof(BtfType))
        for vsi in infos:
            var = BtfType.from_address(lb.btf__type_by_id(btf, vsi.type))
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
        with libbpf_log() as lines:
            err = lib().bpf_object__load(self._obj())
        captured = "".join(lines)
        if err:
            tail = "\n".join(captured.strip().splitlines()[-15:])
            raise BpfError(
                f"cannot load BPF object {Path(self.path).name}" + (f"\n{tail}" if tail else ""), -err
            )

    def _attach_with(self, name: str, what: str, call: Any) -> Link:
        with libbpf_log() as lines:
            ctypes.set_errno(0)
            ptr = call(self._program(name))
            err = errno_value()
        captured = "".join(lines)
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

    def attach_uprobe(
        self, name: str, binary: str, symbol: str = "", offset: int = 0, pid: int = -1, ref_ctr: int = 0
    ) -> Link:
        """Uprobe on `binary` at `symbol` (+ `offset`), or at file `offset` when no symbol is given;
        `ref_ctr`: file offset of a counter the kernel increments while the uprobe is attached (a USDT
        semaphore)."""
        opts = UprobeOpts(
            sz=ctypes.sizeof(UprobeOpts),
            func_name=symbol.encode() if symbol else None,
            ref_ctr_offset=ref_ctr,
        )
        where = f"{binary}:{symbol or hex(offset)}"
        return self._attach_with(
            name,
            f"{name} to uprobe {where}",
            lambda prog: lib().bpf_program__attach_uprobe_opts(
                prog, pid, binary.encode(), offset, ctypes.byref(opts)
            ),
        )

    def attach_kprobe(self, name: str, function: str, retprobe: bool = False, cookie: int = 0) -> Link:
        """A kprobe (or kretprobe) on kernel function `function`; the program reads `cookie` with
        bpf_get_attach_cookie()."""
        opts = KprobeOpts(sz=ctypes.sizeof(KprobeOpts), bpf_cookie=cookie, retprobe=retprobe)
        what = f"{name} to {'kretprobe' if retprobe else 'kprobe'} {function}"
        return self._attach_with(
            name,
            what,
            lambda prog: lib().bpf_program__attach_kprobe_opts(prog, function.encode(), ctypes.byref(opts)),
        )

    def attach_kprobe_multi(self, name: str, functions: list[str], retprobe: bool = False) -> Link:
        """One kprobe.multi link (fprobe) on every function of `functions`; the attach cookie of each
        is its position in `functions`."""
        syms = (ctypes.c_char_p * len(functions))(*(f.encode() for f in functions))
        cookies = (ctypes.c_uint64 * len(functions))(*range(len(functions)))
        opts = KprobeMultiOpts(
            sz=ctypes.sizeof(KprobeMultiOpts),
            syms=syms,
            cookies=ctypes.cast(cookies, ctypes.c_void_p),
            cnt=len(functions),
            retprobe=retprobe,
        )
        what = f"{name} to kprobe.multi{' return' if retprobe else ''} {','.join(functions)}"
        return self._attach_with(
            name,
            what,
            lambda prog: lib().bpf_program__attach_kprobe_multi_opts(prog, None, ctypes.byref(opts)),
        )

    def detach(self) -> None:
        """Close every link (the programs stop running); maps and programs stay until close()."""
        for link in reversed(self.links):
            link.close()
        self.links.clear()

    def close(self) -> None:
        self.detach()
        if self._ptr is not None:
            lib().bpf_object__close(self._ptr)
            self._ptr = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
