"""spec.loader: the hook the compiler makes (a kprobe on perf_event_mmap_output with the loader's raw
slots), its refusal without kprobes, and the process_loader event built from a record. The kernel side
runs in the guest (tests/vm/test_loader.py)."""

from __future__ import annotations

import base64
import re

import pytest

from tests.unit.generic_reference import build_generic_event, decode_generic
from tests.unit.test_generic_events import NODE, PARENT, PROC, TIME, blob, record, roundtrip
from tetragon.abi import events_h as L
from tetragon.abi import generic_cfg_h as G
from tetragon.events.genline import HookLines
from tetragon.events.render_plan import RenderPlan, hook_label
from tetragon.policy.compile import compile_policy
from tetragon.policy.errors import PolicyError
from tetragon.policy.load import parse_policy

LOADER = (
    "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: loader\nspec:\n  loader: true\n"
)
HOST = {"tracepoint": True, "raw_tp": True, "uprobe": True, "signal": True, "kprobe": False}
BUILD_ID = bytes(range(1, 21))


def test_refused_without_kprobes() -> None:
    with pytest.raises(
        PolicyError, match=re.escape("spec.loader: process_loader events need a kprobe on")
    ) as e:
        compile_policy(parse_policy(LOADER), 1, "enforce", HOST)
    assert "this kernel has no kprobes (CONFIG_KPROBES)" in str(e.value)
    assert e.value.kind == "unsupported"


def test_hook_plan() -> None:
    (hook,) = compile_policy(parse_policy(LOADER), 1, "enforce", {**HOST, "kprobe": True}).hooks
    assert [(a.kind, a.program, a.target) for a in hook.attach] == [
        ("loader", "gen_loader", ("perf_event_mmap_output",))
    ]
    assert (hook.info.event, hook.info.policy_name, hook_label(hook.info)) == (
        "process_loader",
        "loader",
        "loader",
    )
    cfg = hook.cfg
    assert (cfg.mech, cfg.op, cfg.nargs, cfg.nselectors) == (G.MECH_LOADER, L.MSG_OP_GENERIC_KPROBE, 2, 0)
    assert (cfg.args[0].reader, cfg.args[0].off) == (G.RD_STR, 0)
    buildid = cfg.args[1]
    assert (buildid.reader, buildid.off, buildid.has_size, buildid.size_off, buildid.max_data) == (
        G.RD_BUF,
        1,
        1,
        2,
        20,
    )


def _bytes_blob(data: bytes, index: int) -> bytes:
    return blob(L.GEN_KIND_BYTES, L.GEN_BYTES.pack(len(data)) + data, index)


def test_event_fields_in_tetragons_order_without_time() -> None:
    (hook,) = compile_policy(parse_policy(LOADER), 1, "enforce", {**HOST, "kprobe": True}).hooks
    raw = record([blob(L.GEN_KIND_STR, b"/usr/lib/libc.so.6", 0), _bytes_blob(BUILD_ID, 1)])
    ev = build_generic_event(decode_generic(raw), hook.info, PROC, PARENT, None, NODE, TIME)
    assert list(ev) == ["process_loader", "node_name"]
    body = ev["process_loader"]
    assert list(body) == ["process", "path", "buildid", "parent"]
    assert (body["path"], body["buildid"]) == ("/usr/lib/libc.so.6", base64.b64encode(BUILD_ID).decode())
    roundtrip(ev)
    # the export line path has no template for it: the pipeline builds the dict
    plan = RenderPlan(hook.info)
    assert HookLines(plan, NODE)._template((0, 0, 0, True, True, True)) is None
