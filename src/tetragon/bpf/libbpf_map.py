"""A map of a BPF object (tetragon.bpf.libbpf): its sizes, lookups, updates and deletes
through libbpf's syscall wrappers; and `CreatedMap`, a map the agent creates without an object (the
inner maps of a map-in-map)."""

from __future__ import annotations

import ctypes
import os

from tetragon.bpf.libbpf_bindings import BpfError, MapCreateOpts, errno_value, lib, num_possible_cpus


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

    def set_value_size(self, n: int) -> None:
        err = lib().bpf_map__set_value_size(self._ptr, n)
        if err:
            raise BpfError(f"set value_size of {self.name} to {n}", -err)

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
            err = errno_value()
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
        update_fd(self.fd, self.name, key, value, flags)

    def delete(self, key: bytes) -> bool:
        kbuf = ctypes.create_string_buffer(key, len(key))
        if lib().bpf_map_delete_elem(self.fd, kbuf) != 0:
            err = errno_value()
            if err == 2:
                return False
            raise BpfError(f"delete from {self.name}", err)
        return True


def update_fd(fd: int, name: str, key: bytes, value: bytes, flags: int = 0) -> None:
    kbuf = ctypes.create_string_buffer(key, len(key))
    vbuf = ctypes.create_string_buffer(value, len(value))
    if lib().bpf_map_update_elem(fd, kbuf, vbuf, flags) != 0:
        raise BpfError(f"update of {name}", errno_value())


class CreatedMap:
    """A map created by the agent itself (BPF_MAP_CREATE), owned through its fd until close()."""

    def __init__(
        self, map_type: int, name: str, key_size: int, value_size: int, max_entries: int, flags: int = 0
    ) -> None:
        opts = MapCreateOpts(sz=ctypes.sizeof(MapCreateOpts), map_flags=flags)
        fd = lib().bpf_map_create(
            map_type, name.encode(), key_size, value_size, max_entries, ctypes.byref(opts)
        )
        if fd < 0:  # libbpf 1.x returns -errno
            raise BpfError(f"cannot create map {name} ({max_entries} entries)", -fd)
        self.fd: int = fd
        self.name = name

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        update_fd(self.fd, self.name, key, value, flags)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
