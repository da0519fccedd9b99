"""The Python side of bpf/include/generic/resolve.h: an argument's `resolve` path as steps
(`resolve_args`, read-only data of the hook's object, one entry per argument).
tests/unit/test_resolve.py compiles the header and compares the layout."""

from __future__ import annotations

import ctypes

from tetragon.abi.events_h import GEN_ARGS_MAX

RESOLVE_STEPS = 10


class ResolveStep(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint32), ("deref", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 3)]


class ResolveCfg(ctypes.Structure):
    _fields_ = [
        ("nsteps", ctypes.c_uint8),
        ("last_size", ctypes.c_uint8),
        ("last_signed", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("step", ResolveStep * RESOLVE_STEPS),
    ]


ResolveArgs = ResolveCfg * GEN_ARGS_MAX
