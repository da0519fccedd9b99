"""spec.loader's user-space half: one dummy software perf event per CPU with mmap, mmap2 and build-id
reporting on, so that the kernel calls perf_event_mmap_output for every executable mapping (the
gen_loader kprobe, bpf/include/generic/loader.h, turns those calls into process_loader records). The
events are never read: they have no ring buffer, and only their ids matter, written per CPU into the
object's gen_loader_id map. Tetragon's loader sensor does the same."""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct

from tetragon.bpf.libbpf import BpfError, BpfObject, num_possible_cpus

_NR_PERF_EVENT_OPEN = 298  # x86-64
_PERF_TYPE_SOFTWARE, _PERF_COUNT_SW_DUMMY = 1, 9
_PERF_FLAG_FD_CLOEXEC = 8
_PERF_EVENT_IOC_ID = 0x80082407  # _IOR('$', 7, __u64 *)
# perf_event_attr's flag word: mmap (bit 8), mmap2 (bit 23), build_id (bit 34)
_FLAGS = (1 << 8) | (1 << 23) | (1 << 34)
_ATTR_SIZE = 128  # PERF_ATTR_SIZE_VER7 and later fields zero

_libc = ctypes.CDLL(None, use_errno=True)


def _open_dummy(cpu: int) -> int:
    """A dummy perf event of every task on `cpu` reporting executable mappings with build ids."""
    attr = bytearray(_ATTR_SIZE)
    struct.pack_into("<IIQ", attr, 0, _PERF_TYPE_SOFTWARE, _ATTR_SIZE, _PERF_COUNT_SW_DUMMY)
    struct.pack_into("<Q", attr, 40, _FLAGS)
    buf = (ctypes.c_char * _ATTR_SIZE).from_buffer(attr)
    fd = _libc.syscall(_NR_PERF_EVENT_OPEN, buf, -1, cpu, -1, _PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"perf_event_open(dummy, cpu {cpu}): {os.strerror(err)}")
    return int(fd)


def start_mmap_reporting(obj: BpfObject) -> list[int]:
    """Open the dummy events of every online CPU (an offline one refuses: ENODEV) and write their ids
    into gen_loader_id; the fds returned keep them alive (closing them stops the events)."""
    ncpu = num_possible_cpus()
    ids = [0] * ncpu
    fds: list[int] = []
    try:
        for cpu in range(ncpu):
            try:
                fd = _open_dummy(cpu)
            except OSError as e:
                if e.errno == 19:  # ENODEV: an offline CPU
                    continue
                raise BpfError(f"spec.loader: {e.strerror}", e.errno or 0) from None
            fds.append(fd)
            out = bytearray(8)
            fcntl.ioctl(fd, _PERF_EVENT_IOC_ID, out)
            ids[cpu] = struct.unpack("<Q", out)[0]
        obj.map("gen_loader_id").update(struct.pack("<I", 0), struct.pack(f"<{ncpu}Q", *ids))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds
