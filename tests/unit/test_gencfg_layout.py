"""bpf/include/generic_cfg.h and its Python view (src/tetragon/abi/generic_cfg_h.py) agree.

The hook configuration is written byte for byte into the object's .rodata, so every struct's size
and every field's offset must match what the C compiler lays out, and every #define of the header
must have the same value on both sides.
"""

from __future__ import annotations

import ctypes
import re
import subprocess
from pathlib import Path

from tests.conftest import require_cc
from tetragon.abi import generic_cfg_h as G

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "bpf/include/generic_cfg.h"

STRUCTS: dict[str, type[ctypes.Structure]] = {
    "gen_arg_cfg": G.ArgCfg,
    "gen_match": G.Match,
    "gen_match_pid": G.MatchPid,
    "gen_match_bin": G.MatchBin,
    "gen_match_ns": G.MatchNs,
    "gen_match_caps": G.MatchCaps,
    "gen_action": G.Action,
    "gen_selector": G.Selector,
    "gen_hook_cfg": G.HookCfg,
    "gen_policy_conf": G.PolicyConf,
    "gen_proc": G.GenProc,
}


def _c_offsets(tmp_path: Path) -> dict[str, int]:
    lines = []
    for cname, py in STRUCTS.items():
        lines.append(f'printf("{cname} %zu\\n", sizeof(struct {cname}));')
        for fname, *_ in py._fields_:
            if fname.startswith("pad"):
                continue
            lines.append(f'printf("{cname}.{fname} %zu\\n", offsetof(struct {cname}, {fname}));')
    src = tmp_path / "cfg.c"
    src.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n"
        '#include "events.h"\n#include "generic_cfg.h"\nint main(void) {\n'
        + "\n".join(lines)
        + "\nreturn 0; }\n"
    )
    exe = tmp_path / "cfg"
    subprocess.run([require_cc(), "-I", str(ROOT / "bpf/include"), str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def test_structs_match_header(tmp_path: Path) -> None:
    c = _c_offsets(tmp_path)
    for cname, py in STRUCTS.items():
        assert ctypes.sizeof(py) == c[cname], f"sizeof(struct {cname})"
        for fname, *_ in py._fields_:
            if fname.startswith("pad"):
                continue
            assert getattr(py, fname).offset == c[f"{cname}.{fname}"], f"{cname}.{fname}"


def test_constants_match_header() -> None:
    """Every numeric #define of the header (operators included) is the module's constant of that name."""
    defines = dict(re.findall(r"#define (\w+) (\d+)\b", HEADER.read_text()))
    checked = 0
    for name, value in defines.items():
        if name.startswith("TETRAGON_"):
            continue
        assert getattr(G, name) == int(value), name
        checked += 1
    assert checked >= 80


def test_operator_numbers_follow_tetragon() -> None:
    """Kernel operator numbers are Tetragon's (spec §3.3), e.g. GT=1, Prefix=8, Mask=12, NotPostfix=27."""
    header = HEADER.read_text()
    pairs = dict(re.findall(r"#define OP_(\w+) (\d+)", header))
    by_number = {int(v): k for k, v in pairs.items()}
    assert len(G.OP_BY_NAME) == len(pairs)
    for name, number in G.OP_BY_NAME.items():
        assert number in by_number, name
        assert by_number[number].replace("_", "").lower() in (
            name.lower(),
            {"Equal": "eq", "NotEqual": "neq"}.get(name, "").lower(),
        ), name
