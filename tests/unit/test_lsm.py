"""spec.lsmhooks without a kernel: the compiled plan (program, attach target, slots, imaHash set),
the refusals, and process_lsm as the agent exports it (JSON dict and line paths, ima_hash, compact
line, gRPC message). The BPF side runs in the guest: tests/vm/test_lsm_hooks.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest

from tests.unit.test_generic_fastpath import blob, make_agent, record, run
from tetragon.abi import events_h as L
from tetragon.abi import generic_cfg_h as G
from tetragon.api.convert import event_to_proto, proto_to_event
from tetragon.events.compact import format_compact
from tetragon.events.lsm_event import add_ima_hash, ima_hash, make_lsm_builder
from tetragon.events.render_plan import hook_label
from tetragon.policy.compile import compile_policy
from tetragon.policy.errors import PolicyError
from tetragon.policy.hookinfo import ArgInfo, HookInfo
from tetragon.policy.load import parse_policy

GUEST = {
    "tracepoint": True,
    "raw_tp": True,
    "kprobe": True,
    "signal": True,
    "fmodret": True,
    "lsm": True,
    "ima": True,
}

FILE_OPEN = """
  lsmhooks:
  - hook: "file_open"
    args: [{index: 0, type: "file"}]
    selectors:
    - matchBinaries: [{operator: "In", values: ["/usr/bin/cat"]}]
      matchArgs: [{index: 0, operator: "Equal", values: ["/etc/passwd", "/etc/shadow"]}]
"""

BPRM_CHECK = """
  lsmhooks:
  - hook: "bprm_check_security"
    args:
    - index: 0
      type: "linux_binprm"
    selectors:
    - matchArgs: [{index: 0, operator: Postfix, values: ["/nop"]}]
      matchActions:
      - action: Override
        argError: -1
      - action: Post
        imaHash: true
    - matchArgs: [{index: 0, operator: Prefix, values: ["/tmp/"]}]
    - matchArgs: [{index: 0, operator: Prefix, values: ["/opt/"]}]
      matchActions: [{action: Post, imaHash: true}]
"""


def _compile(body: str, features: dict[str, bool] = GUEST, mode: str = "enforce"):  # type: ignore[no-untyped-def]
    text = f"apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: lsm\nspec:\n{body}"
    return compile_policy(parse_policy(text), 3, mode, features)


def test_file_open_is_a_bpf_lsm_program_reading_slots() -> None:
    plan = _compile(FILE_OPEN)
    (hook,) = plan.hooks
    assert [(a.kind, a.program, a.target) for a in hook.attach] == [("lsm", "gen_lsm", ("file_open",))]
    assert hook.cfg.mech == G.MECH_RAW_TP and hook.cfg.op == L.MSG_OP_GENERIC_LSM
    assert hook.cfg.args[0].reader == G.RD_FILE and hook.cfg.args[0].off == 0
    assert hook.cfg.has_return == 0 and hook.inmap == [] and hook.sensor == "generic_lsm"
    assert (hook.info.event, hook.info.function_name, hook.info.policy_name) == (
        "process_lsm",
        "file_open",
        "lsm",
    )
    assert hook_label(hook.info) == "lsm:file_open"


def test_ima_hash_takes_the_sleepable_program_and_lists_its_selectors() -> None:
    (hook,) = _compile(BPRM_CHECK).hooks
    assert [(a.kind, a.program, a.target) for a in hook.attach] == [
        ("lsm", "gen_lsm_ima_bprm", ("bprm_check_security",))
    ]
    assert hook.cfg.has_return == 1  # the record waits in gen_stash while the file is hashed
    assert hook.inmap == [(G.INMAP_IMA_SELECTORS, 0), (G.INMAP_IMA_SELECTORS, 2)]
    actions = hook.cfg.sel[0].actions
    assert (actions[0].id, actions[0].arg_error, actions[1].id) == (L.ACTION_OVERRIDE, -1, L.ACTION_POST)
    file_hook = FILE_OPEN + "      matchActions: [{action: Post, imaHash: true}]\n"
    assert _compile(file_hook).hooks[0].attach[0].program == "gen_lsm_ima_file"


def test_security_prefix_is_accepted_and_hooks_follow_the_other_sections() -> None:
    body = "  tracepoints:\n  - {subsystem: raw_syscalls, event: sys_enter, raw: true}\n" + FILE_OPEN.replace(
        "lsmhooks:\n", "lsmhooks:\n  - hook: security_inode_unlink\n"
    )
    hooks = _compile(body).hooks
    assert [h.hook_id for h in hooks] == [0, 1, 2]
    assert [h.info.function_name for h in hooks[1:]] == ["inode_unlink", "file_open"]
    assert hooks[1].attach[0].target == ("inode_unlink",)


@pytest.mark.parametrize(
    ("body", "features", "needle"),
    [
        (FILE_OPEN, {**GUEST, "lsm": False}, "spec.lsmhooks[0] (hook file_open): BPF LSM is not active"),
        (BPRM_CHECK, {**GUEST, "lsm": False}, "BPF LSM is not active (CONFIG_BPF_LSM and `bpf` in the lsm="),
        (
            "  lsmhooks:\n  - hook: inode_unlink\n    selectors:\n"
            "    - matchActions: [{action: Post, imaHash: true}]\n",
            GUEST,
            "imaHash hashes the file of an LSM hook whose first argument is a file",
        ),
        ("  lsmhooks:\n  - hook: file_open\n    args: [{index: 6, type: int}]\n", GUEST, "first 6"),
        (
            "  kprobes:\n  - call: security_file_open\n    syscall: false\n    selectors:\n"
            "    - matchActions: [{action: Post, imaHash: true}]\n",
            GUEST,
            "imaHash needs BPF LSM hooks",
        ),
    ],
)
def test_refusals_are_one_line_naming_the_hook(body: str, features: dict[str, bool], needle: str) -> None:
    with pytest.raises(PolicyError) as err:
        _compile(body, features)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_override_loads_in_enforce_and_monitor_mode() -> None:
    for mode in ("enforce", "monitor"):
        assert _compile(BPRM_CHECK, mode=mode).hooks[0].attach[0].kind == "lsm"


HOOK = HookInfo(
    policy_name="lsm",
    event="process_lsm",
    function_name="bprm_check_security",
    message="exec checked",
    tags=("a", "b"),
    args=(ArgInfo("linux_binprm"),),
)


def test_builder_follows_process_lsm_field_order() -> None:
    build = make_lsm_builder(HOOK)
    args = [{"linux_binprm_arg": {"path": "/tmp/nop"}}]
    ev = build(args, L.ACTION_OVERRIDE, 0, 0, 0, {"pid": 1}, {"pid": 0}, [{"pid": 0}], "n", "t")
    assert ev == {
        "process_lsm": {
            "process": {"pid": 1},
            "parent": {"pid": 0},
            "function_name": "bprm_check_security",
            "policy_name": "lsm",
            "message": "exec checked",
            "args": args,
            "action": "KPROBE_ACTION_OVERRIDE",
            "tags": ["a", "b"],
            "ancestors": [{"pid": 0}],
        },
        "node_name": "n",
        "time": "t",
    }
    assert list(ev["process_lsm"]) == [
        *("process", "parent", "function_name", "policy_name", "message"),
        *("args", "action", "tags", "ancestors"),
    ]
    bare = make_lsm_builder(HookInfo(policy_name="", event="process_lsm", function_name="file_open"))
    assert bare([], L.ACTION_POST, 0, 0, 0, None, None, None, "n", "t")["process_lsm"] == {
        "function_name": "file_open",
        "action": "KPROBE_ACTION_POST",
    }


def _ima_tail(algo: int, digest: bytes) -> bytes:
    return L.GEN_IMA.pack(algo, digest.ljust(64, b"\0"))


@pytest.mark.parametrize(
    ("algo", "expected"),
    [
        (4, "sha256:" + hashlib.sha256(b"x").hexdigest()),
        (2, "sha1:" + hashlib.sha256(b"x").digest()[:20].hex()),
        (6, "sha512:" + hashlib.sha256(b"x").digest().ljust(64, b"\0").hex()),
        (99, None),  # an algorithm Tetragon does not name
        (-95, None),  # the helper's error (-EOPNOTSUPP)
    ],
)
def test_ima_hash_of_the_record_tail(algo: int, expected: str | None) -> None:
    raw = record([], op=L.MSG_OP_GENERIC_LSM, flags=L.GEN_F_IMA) + _ima_tail(
        algo, hashlib.sha256(b"x").digest()
    )
    assert ima_hash(raw, len(raw)) == expected
    event = {"process_lsm": {"function_name": "f"}}
    add_ima_hash(event, raw, len(raw))
    assert event["process_lsm"].get("ima_hash") == expected
    with pytest.raises(ValueError, match="no room"):
        ima_hash(raw[:40], 40)


LSM_HOOKS = {
    (4, 0): HookInfo(
        policy_name="lsm", event="process_lsm", function_name="file_open", args=(ArgInfo("file"),)
    ),
    (4, 1): HOOK,
}


def _lsm_record(path: bytes, hook_id: int, ima: bytes = b"", **kw: object) -> bytes:
    arg = blob(L.GEN_KIND_PATH, L.GEN_PATH.pack(0o100755, 0) + path, 0)
    raw = record([arg], policy=(4, hook_id), op=L.MSG_OP_GENERIC_LSM, **kw)  # type: ignore[arg-type]
    if not ima:
        return raw
    size = len(raw) + len(ima)
    head = bytearray(raw)
    head[4:8] = size.to_bytes(4, "little")  # common.size: the record includes the hash
    return bytes(head) + ima


def test_lsm_records_through_the_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The line path (no template for a record with a hash: it takes the dict path) and the dict path
    give the same lines; ima_hash is the body's last field."""
    import tests.unit.test_generic_fastpath as fastpath

    monkeypatch.setattr(fastpath, "HOOKS", LSM_HOOKS)
    digest = hashlib.sha256(b"#!/bin/sh\n").digest()
    records = [
        _lsm_record(b"/etc/passwd", 0),
        _lsm_record(b"/tmp/nop", 1, _ima_tail(4, digest), action=L.ACTION_OVERRIDE, flags=L.GEN_F_IMA),
        _lsm_record(b"/etc/shadow", 0, pid=200, tid=200),
    ]
    fast = make_agent(tmp_path, "fast.json")
    slow = make_agent(tmp_path, "slow.json", subscriber=True)
    slow.clock.offset = fast.clock.offset
    try:
        fast_out, slow_out = run(fast, records), run(slow, records)
    finally:
        for a in (fast, slow):
            if a.metrics is not None:
                a.metrics.shutdown()
    assert fast_out == slow_out
    events = [orjson.loads(line) for line in fast_out.splitlines()]
    assert [list(e) for e in events] == [["process_lsm", "node_name", "time"]] * 3
    first, second, third = (e["process_lsm"] for e in events)
    assert list(first) == ["process", "parent", "function_name", "policy_name", "args", "action"]
    assert first["args"] == [{"file_arg": {"path": "/etc/passwd", "permission": "-rwxr-xr-x"}}]
    assert first["process"]["binary"] == "/usr/bin/cat" and first["process"]["tid"] == 101
    assert list(second)[-1] == "ima_hash" and second["ima_hash"] == "sha256:" + digest.hex()
    assert second["action"] == "KPROBE_ACTION_OVERRIDE"
    assert second["args"] == [{"linux_binprm_arg": {"path": "/tmp/nop", "permission": "-rwxr-xr-x"}}]
    assert "parent" not in third  # the orphan's parent is unknown

    # gRPC: the same event as a ProcessLsm message and back
    assert proto_to_event(event_to_proto(events[1])) == events[1]
    msg = event_to_proto(events[1])
    assert msg.WhichOneof("event") == "process_lsm"
    assert msg.process_lsm.ima_hash == "sha256:" + digest.hex()
    # tetra getevents -o compact
    line = format_compact(events[1], ima_hash=True)
    node = events[1]["node_name"]
    assert line == f"🔒 LSM     {node} /usr/bin/cat bprm_check_security\n   /tmp/nop sha256:{digest.hex()}"


@pytest.mark.parametrize("arg_error", [0, 1, 13, -4096, -2147483648])
def test_override_needs_a_negative_errno(arg_error: int) -> None:
    """An LSM hook's result is argError: outside [-4095, -1] the kernel would allow the operation
    while the event said it was overridden."""
    body = BPRM_CHECK.replace("argError: -1", f"argError: {arg_error}")
    with pytest.raises(PolicyError, match=rf"Override's argError {arg_error} is no negative errno"):
        _compile(body)
    assert _compile(BPRM_CHECK.replace("argError: -1", "argError: -4095")).hooks


def test_ima_hash_needs_ima() -> None:
    """Without IMA bpf_ima_file_hash hashes nothing: refused, naming IMA, instead of events that
    silently lack ima_hash."""
    with pytest.raises(PolicyError, match=r"selectors\[0\]: IMA is not active"):
        _compile(BPRM_CHECK, {**GUEST, "ima": False})
