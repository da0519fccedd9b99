"""The C structs in bpf/include/events.h and the Python decoder agree on sizes and offsets."""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_cc
from tetragon.abi import events_h as layout

ROOT = Path(__file__).resolve().parents[2]


def _field_offsets(fmt: struct.Struct) -> list[int]:
    """Offset of every value-producing item of a little-endian struct format."""
    items = re.findall(r"(\d*)([a-zA-Z])", fmt.format.lstrip("<"))
    offsets: list[int] = []
    prefix = "<"
    for count, code in items:
        n = int(count or 1)
        if code == "x":
            prefix += f"{n}x"
            continue
        if code == "s":  # a char array is one field
            offsets.append(struct.calcsize(prefix))
            prefix += f"{n}s"
            continue
        for _ in range(n):
            offsets.append(struct.calcsize(prefix))
            prefix += code
    return offsets


def _c_layout(struct_name: str, fields: tuple[str, ...], tmp_path: Path) -> list[int]:
    lines = [f'printf("%zu\\n", offsetof(struct {struct_name}, {f}));' for f in fields]
    src = tmp_path / "layout.c"
    src.write_text(
        '#include <stdio.h>\n#include <stddef.h>\n#include "events.h"\nint main(void) {\n'
        + f'printf("%zu\\n", sizeof(struct {struct_name}));\n'
        + "\n".join(lines)
        + "\nreturn 0; }\n"
    )
    exe = tmp_path / "layout"
    subprocess.run([require_cc(), "-I", str(ROOT / "bpf/include"), str(src), "-o", str(exe)], check=True)
    return [
        int(x) for x in subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
    ]


@pytest.mark.parametrize(
    ("name", "fmt", "fields"),
    [
        ("msg_exec", layout.MSG_EXEC, layout.EXEC_FIELDS),
        ("msg_clone", layout.MSG_CLONE, layout.CLONE_FIELDS),
        ("msg_exit", layout.MSG_EXIT, layout.EXIT_FIELDS),
        ("msg_generic", layout.MSG_GENERIC, layout.GENERIC_FIELDS),
        ("gen_arg", layout.GEN_ARG, layout.GEN_ARG_FIELDS),
        ("gen_bytes", layout.GEN_BYTES, layout.GEN_BYTES_FIELDS),
        ("gen_path", layout.GEN_PATH, layout.GEN_PATH_FIELDS),
        ("gen_sock", layout.GEN_SOCK, layout.GEN_SOCK_FIELDS),
        ("gen_sockaddr", layout.GEN_SOCKADDR, layout.GEN_SOCKADDR_FIELDS),
        ("gen_cred", layout.GEN_CRED, layout.GEN_CRED_FIELDS),
        ("gen_module", layout.GEN_MODULE, layout.GEN_MODULE_FIELDS),
        ("gen_userns", layout.GEN_USERNS, layout.GEN_USERNS_FIELDS),
        ("gen_bpf_attr", layout.GEN_BPF_ATTR, layout.GEN_BPF_ATTR_FIELDS),
        ("gen_bpf_map", layout.GEN_BPF_MAP, layout.GEN_BPF_MAP_FIELDS),
        ("gen_perf_event", layout.GEN_PERF_EVENT, layout.GEN_PERF_EVENT_FIELDS),
        ("gen_ima", layout.GEN_IMA, layout.GEN_IMA_FIELDS),
        ("gen_skb", layout.GEN_SKB, layout.GEN_SKB_FIELDS),
    ],
)
def test_struct_matches_header(
    name: str, fmt: struct.Struct, fields: tuple[str, ...], tmp_path: Path
) -> None:
    c = _c_layout(name, fields, tmp_path)
    assert c[0] == fmt.size, f"sizeof(struct {name})"
    assert c[1:] == _field_offsets(fmt), f"offsets of struct {name} fields {fields}"


def test_constants_match_header() -> None:
    header = (ROOT / "bpf/include/events.h").read_text()
    defines = dict(re.findall(r"#define (\w+) \(?(\d+)", header))
    for name in (
        "MSG_OP_EXECVE",
        "MSG_OP_EXIT",
        "MSG_OP_CLONE",
        "EXEC_FILENAME_MAX",
        "EXEC_ARGS_MAX",
        "EXEC_CWD_MAX",
        "EXEC_CGROUP_MAX",
        "EXEC_EXE_MAX",
        "STAT_COUNT",
        "STAT_EXEC_SENT",
        "STAT_EXEC_LOST",
        "STAT_EXIT_SENT",
        "STAT_EXIT_LOST",
        "STAT_CLONE_SENT",
        "STAT_CLONE_LOST",
        "STAT_EXECVE_MAP_UPDATE_ERR",
        "STAT_EXECVE_MAP_DELETE_ERR",
    ):
        assert int(defines[name]) == getattr(layout, name), name
    flags = re.findall(r"#define (EXEC_(?:F|PRIV)_\w+) \(1 << (\d+)\)", header)
    assert len(flags) >= 9, "the EXEC_F_/EXEC_PRIV_ flag defines were not found"
    for name, value in flags:
        assert getattr(layout, name) == 1 << int(value), name


def test_generic_constants_match_header() -> None:
    header = (ROOT / "bpf/include/events.h").read_text()
    defines = dict(re.findall(r"#define (\w+) (\d+)\b", header))
    prefixes = ("MSG_OP_GENERIC_", "STAT_GENERIC_", "GEN_ARGS_", "GEN_STRING_", "GEN_BYTES_", "GEN_RECORD_")
    prefixes += ("GEN_SELECTOR_",)
    names = [n for n in defines if n.startswith(prefixes + ("GEN_KIND_", "ACTION_"))]
    assert len(names) >= 30
    for name in names:
        assert int(defines[name]) == getattr(layout, name), name
    flags = re.findall(r"#define (GEN_(?:F|AF)_\w+) \(1 << (\d+)\)", header)
    assert len(flags) >= 6, "the GEN_F_/GEN_AF_ flag defines were not found"
    for name, value in flags:
        assert getattr(layout, name) == 1 << int(value), name
