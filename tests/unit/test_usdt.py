"""USDT probes: the `.note.stapsdt` reader and the x86-64 argument spec parser (src/tetragon/policy/usdt.py)
on a real ELF file built here from tests/data/usdt_probes.c, the policy compiler's hooks for spec.usdts,
bpf/include/generic/usdt.h against its Python view, and the process_usdt event's shape."""

from __future__ import annotations

import ctypes
import dataclasses
import os
import re
import struct
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_cc
from tests.unit.generic_reference import build_generic_event, decode_generic
from tests.unit.test_generic_events import NODE, PARENT, PROC, TIME, int_blob, record, roundtrip
from tests.unit.test_generic_fastpath import HOOKS
from tetragon.abi import generic_cfg_h as G
from tetragon.abi import usdt_h as U
from tetragon.policy.compile import compile_policy
from tetragon.policy.errors import PolicyError
from tetragon.policy.hookinfo import ArgInfo
from tetragon.policy.load import parse_policy
from tetragon.policy.usdt import UsdtArg, find_sites, parse_arg, parse_args, read_notes

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "tests/data/usdt_probes.c"
HEADER = ROOT / "bpf/include/generic/usdt.h"
HOST = {"tracepoint": True, "raw_tp": True, "uprobe": True, "signal": True, "probe_write_user": False}
RDI, RBP, RAX, R8 = 112, 32, 80, 72


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("usdt") / "usdt_probes"
    subprocess.run([require_cc(), "-O0", "-o", str(out), str(SOURCE)], check=True, capture_output=True)
    return out


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("-4@%edi", UsdtArg(U.ARG_REG, 4, True, reg_off=RDI)),
        ("8@%rdi", UsdtArg(U.ARG_REG, 8, False, reg_off=RDI)),
        ("1@%dil", UsdtArg(U.ARG_REG, 1, False, reg_off=RDI)),
        ("-2@%r8w", UsdtArg(U.ARG_REG, 2, True, reg_off=R8)),
        ("-1@%al", UsdtArg(U.ARG_REG, 1, True, reg_off=RAX)),
        ("8@-8(%rbp)", UsdtArg(U.ARG_REG_DEREF, 8, False, reg_off=RBP, val_off=-8)),
        ("-4@(%rax)", UsdtArg(U.ARG_REG_DEREF, 4, True, reg_off=RAX)),
        ("-4@$-9", UsdtArg(U.ARG_CONST, 4, True, val_off=-9)),
        ("8@$1099511627776", UsdtArg(U.ARG_CONST, 8, False, val_off=1 << 40)),
        (
            "-1@-96(%rbp,%rax,8)",
            UsdtArg(U.ARG_SIB, 1, True, reg_off=RBP, val_off=-96, idx_reg_off=RAX, scale_shift=3),
        ),
    ],
)
def test_arg_spec(spec: str, want: UsdtArg) -> None:
    assert parse_arg(spec) == want


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("%rdi", "no SIZE@ prefix"),
        ("3@%rdi", "size 3 is not 1, 2, 4 or 8"),
        ("1@%ah", "second byte of a register"),
        ("8@%xmm0", "unknown x86-64 register %xmm0"),
        ("8@-8(%rip)", "%rip-relative"),
        ("8@sym(%rip)", "is not understood"),
        ("4@$x", "is not a number"),
        ("1@0(%rbp,%rax,3)", "scale 3"),
    ],
)
def test_arg_spec_errors(spec: str, needle: str) -> None:
    with pytest.raises(ValueError, match=re.escape(needle)):
        parse_arg(spec)


def test_arg_specs_are_blank_separated() -> None:
    assert [a.kind for a in parse_args("-4@%edi  8@-8(%rbp) -4@$3")] == [
        U.ARG_REG,
        U.ARG_REG_DEREF,
        U.ARG_CONST,
    ]
    assert parse_args("") == []


def test_notes_of_a_built_binary(binary: Path) -> None:
    data = binary.read_bytes()
    notes = {n.name: n for n in read_notes(data)}
    assert set(notes) == {"args", "consts", "setme", "gated"}
    assert {n.provider for n in notes.values()} == {"tgtest"}
    assert notes["consts"].args == "-4@$42 -4@$-7"
    assert re.fullmatch(r"-4@-\d+\(%rbp\)", notes["setme"].args)
    assert [a.size for a in parse_args(notes["args"].args)] == [4, 8, 8]
    assert [n.name for n in read_notes(data) if n.semaphore] == ["gated"]
    for name in notes:
        (site,) = find_sites(str(binary), "tgtest", name)
        assert data[site.offset] == 0x90, name  # the probe point is the note's nop
    gated = find_sites(str(binary), "tgtest", "gated")[0]
    assert gated.ref_ctr_offset and data[gated.ref_ctr_offset : gated.ref_ctr_offset + 2] == b"\0\0"
    assert find_sites(str(binary), "tgtest", "nosuch") == []
    assert find_sites(str(binary), "other", "args") == []


def test_prelinked_addresses_move_with_stapsdt_base(binary: Path) -> None:
    """A note whose recorded .stapsdt.base differs from the section's address (prelink moved the file)
    has its pc and semaphore moved by the difference, as sys/sdt.h's readers do."""
    data = bytearray(binary.read_bytes())
    before = {n.name: n for n in read_notes(bytes(data))}
    # every note's desc starts at the 8-byte pc, then the link-time base: lower each base by 0x1000
    pos = 0
    while (pos := data.find(b"stapsdt\0", pos + 1)) >= 0:
        if struct.unpack_from("<I", data, pos - 12) != (8,) or struct.unpack_from("<I", data, pos - 4) != (
            3,
        ):
            continue  # not a note's owner name (namesz 8, type 3) but e.g. a section name
        desc = pos + 8
        (base,) = struct.unpack_from("<Q", data, desc + 8)
        struct.pack_into("<Q", data, desc + 8, base - 0x1000)
    after = {n.name: n for n in read_notes(bytes(data))}
    for name, n in before.items():
        assert after[name].pc == n.pc + 0x1000
        assert after[name].semaphore == (n.semaphore + 0x1000 if n.semaphore else 0)


def test_not_an_elf_file(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_bytes(b"#!/bin/sh\n")
    with pytest.raises(ValueError, match="not an ELF file"):
        find_sites(str(f), "a", "b")


def _compile(binary: Path, probe: str, extra: str = "", features: dict[str, bool] = HOST):  # type: ignore[no-untyped-def]
    text = (
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: u\nspec:\n  usdts:\n"
        f"  - path: {binary}\n    provider: tgtest\n    name: {probe}\n{extra}"
    )
    return compile_policy(parse_policy(text), 3, "enforce", features)


def test_compiled_hook(binary: Path) -> None:
    args = "    args:\n    - {index: 2, type: string}\n    - {index: 0, type: int32}\n"
    (hook,) = _compile(binary, "args", args).hooks
    (site,) = find_sites(str(binary), "tgtest", "args")
    assert [(a.kind, a.program, a.target) for a in hook.attach] == [
        ("uprobe", "gen_uprobe", (str(binary), "", str(site.offset), "0"))
    ]
    assert hook.sensor == "generic_usdt"
    info = hook.info
    assert (info.event, info.path, info.provider, info.probe_name) == (
        "process_usdt",
        str(binary),
        "tgtest",
        "args",
    )
    assert [(a.type, a.index) for a in info.args] == [("string", 2), ("int32", 0)]
    cfg = hook.cfg
    assert (cfg.mech, cfg.nargs) == (G.MECH_USDT, 2)
    assert [(cfg.args[i].reader, cfg.args[i].off) for i in range(2)] == [(G.RD_USTR, 2), (G.RD_INT, 0)]
    placed = U.UsdtArgs.from_buffer_copy(hook.rodata["usdt_args"])
    assert [placed[n].kind for n in range(4)] == [U.ARG_REG, U.ARG_REG_DEREF, U.ARG_REG_DEREF, U.ARG_NONE]

    (gated,) = _compile(binary, "gated").hooks
    (site,) = find_sites(str(binary), "tgtest", "gated")
    assert gated.attach[0].target[2:] == (str(site.offset), str(site.ref_ctr_offset))


@pytest.mark.parametrize(
    ("probe", "extra", "features", "needle"),
    [
        ("nosuch", "", HOST, "has no USDT probe tgtest:nosuch"),
        (
            "consts",
            "    args:\n    - {index: 2, type: int}\n",
            HOST,
            "index 2, but the probe has 2 arguments",
        ),
        (
            "args",
            "    selectors:\n    - matchActions: [{action: Set, argIndex: 0, argValue: 1}]\n",
            {**HOST, "probe_write_user": True},
            "Set argIndex 0: the probe passes that argument in a register or as a constant",
        ),
        (
            "setme",
            "    selectors:\n    - matchActions: [{action: Set, argIndex: 0, argValue: 1}]\n",
            HOST,
            "action Set: this kernel refuses bpf_probe_write_user",
        ),
        ("args", "", {**HOST, "uprobe": False}, "this kernel has no uprobes"),
    ],
)
def test_refusals(binary: Path, probe: str, extra: str, features: dict[str, bool], needle: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(needle)) as e:
        _compile(binary, probe, extra, features)
    assert str(e.value).startswith(f"spec.usdts[0] (tgtest/{probe})")


def test_set_is_an_action_with_its_index_and_value(binary: Path) -> None:
    extra = (
        "    args:\n    - {index: 0, type: int32}\n"
        "    selectors:\n    - matchActions: [{action: Set, argIndex: 0, argValue: 4294967295}]\n"
    )
    (hook,) = _compile(binary, "setme", extra, {**HOST, "probe_write_user": True}).hooks
    act = hook.cfg.sel[0].actions[0]
    assert (act.id, act.arg_sig, act.arg_error) == (14, 0, -1)
    assert hook.cfg.sel_args == 1  # read before Set writes over it


def test_header_matches_python_view(tmp_path: Path) -> None:
    fields = [f for f, *_ in U.UsdtArgCfg._fields_]
    src = tmp_path / "u.c"
    src.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n"
        f'#include "{HEADER}"\nint main(void) {{\n'
        'printf("sizeof %zu\\n", sizeof(struct usdt_arg_cfg));\n'
        + "".join(f'printf("{f} %zu\\n", offsetof(struct usdt_arg_cfg, {f}));\n' for f in fields)
        + "return 0; }\n"
    )
    exe = tmp_path / "u"
    subprocess.run([require_cc(), str(src), "-o", str(exe)], check=True)
    out = dict(
        line.split()
        for line in subprocess.run([str(exe)], capture_output=True, text=True).stdout.splitlines()
    )
    assert int(out["sizeof"]) == ctypes.sizeof(U.UsdtArgCfg)
    for f in fields:
        assert int(out[f]) == getattr(U.UsdtArgCfg, f).offset, f
    defines = dict(re.findall(r"#define (USDT_\w+) (\d+)", HEADER.read_text()))
    assert int(defines.pop("USDT_ARGS_MAX")) == U.USDT_ARGS_MAX
    assert {k.removeprefix("USDT_"): int(v) for k, v in defines.items()} == {
        name: getattr(U, name) for name in ("ARG_NONE", "ARG_CONST", "ARG_REG", "ARG_REG_DEREF", "ARG_SIB")
    }


def test_usdt_event_shape() -> None:
    hook = dataclasses.replace(HOOKS[(9, 2)], args=(ArgInfo("int32"),))  # the fast path's usdt hook
    ev = build_generic_event(decode_generic(record([int_blob(-3)])), hook, PROC, PARENT, None, NODE, TIME)
    body = ev["process_usdt"]
    assert list(body) == [
        "process", "parent", "path", "provider", "name", "policy_name", "message", "args", "tags", "action"
    ]  # fmt: skip
    assert (body["path"], body["provider"], body["name"]) == (
        "/usr/bin/python3.11",
        "python",
        "function__entry",
    )
    assert body["args"] == [{"int_arg": -3}] and body["action"] == "KPROBE_ACTION_POST"
    roundtrip(ev)


@pytest.mark.parametrize(
    "content",
    [
        b"\x7fELF\x02\x01" + b"\0" * 34,  # the identification, then headers cut short
        # one section header, 1 TiB into a file of 64 bytes
        b"\x7fELF\x02\x01" + b"\0" * 26 + struct.pack("<QQ6xHHHHH", 0, 1 << 40, 0, 0, 64, 1, 0),
    ],
)
def test_a_malformed_elf_is_refused_with_a_policy_error(tmp_path: Path, content: bytes) -> None:
    binary = tmp_path / "bad"
    binary.write_bytes(content)
    with pytest.raises(ValueError, match="truncated or malformed ELF"):
        find_sites(str(binary), "p", "n")
    text = f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: bad-elf
spec:
  usdts:
  - path: {binary}
    provider: p
    name: n
"""
    with pytest.raises(PolicyError, match="truncated or malformed ELF"):
        compile_policy(parse_policy(text), 1, "enforce", {"uprobe": True, "tracepoint": True})


def test_a_fifo_or_device_is_refused_without_reading_it(tmp_path: Path) -> None:
    """Read under the policy lock: a FIFO nobody writes must not block it, /dev/zero must not fill
    memory."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (str(fifo), "/dev/zero"):
        with pytest.raises(ValueError, match="not a regular file"):
            find_sites(path, "p", "n")
