"""String matchArgs values: up to GEN_MAX_VALUES inline in .rodata, more in an LPM trie per matchArgs
entry (policy/compile/strmaps.py; bpf/include/generic/strmaps.h). No BPF is loaded here
(tests/e2e/test_policy_str_maps.py loads them); the kernel's features are given as the probe reports them.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from tests.conftest import tetragon_examples
from tetragon.abi import generic_cfg_h as G
from tetragon.policy.compile import PolicyPlan, compile_policy
from tetragon.policy.compile.strmaps import STR_KEY_MAX, STR_MAP_VALUES_MAX, StrMap
from tetragon.policy.errors import PolicyError
from tetragon.policy.load import parse_policy

HOST = {"tracepoint": True, "raw_tp": True, "uprobe": True, "signal": True, "kprobe": False}
TRACEFS = Path(__file__).resolve().parents[1] / "data" / "tracefs"


def _compile(selectors: str, features: dict[str, bool] = HOST) -> PolicyPlan:
    text = (
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: s\nspec:\n"
        "  kprobes:\n  - call: sys_openat\n    syscall: true\n    args: [{index: 1, type: filename}]\n"
        f"    selectors:\n{selectors}"
    )
    return compile_policy(parse_policy(text), 3, "enforce", features, tracefs=TRACEFS)


def _match(op: str, values: list[str]) -> str:
    return f"    - matchArgs: [{{index: 1, operator: {op}, values: {values!r}}}]\n"


def test_few_values_stay_inline() -> None:
    values = [f"/etc/v{i}" for i in range(G.GEN_MAX_VALUES)]
    hook = _compile(_match("Prefix", values)).hooks[0]
    m = hook.cfg.sel[0].match[0]
    assert (m.op, m.cmp, m.map_id, m.nvals) == (G.OP_PREFIX, G.CMP_STR, 0, G.GEN_MAX_VALUES)
    assert [m.str[j].value for j in range(G.GEN_MAX_VALUES)] == [v.encode() for v in values]
    assert [m.len[j] for j in range(G.GEN_MAX_VALUES)] == [len(v) for v in values]
    assert hook.str_maps == []


def test_more_values_go_to_a_trie_per_entry() -> None:
    pre = [f"/p{i:02d}/" for i in range(40)]
    eq = [f"/e{i:02d}" for i in range(40)]
    post = [f".s{i:02d}" for i in range(9)]
    sels = (
        _match("Prefix", pre)
        + _match("Equal", ["/inline"])
        + _match("NotEqual", eq)
        + _match("Postfix", post)
    )
    hook = _compile(sels).hooks[0]
    ms = [hook.cfg.sel[k].match[0] for k in range(4)]
    assert [(m.op, m.map_id, m.nvals) for m in ms] == [
        (G.OP_PREFIX, 1, 0),
        (G.OP_EQ, 0, 1),  # one value: inline
        (G.OP_NEQ, 2, 0),
        (G.OP_POSTFIX, 3, 0),
    ]
    assert hook.str_maps == [
        StrMap(False, tuple(v.encode() for v in pre)),
        StrMap(False, tuple(v.encode() for v in eq)),
        StrMap(True, tuple(v.encode() for v in post)),
    ]


def test_trie_entries_are_lpm_keys_with_the_stored_length() -> None:
    rows = StrMap(False, (b"/etc", b"/boot", b"/etc")).entries()  # duplicates stored once
    assert rows == [
        (struct.pack("<I", 40) + b"/boot".ljust(STR_KEY_MAX, b"\0"), struct.pack("<I", 5)),
        (struct.pack("<I", 32) + b"/etc".ljust(STR_KEY_MAX, b"\0"), struct.pack("<I", 4)),
    ]
    assert all(len(key) == 4 + STR_KEY_MAX for key, _ in rows)
    # Postfix values are stored reversed: the kernel looks the argument's tail up reversed
    assert [key[4:9] for key, _ in StrMap(True, (b".conf",)).entries()] == [b"fnoc."]


def test_value_lengths_are_checked_for_trie_entries_too() -> None:
    with pytest.raises(PolicyError) as exc:
        _compile(_match("Postfix", [f".s{i}" for i in range(9)] + ["x" * 129]))
    assert "postfix longer than 128 characters" in str(exc.value)


def test_values_past_the_policy_cap_are_refused_in_one_line() -> None:
    half = STR_MAP_VALUES_MAX // 2
    ok = _compile(
        _match("Prefix", [f"/a{i}" for i in range(half)]) + _match("Equal", [f"/b{i}" for i in range(half)])
    )
    assert sum(len(m.values) for m in ok.hooks[0].str_maps) == STR_MAP_VALUES_MAX
    with pytest.raises(PolicyError) as exc:
        _compile(
            _match("Prefix", [f"/a{i}" for i in range(half)])
            + _match("Equal", [f"/b{i}" for i in range(half + 1)])
        )
    assert exc.value.kind == "unsupported"
    assert str(exc.value) == (
        f"spec: {STR_MAP_VALUES_MAX + 1} string values in matchArgs entries of more than 8 values; "
        f"this agent takes at most {STR_MAP_VALUES_MAX} per policy (STR_MAP_VALUES_MAX, for their "
        "kernel memory)"
    )


@pytest.mark.conformance
def test_file_monitoring_example_compiles_where_kprobes_exist(tmp_path: Path) -> None:
    """Tetragon's quickstart file_monitoring.yaml: 9, 10, 14 and 19 Prefix/Postfix values per entry (its
    kernel functions' traceability is not known here: an empty tracefs)."""
    text = tetragon_examples("policies", "quickstart", "file_monitoring.yaml").read_text()
    plan = compile_policy(
        parse_policy(text), 3, "enforce", {**HOST, "kprobe": True, "fentry": True}, tracefs=tmp_path
    )
    counts = [[len(m.values) for m in h.str_maps] for h in plan.hooks]
    assert counts == [[9, 10, 14], [19, 14], [13]]
    read = plan.hooks[0].cfg.sel[1].match[0]
    assert (read.op, read.map_id) == (G.OP_POSTFIX, 2)
    assert plan.hooks[0].str_maps[1].postfix


def test_strmaps_header_limits_are_the_compilers() -> None:
    """The trie key and the reversed Postfix tail the kernel builds hold the longest value allowed."""
    from pathlib import Path

    from tetragon.policy.names import MAX_POSTFIX_LEN, MAX_PREFIX_LEN

    header = (Path(__file__).resolve().parents[2] / "bpf/include/generic/strmaps.h").read_text()
    defines = {k: int(v) for k, v in re.findall(r"#define (STR_\w+_MAX) (\d+)", header)}
    assert defines == {"STR_KEY_MAX": MAX_PREFIX_LEN, "STR_POSTFIX_MAX": MAX_POSTFIX_LEN}
    assert STR_KEY_MAX == MAX_PREFIX_LEN
