"""The agent's generic-record fast path (pre-serialized process JSON, per-hook argument converters,
per-batch policy metrics) against the dict path it replaces: same export lines byte for byte, same
metrics, same errors."""

from __future__ import annotations

import datetime
import socket
import struct
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.unit.generic_reference import build_args, build_generic_event, decode_generic, generic_event
from tetragon.abi import events_h as L
from tetragon.agent import Agent, AgentConfig
from tetragon.events.decode import decode_generic_header
from tetragon.events.generic_event import make_event_builder
from tetragon.events.render_plan import RenderPlan
from tetragon.policy.hookinfo import ArgInfo, HookInfo
from tetragon.process.cache import ProcessEntry, with_tid

NODE = "node1"

HOOKS: dict[tuple[int, int], HookInfo] = {
    (7, 1): HookInfo(
        policy_name="openat",
        event="process_kprobe",
        function_name="__x64_sys_openat",
        args=(ArgInfo("int", index=0), ArgInfo("string", index=1), ArgInfo("int", index=2)),
    ),
    (7, 2): HookInfo(
        policy_name="files",
        event="process_kprobe",
        function_name="security_file_permission",
        message="file access 100% %s %b",
        tags=("observability.filesystem", "t2"),
        args=(
            ArgInfo("file", label="f"),
            ArgInfo("int", label="mask"),
            ArgInfo("uint64"),
            ArgInfo("capability"),
            ArgInfo("char_buf"),
            ArgInfo("sock"),
            ArgInfo("sockaddr"),
            ArgInfo("cred"),
            ArgInfo("string", label="s"),
        ),
        return_arg=ArgInfo("int", label="ret"),
    ),
    (8, 1): HookInfo(
        policy_name="tp",
        event="process_tracepoint",
        subsys="syscalls",
        tp_event="sys_enter_write",
        args=(ArgInfo("uint32"), ArgInfo("int64")),
    ),
    (9, 1): HookInfo(
        policy_name="readline",
        event="process_uprobe",
        path="/bin/bash",
        symbol="readline",
        offset=0x40,
        args=(ArgInfo("string", label="prompt"),),
    ),
    (9, 2): HookInfo(
        "usdts",
        "process_usdt",
        path="/usr/bin/python3.11",
        provider="python",
        probe_name="function__entry",
        message="py call",
        tags=("usdt",),
        args=(ArgInfo("string", label="file"), ArgInfo("int")),
    ),  # fmt: skip
}


class Policies:
    generation = 0

    def hook(self, policy_id: int, hook_id: int, func_id: int = 0) -> HookInfo | None:
        return HOOKS.get((policy_id, hook_id))

    def actions(self, policy_id: int, hook_id: int, selector: int) -> list[Any]:
        return []


def blob(kind: int, payload: bytes, index: int, flags: int = 0) -> bytes:
    return L.GEN_ARG.pack(kind, flags, index, len(payload)) + payload


def int_blob(value: int, index: int) -> bytes:
    return blob(L.GEN_KIND_INT, struct.pack("<Q", value & (1 << 64) - 1), index)


def record(
    blobs: list[bytes],
    *,
    pid: int = 100,
    tid: int = 101,
    policy: tuple[int, int] = (7, 1),
    op: int = L.MSG_OP_GENERIC_KPROBE,
    action: int = L.ACTION_POST,
    return_action: int = L.ACTION_POST,
    flags: int = 0,
    ret: int = 0,
    ktime: int = 5_000_000_123,
    selector: int = 255,
) -> bytes:
    body = b"".join(blobs)
    head = L.MSG_GENERIC.pack(
        op,
        0,
        L.MSG_GENERIC.size + len(body),
        ktime,
        pid,
        tid,
        *policy,
        action,
        return_action,
        selector,
        len(blobs),
        flags,
        0,
        ret,
    )
    return head + body


def sock_payload() -> bytes:
    saddr = socket.inet_aton("10.0.0.1") + bytes(12)
    daddr = socket.inet_aton("10.0.0.2") + bytes(12)
    return L.GEN_SOCK.pack(2, 1, 6, 1, 0, 0, 4242, 80, 99, saddr, daddr)


def all_kinds() -> list[bytes]:
    cred = L.GEN_CRED.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0x3, 0x1, 0, 0, 0, 0, 4026531837)
    return [
        blob(L.GEN_KIND_PATH, L.GEN_PATH.pack(0o100644, 0) + "/etc/pässwd".encode(), 0, L.GEN_AF_TRUNC),
        int_blob(-4, 1),
        int_blob(1 << 40, 2),
        int_blob(21, 3),
        blob(L.GEN_KIND_BYTES, L.GEN_BYTES.pack(10) + b"\x00\x01\xff", 4),
        blob(L.GEN_KIND_SOCK, sock_payload(), 5),
        blob(L.GEN_KIND_SOCKADDR, L.GEN_SOCKADDR.pack(2, 53, socket.inet_aton("1.1.1.1") + bytes(12)), 6),
        blob(L.GEN_KIND_CRED, cred, 7),
        blob(L.GEN_KIND_STR, b'quote " back\\slash \n ctl \x01 bad \xff utf8', 8),
        int_blob(5, 9),  # no such argument in the hook: type ""
    ]


RECORDS: list[bytes] = [
    record([int_blob(-100, 0), blob(L.GEN_KIND_STR, b"/tmp/x", 1), int_blob(0o100, 2)]),
    record(
        [int_blob(3, 0), blob(L.GEN_KIND_STR, b"/tmp/y", 1), int_blob(0, 2)], tid=102, ktime=6_000_000_000
    ),
    record([int_blob(3, 0)], pid=200, tid=200),  # a process without a known parent
    record([int_blob(3, 0), int_blob(4, 2)], pid=300, tid=300),  # tid inserted before process_credentials
    record([int_blob(3, 0)], pid=999, tid=999),  # unknown process
    record(
        all_kinds(),
        policy=(7, 2),
        flags=L.GEN_F_RETURN,
        ret=-13,
        action=L.ACTION_SIGKILL,
        return_action=L.ACTION_OVERRIDE,
        ktime=7_123_000_000,
    ),
    # blobs out of index order (and a duplicate index): sorted stably by index
    record([int_blob(2, 2), blob(L.GEN_KIND_STR, b"b", 1), int_blob(9, 0), int_blob(7, 1)]),
    record([int_blob(1, 0), int_blob(-1, 1)], policy=(8, 1), op=L.MSG_OP_GENERIC_TRACEPOINT),
    record([blob(L.GEN_KIND_STR, b"$ ", 0)], policy=(9, 1), op=L.MSG_OP_GENERIC_UPROBE),
    record([int_blob(1, 0)], pid=100, tid=103, action=0),  # no action name
    record([int_blob(1, 0)], ktime=6_000_000_000),  # a whole second: no fraction
    record([int_blob(1, 0)], ktime=6_000_000_007),  # and just after it
    record([int_blob(1, 0)], ktime=8_000_123_000),  # microseconds: 6 digits
    record([int_blob(1, 0)], ktime=8_000_123_001),  # the same second: 9 digits
    record([int_blob(1, 0)], ktime=8_999_999_999),
    record([int_blob(1, 0)], ktime=8_000_000_001),  # back in time within the second
    record([int_blob(1, 0)], ktime=7_999_999_999),  # and to the second before
    record([int_blob(1, 0), blob(L.GEN_KIND_INT, b"\x01\x02", 1)]),  # short int payload: 0
]


def entries() -> list[ProcessEntry]:
    init = ProcessEntry(
        exec_id="aW5pdA==",
        pid=1,
        ktime=1,
        parent_exec_id="",
        head={"exec_id": "aW5pdA==", "pid": 1, "uid": 0, "binary": "/sbin/init", "flags": "procFS"},
    )
    shell = ProcessEntry(
        exec_id="c2g=",
        pid=50,
        ktime=2,
        parent_exec_id="aW5pdA==",
        head={
            "exec_id": "c2g=",
            "pid": 50,
            "uid": 0,
            "binary": "/bin/sh",
            "pod": {"namespace": "ns", "name": "pod-1", "workload": "wl"},
            "parent_exec_id": "aW5pdA==",
        },
        tid=50,
    )
    cat = ProcessEntry(
        exec_id="Y2F0",
        pid=100,
        ktime=3,
        parent_exec_id="c2g=",
        head={
            "exec_id": "Y2F0",
            "pid": 100,
            "uid": 1000,
            "cwd": "/home/ü",
            "binary": "/usr/bin/cat",
            "arguments": 'a "b" \\c',
            "flags": "execve",
            "start_time": "2024-01-01T00:00:00Z",
            "auid": 4294967295,
            "parent_exec_id": "c2g=",
        },
        tid=100,
        caps_ns={"cap": {"permitted": ["CAP_CHOWN"]}},
        extra={"process_credentials": {"uid": 1000}},
    )
    orphan = ProcessEntry(
        exec_id="b3JwaGFu",
        pid=200,
        ktime=4,
        parent_exec_id="bm9uZQ==",
        head={"exec_id": "b3JwaGFu", "pid": 200, "binary": "/bin/orphan"},
        tid=200,
    )
    no_tid = ProcessEntry(
        exec_id="bm90aWQ=",
        pid=300,
        ktime=5,
        parent_exec_id="Y2F0",
        head={"exec_id": "bm90aWQ=", "pid": 300, "binary": "/bin/x"},
        extra={"process_credentials": {"uid": 1}, "binary_properties": {"setuid": 0}},
    )
    return [init, shell, cat, orphan, no_tid]


def make_agent(tmp: Path, name: str, *, subscriber: bool = False, **cfg: Any) -> Agent:
    agent = Agent(AgentConfig(export_filename=str(tmp / name), server_address="", **cfg))
    agent._open_exporter()
    agent._start_metrics()
    agent.pipeline.policies = Policies()
    for e in entries():
        agent.cache.add(e)
    if subscriber:
        agent.sub = agent.bus.subscribe()  # type: ignore[attr-defined]
    return agent


def run(agent: Agent, records: list[bytes]) -> bytes:
    for raw in records:
        agent.pipeline.handle(memoryview(raw))
    flush_batch(agent)
    assert agent.exporter is not None
    agent.exporter.close()
    return Path(agent.exporter.path).read_bytes()


def flush_batch(agent: Agent) -> None:
    """drain_once without a ring buffer: flush the exporter and hand over the batch's counts."""
    sensor = type("S", (), {"reader": type("R", (), {"drain": staticmethod(lambda handle: 0)})()})()
    agent.sensor = sensor  # type: ignore[assignment]
    try:
        agent.drain_once()
    finally:
        agent.sensor = None


def metrics_of(agent: Agent) -> dict[str, dict[tuple[str, ...], float]]:
    assert agent.metrics is not None
    names = (
        "tetragon_events_total",
        "tetragon_policy_events_total",
        "tetragon_events_missing_process_info_total",
    )
    return {name: dict(agent.metrics._values[name]) for name in names}


@pytest.fixture(params=[["base", "kprobe"], []], ids=["ancestors", "lines"])
def agents(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Agent, Agent]:
    # with kprobe ancestors, kprobe events take the pre-serialized-fragment path; without, the
    # line path (events.genline); the other agent builds every event as a dict
    fast = make_agent(tmp_path, "fast.json", enable_ancestors=request.param)
    slow = make_agent(tmp_path, "slow.json", subscriber=True, enable_ancestors=request.param)
    fast.clock.offset = 1_700_000_000 * 10**9  # whole seconds: the records' times are exact
    slow.clock.offset = fast.clock.offset  # the same boot-time offset
    yield fast, slow
    for a in (fast, slow):
        if a.metrics is not None:
            a.metrics.shutdown()


def test_fast_path_lines_equal_dict_path_lines(agents: tuple[Agent, Agent]) -> None:
    fast, slow = agents
    assert fast.exporter is not None and fast.exporter.takes_lines
    fast_out, slow_out = run(fast, RECORDS), run(slow, RECORDS)
    assert fast_out.count(b"\n") == len(RECORDS)
    assert fast_out == slow_out
    if not fast.config.enable_ancestors:  # every record took the line path, no template fell back
        assert all(plan.lines is not None for plan in fast.pipeline._plans.values())
        assert all(
            fill is not None for plan in fast.pipeline._plans.values() for fill in plan.lines._fills.values()
        )
        assert not any(plan.lines is not None for plan in slow.pipeline._plans.values())
    # the subscriber got complete dicts, serialized exactly as the file lines
    events = []
    while (ev := slow.sub.get(timeout=0)) is not None:  # type: ignore[attr-defined]
        events.append(ev)
    assert b"".join(orjson.dumps(ev, option=orjson.OPT_APPEND_NEWLINE) for ev in events) == slow_out
    assert all(isinstance(ev[next(iter(ev))].get("process", {}), dict) for ev in events)
    assert metrics_of(fast) == metrics_of(slow)
    assert fast.events.missing_process_info == slow.events.missing_process_info == 1


def test_fast_path_equals_build_generic_event(agents: tuple[Agent, Agent]) -> None:
    """Each line is what build_generic_event (the reference dict builder) gives for the record."""
    fast, _ = agents
    expected = []
    for raw in RECORDS:
        rec = decode_generic(raw)
        hook = HOOKS[(rec.policy_id, rec.hook_id)]
        entry = fast.cache.get_by_pid(rec.pid)
        parent = fast.cache.get(entry.parent_exec_id) if entry is not None else None
        ancestors = None
        if entry is not None and hook.event == "process_kprobe" and "kprobe" in fast.config.enable_ancestors:
            ancestors = [a.to_dict() for a in fast.cache.ancestors(entry)] or None
        ev = build_generic_event(
            rec,
            hook,
            entry.to_dict(entry.refcnt) if entry is not None else None,  # live refcnt on `process`
            parent.to_dict() if parent is not None else None,  # none on `parent`
            ancestors,
            fast.node,
            fast.clock.rfc3339(rec.ktime),
        )
        expected.append(orjson.dumps(ev, option=orjson.OPT_APPEND_NEWLINE))
    assert run(fast, RECORDS) == b"".join(expected)


def test_refcount_change_refreshes_cached_process_json(agents: tuple[Agent, Agent]) -> None:
    fast, slow = agents
    records = [RECORDS[0], RECORDS[0]]
    for a in (fast, slow):
        a.pipeline.handle(memoryview(records[0]))
        child = ProcessEntry(exec_id="Y2hpbGQ=", pid=400, ktime=9, parent_exec_id="Y2F0", head={"pid": 400})
        a.cache.add(child)  # cat's refcnt goes up
        a.pipeline.handle(memoryview(records[1]))
    lines = run(fast, []).splitlines()
    assert lines == run(slow, []).splitlines()
    refcnts = [orjson.loads(line)["process_kprobe"]["process"]["refcnt"] for line in lines]
    assert refcnts[1] == refcnts[0] + 1


def test_filters_and_redaction_use_the_dict_path(tmp_path: Path) -> None:
    deny = make_agent(tmp_path, "deny.json", export_denylist='{"binary_regex":["cat$"]}')
    redact = make_agent(
        tmp_path,
        "redact.json",
        redaction_filters='{"redact":["(/tmp)"]}',
        field_filters='{"fields":"process.binary,process.pid","action":"INCLUDE"}',
    )
    plain = make_agent(tmp_path, "plain.json")
    try:
        assert deny.exporter is not None and not deny.exporter.takes_lines
        assert redact.exporter is not None and not redact.exporter.takes_lines
        out = run(deny, RECORDS[:3])
        assert out.count(b"\n") == 1 and b"/usr/bin/cat" not in out
        lines = run(redact, RECORDS[:2]).splitlines()
        assert [list(orjson.loads(line)["process_kprobe"]) for line in lines] == [["process"]] * 2
        assert orjson.loads(lines[0])["process_kprobe"]["process"] == {"pid": 100, "binary": "/usr/bin/cat"}
        # counted in the metrics whatever the exporter keeps
        run(plain, RECORDS[:3])
        assert metrics_of(deny) == metrics_of(plain)
    finally:
        for a in (deny, redact, plain):
            if a.metrics is not None:
                a.metrics.shutdown()


def test_rate_limit_applies_to_lines(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, "rl.json", export_rate_limit=2)
    try:
        assert agent.exporter is not None and agent.exporter.takes_lines
        out = run(agent, [RECORDS[0]] * 5)
        assert out.count(b'"process_kprobe"') == 2
        assert agent.exporter.ratelimit_dropped == 3
    finally:
        if agent.metrics is not None:
            agent.metrics.shutdown()


def test_policy_metrics_per_batch(agents: tuple[Agent, Agent]) -> None:
    fast, _ = agents
    run(fast, RECORDS[:5])
    m = metrics_of(fast)
    labels = ("openat", "kprobe:__x64_sys_openat")
    assert m["tetragon_policy_events_total"] == {
        (*labels, "", "", "", "/usr/bin/cat"): 2.0,
        (*labels, "", "", "", "/bin/orphan"): 1.0,
        (*labels, "", "", "", "/bin/x"): 1.0,
        (*labels, "", "", "", ""): 1.0,
    }
    assert m["tetragon_events_total"][("PROCESS_KPROBE", "", "", "", "/usr/bin/cat")] == 2.0
    assert m["tetragon_events_missing_process_info_total"] == {(): 1.0}


def test_pod_labels_from_cached_key_parts() -> None:
    shell = entries()[1]
    assert shell.key_parts() == ("/bin/sh", "ns", "wl", "pod-1")
    assert entries()[0].key_parts() == ("/sbin/init", "", "", "")


@pytest.mark.parametrize("raw", RECORDS)
def test_plan_args_equal_build_args(raw: bytes) -> None:
    rec = decode_generic(raw)
    hook = HOOKS[(rec.policy_id, rec.hook_id)]
    head = decode_generic_header(raw)
    plan = RenderPlan(hook)
    assert plan.args(raw, head.nargs, head.size) == build_args(rec, hook)
    assert plan.args(raw, head.nargs, head.size) == build_args(rec, hook)  # converters cached


@pytest.mark.parametrize(
    "raw",
    [
        record([int_blob(1, 0)])[:-1],  # payload cut
        record([int_blob(1, 0)])[: L.MSG_GENERIC.size + 4],  # blob header cut
        record([blob(0, b"", 0)]),  # unknown kind
        record([blob(L.GEN_KIND_CRED + 1, b"", 0)]),
        record([int_blob(1, 0)], op=L.MSG_OP_EXECVE),
        b"\x00" * 8,
    ],
)
def test_malformed_records_fail_like_decode_generic(raw: bytes, tmp_path: Path) -> None:
    raw = bytearray(raw)
    if len(raw) >= 8:
        struct.pack_into("<I", raw, 4, len(raw))  # size = what is there
    raw = bytes(raw)
    with pytest.raises(ValueError):
        decode_generic(raw)
    with pytest.raises(ValueError):
        head = decode_generic_header(raw)
        RenderPlan(HOOKS[(7, 1)]).args(raw, head.nargs, head.size)
    learnt = RenderPlan(HOOKS[(7, 1)])  # the same blob layout seen before: checked all the same
    good = record([int_blob(1, 0)])
    assert learnt.args(good, 1, len(good)) == [{"int_arg": 1}]
    with pytest.raises(ValueError):
        head = decode_generic_header(raw)
        learnt.args(raw, head.nargs, head.size)
    agent = make_agent(tmp_path, "bad.json")
    try:
        with pytest.raises(ValueError):
            agent.pipeline.handle_generic(memoryview(raw))
    finally:
        if agent.metrics is not None:
            agent.metrics.shutdown()


def test_with_tid_and_json_caches() -> None:
    cat = entries()[2]
    # a policy event's `process` has the live refcnt, a `parent` none (Tetragon)
    assert cat.json_with_tid(7) == orjson.dumps(with_tid(cat.to_dict(cat.refcnt), 7))
    assert cat.json_with_tid(7) is cat.json_with_tid(7)
    assert cat.json_with_tid(8) is not cat.json_with_tid(7)
    assert cat.json() == orjson.dumps(cat.to_dict())
    assert b"refcnt" not in cat.json()
    cat.refcnt += 1
    assert cat.json() == orjson.dumps(cat.to_dict())
    assert cat.json_with_tid(7) == orjson.dumps(with_tid(cat.to_dict(cat.refcnt), 7))


def test_generic_event_with_fragments_serializes_like_dicts() -> None:
    hook = HOOKS[(7, 2)]
    cat, shell = entries()[2], entries()[1]
    raw = RECORDS[5]
    rec = decode_generic(raw)
    args = build_args(rec, hook)
    common = (hook, args, rec.action, rec.return_action, rec.flags, rec.ret)
    F = orjson.Fragment
    frag = generic_event(*common, F(cat.json_with_tid(5)), F(shell.json()), [F(shell.json())], NODE, "t")
    process = with_tid(cat.to_dict(cat.refcnt), 5)
    dicts = generic_event(*common, process, shell.to_dict(), [shell.to_dict()], NODE, "t")
    assert orjson.dumps(frag) == orjson.dumps(dicts)


@pytest.mark.parametrize("hook", [*HOOKS.values(), HookInfo(policy_name="", event="process_kprobe")])
@pytest.mark.parametrize("flags", [0, L.GEN_F_RETURN])
@pytest.mark.parametrize(
    "actions", [(L.ACTION_POST, L.ACTION_POST), (0, L.ACTION_SIGKILL), (L.ACTION_NOPOST, 0)]
)
def test_event_builder_equals_generic_event(hook: HookInfo, flags: int, actions: tuple[int, int]) -> None:
    build = make_event_builder(hook)
    for process, parent, ancestors, args in (
        ({"pid": 1}, {"pid": 2}, [{"pid": 3}], [{"int_arg": 1}]),
        (None, None, None, []),
    ):
        got = build(args, *actions, flags, -2, process, parent, ancestors, NODE, "t")
        want = generic_event(hook, args, *actions, flags, -2, process, parent, ancestors, NODE, "t")
        assert orjson.dumps(got) == orjson.dumps(want)


def test_write_line_counts_like_write(tmp_path: Path) -> None:
    from tetragon.export.jsonfile import JsonFileExporter

    event = {
        "process_kprobe": {"policy_name": "p"},
        "node_name": NODE,
        "time": "2024-04-14T02:18:14.376304204Z",
    }
    line = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
    a = JsonFileExporter(str(tmp_path / "a.json"), max_buffer_bytes=len(line) * 2)
    b = JsonFileExporter(str(tmp_path / "b.json"), max_buffer_bytes=len(line) * 2)
    seconds = datetime.datetime(2024, 4, 14, 2, 18, 14, tzinfo=datetime.UTC).timestamp()
    results = ([a.write(event) for _ in range(3)], [b.write_line(line, seconds) for _ in range(3)])
    assert results[0] == results[1] == [True, True, False]  # the buffer limit refuses the third
    for attr in ("exported_events", "failed_events", "last_exported_timestamp", "buffered_bytes"):
        assert getattr(a, attr) == getattr(b, attr), attr
    a.close()
    b.close()
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes() == line * 2


def test_line_args_memo() -> None:
    """Argument blocks are remembered by their raw bytes, boundedly, and only small ones."""
    from tetragon.events import genline

    plan = RenderPlan(HOOKS[(7, 1)])
    lines = genline.HookLines(plan, NODE)

    def args_json(raw: bytes) -> bytes:
        rec = decode_generic(raw)
        return b",".join(orjson.dumps(a) for a in build_args(rec, plan.hook))

    raw = RECORDS[0]
    head = decode_generic_header(raw)
    first = lines.args(raw, head.nargs, head.size)
    assert first == args_json(raw) and len(lines._memo) == 1
    assert lines.args(raw, head.nargs, head.size) is first  # remembered
    for k in range(genline._MEMO_ENTRIES + 10):
        rec = record([int_blob(k, 0), blob(L.GEN_KIND_STR, b"/f%d" % k, 1), int_blob(0, 2)])
        h = decode_generic_header(rec)
        assert lines.args(rec, h.nargs, h.size) == args_json(rec)
    assert 0 < len(lines._memo) <= genline._MEMO_ENTRIES  # forgotten all at once when full
    big = record([int_blob(1, 0), blob(L.GEN_KIND_STR, b"x" * 2000, 1), int_blob(0, 2)])
    h = decode_generic_header(big)
    before = len(lines._memo)
    assert lines.args(big, h.nargs, h.size) == args_json(big)
    assert len(lines._memo) == before  # larger than _MEMO_MAX_BYTES: converted, not kept
