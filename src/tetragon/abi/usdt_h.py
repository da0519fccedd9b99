"""The Python side of bpf/include/generic/usdt.h: where each USDT argument of a hook is
(`usdt_args`, read-only data of the hook's object). tests/unit/test_usdt.py compiles the header and
compares the layout."""

from __future__ import annotations

import ctypes

USDT_ARGS_MAX = 12
ARG_NONE, ARG_CONST, ARG_REG, ARG_REG_DEREF, ARG_SIB = 0, 1, 2, 3, 4


class UsdtArgCfg(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_uint8),
        ("size", ctypes.c_uint8),
        ("is_signed", ctypes.c_uint8),
        ("scale_shift", ctypes.c_uint8),
        ("reg_off", ctypes.c_uint16),
        ("idx_reg_off", ctypes.c_uint16),
        ("val_off", ctypes.c_int64),
    ]


UsdtArgs = UsdtArgCfg * USDT_ARGS_MAX
