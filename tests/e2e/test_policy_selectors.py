"""TracingPolicy selectors end to end: a real agent, real policies added with `tetra`, real system calls.

Every row runs a call the selector matches (its event is checked field by field) and a call it does
not match, which must produce no event and be dropped in the kernel: the policy's kernel counters
(`tetra tracingpolicy list -o json` -> stats) show the negative call counted as `filtered` and the
`post` counter unchanged. Other processes' calls of the hooked syscall are filtered too, so
`filtered` grows by at least one per negative call; `post` is exact, since every selector is narrowed
to the test's own process or directory.

Ordering: a negative call is followed by the positive call again, and the test waits for that second
event. The ring buffer is one ordered stream, so an event of the negative call, had it been sent,
would have been read before it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.agentproc import AgentProcess, Event, running_agent
from tests.e2e.policyutil import (
    NR_MKDIRAT,
    NR_SCHED_GETSCHEDULER,
    Worker,
    counters,
    kprobe_events,
    one_shot,
    policy,
    wait_kprobe,
    wait_until,
    worker,
)

PY = sys.executable


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory, "selectors")


@pytest.fixture(scope="module")
def listener() -> Iterator[int]:
    """A TCP listener on 127.0.0.1: connect() to it succeeds."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    try:
        yield int(s.getsockname()[1])
    finally:
        s.close()


@dataclass
class Ctx:
    d: Path  # the test's directory: every path a case touches is under it
    w: Worker  # the process most cases run in
    port: int  # the listener's port
    n: int = 0

    def path(self, name: str) -> str:
        return str(self.d / name)


@dataclass
class Expect:
    pid: int
    args: list[Event]
    binary: str = PY
    extra: dict[str, Any] = field(default_factory=dict)  # more fields of the event, exact
    parent_binary: str | None = None


def expect_matches(ev: Event, exp: Expect) -> bool:
    return bool((not exp.pid or ev["process"]["pid"] == exp.pid) and ev.get("args") == exp.args)


def kprobe_policy(name: str, hook: dict[str, Any], selectors: list[dict[str, Any]]) -> str:
    spec = {**hook, "syscall": True, "selectors": selectors}
    doc = {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": name},
        "spec": {"kprobes": [spec]},
    }
    return str(yaml.safe_dump(doc, sort_keys=False))


# --- hooks and the calls they see ---------------------------------------------------------------
MKDIRAT = {"call": "sys_mkdirat", "args": [{"index": 1, "type": "filename"}]}
SCHED = {"call": "sys_sched_getscheduler", "args": [{"index": 0, "type": "int"}]}
CONNECT = {"call": "sys_connect", "args": [{"index": 0, "type": "sock"}, {"index": 1, "type": "sockaddr"}]}
OPENAT = {"call": "sys_openat", "args": [{"index": 1, "type": "filename"}]}
OPENAT_RET = {
    "call": "sys_openat",
    "return": True,
    "args": [{"index": 1, "type": "filename"}],
    "returnArg": {"index": 0, "type": "int"},
}


def mkdirat(c: Ctx, name: str, *, relative: bool = False) -> Expect:
    """mkdirat() in the worker; relative: through a directory fd (the event shows the full path)."""
    path = c.path(name)
    if relative:
        c.w.run(
            f"""
            fd = os.open({str(c.d)!r}, os.O_RDONLY | os.O_DIRECTORY)
            result = sc({NR_MKDIRAT}, fd, {name!r}.encode(), 0o755)
            os.close(fd)
            """
        )
    else:
        c.w.run(f"result = sc({NR_MKDIRAT}, -100, {path!r}.encode(), 0o755)")
    return Expect(c.w.pid, [{"string_arg": path}])


def sched(c: Ctx, value: int) -> Expect:
    c.w.run(f"result = sc({NR_SCHED_GETSCHEDULER}, {value})")
    return Expect(c.w.pid, [{"int_arg": value}])


def _sock_body(family: int, kind_: int, saddr: str, sport: int) -> Event:
    zero = "0.0.0.0" if family == socket.AF_INET else "::"
    body: Event = {
        "family": "AF_INET" if family == socket.AF_INET else "AF_INET6",
        "type": "SOCK_STREAM" if kind_ == socket.SOCK_STREAM else "SOCK_DGRAM",
        "protocol": "IPPROTO_TCP" if kind_ == socket.SOCK_STREAM else "IPPROTO_UDP",
        "saddr": saddr or zero,
        "daddr": zero,
    }
    if sport:
        body["sport"] = sport
    body["state"] = "TCP_CLOSE"
    return body


def connect(
    c: Ctx,
    addr: str,
    port: int,
    *,
    kind_: int = socket.SOCK_STREAM,
    bind: tuple[str, int] | None = None,
) -> Expect:
    """connect() of a fresh socket in the worker (bound first when `bind` is given)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    c.w.run(
        f"""
        s = socket.socket({int(family)}, {int(kind_)})
        if {bind!r} is not None:
            s.bind({bind!r})
        result = s.connect_ex(({addr!r}, {port}))
        s.close()
        """
    )
    sock = _sock_body(family, kind_, bind[0] if bind else "", bind[1] if bind else 0)
    fam = "AF_INET" if family == socket.AF_INET else "AF_INET6"
    return Expect(
        c.w.pid, [{"sock_arg": sock}, {"sockaddr_arg": {"family": fam, "addr": addr, "port": port}}]
    )


def open_ret(c: Ctx, name: str, *, create: bool) -> Expect:
    path = c.path(name)
    if create:
        Path(path).write_text("x")
    fd = c.w.run(
        f"""
        try:
            result = os.open({path!r}, os.O_RDONLY)
            os.close(result)
        except FileNotFoundError:
            result = -2
        """
    )
    return Expect(c.w.pid, [{"string_arg": path}], extra={"return": {"int_arg": fd}})


def open_in_worker(c: Ctx, name: str) -> Expect:
    path = c.path(name)
    c.w.run(f"open({path!r}, 'w').close()")
    return Expect(c.w.pid, [{"string_arg": path}])


def open_in_fork(c: Ctx, name: str) -> Expect:
    """A forked (not exec'd) child of the worker opens the file."""
    path = c.path(name)
    pid = c.w.run(
        f"""
        pid = os.fork()
        if pid == 0:
            open({path!r}, 'w').close()
            os._exit(0)
        os.waitpid(pid, 0)
        result = pid
        """
    )
    return Expect(pid, [{"string_arg": path}])


def open_one_shot(c: Ctx, name: str, pre: str = "", *prefix: str) -> Expect:
    """A new Python process runs `pre`, then opens the file."""
    path = c.path(name)
    pid, _ = one_shot(f"{pre}\nopen({path!r}, 'w').close()", *prefix)
    return Expect(pid, [{"string_arg": path}])


def touch(c: Ctx, name: str, *prefix: str) -> Expect:
    """`[prefix...] /usr/bin/touch PATH`: the pid is touch's when prefix execs it (setpriv, unshare -m)."""
    path = c.path(name)
    proc = subprocess.Popen([*prefix, "/usr/bin/touch", path])
    assert proc.wait(10) == 0
    pid = 0 if "-f" in prefix else proc.pid  # unshare -f: touch is unshare's child
    return Expect(pid, [{"string_arg": path}], binary="/usr/bin/touch")


def touch_grandchild(c: Ctx, name: str, *prefix: str) -> Expect:
    """`[prefix...] /bin/sh -c 'touch PATH; true'`: touch is a child of sh (pid 0 = not known)."""
    path = c.path(name)
    assert (
        subprocess.run([*prefix, "/bin/sh", "-c", f"/usr/bin/touch {path}; true"], timeout=10).returncode == 0
    )
    return Expect(0, [{"string_arg": path}], binary="/usr/bin/touch", parent_binary="/bin/sh")


# CLONE_NEWNS / CLONE_NEWNET: the process leaves the namespace it was exec'd in, then makes the call
UNSHARE_MNT = "assert libc.unshare(0x00020000) == 0"
UNSHARE_NET = "assert libc.unshare(0x40000000) == 0"
DROP_SYS_ADMIN = """
class Hdr(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class Data(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]
hdr = Hdr(0x20080522, 0)
data = (Data * 2)()
assert libc.capget(ctypes.byref(hdr), data) == 0
data[0].effective &= ~(1 << 21)
assert libc.capset(ctypes.byref(hdr), data) == 0
"""
NO_CAPS = ("/usr/bin/setpriv", "--inh-caps=-all", "--bounding-set=-all")


def ns_inode(kind_: str, pid: int | str = "self") -> int:
    return int(os.readlink(f"/proc/{pid}/ns/{kind_}").split("[")[1].rstrip("]"))


def prefix_d(c: Ctx) -> dict[str, Any]:
    return {"index": 1, "operator": "Prefix", "values": [str(c.d) + "/"]}


def only_worker(c: Ctx) -> list[dict[str, Any]]:
    return [{"operator": "In", "values": [c.w.pid]}]


@dataclass
class Case:
    id: str
    hook: dict[str, Any]
    selector: Callable[[Ctx], dict[str, Any]]
    pos: Callable[[Ctx], Expect]
    neg: Callable[[Ctx], object]


def args_case(
    id_: str,
    hook: dict[str, Any],
    match: dict[str, Any],
    pos: Callable[[Ctx], Expect],
    neg: Callable[[Ctx], object],
) -> Case:
    """A matchArgs case; the selector is narrowed to the worker."""
    return Case(id_, hook, lambda c: {"matchPIDs": only_worker(c), "matchArgs": [match]}, pos, neg)


def mk(name: str, **kw: Any) -> Callable[[Ctx], Expect]:
    return lambda c: mkdirat(c, name, **kw)


def op_str(op: str, value: str) -> Callable[[Ctx], dict[str, Any]]:
    return lambda c: {
        "matchPIDs": only_worker(c),
        "matchArgs": [
            {"index": 1, "operator": op, "values": [value if value.startswith(".") else c.path(value)]}
        ],
    }


def sc_(v: int) -> Callable[[Ctx], Expect]:
    return lambda c: sched(c, v)


def op_int(op: str, *values: str) -> dict[str, Any]:
    return {"index": 0, "operator": op, "values": list(values)}


def conn(addr: str, port_delta: int = 0, **kw: Any) -> Callable[[Ctx], Expect]:
    return lambda c: connect(c, addr, c.port + port_delta, **kw)


def op_net(index: int, op: str, *values: str) -> Callable[[Ctx], dict[str, Any]]:
    def sel(c: Ctx) -> dict[str, Any]:
        vals = [v.replace("PORT+1", str(c.port + 1)).replace("PORT", str(c.port)) for v in values]
        return {"matchPIDs": only_worker(c), "matchArgs": [{"index": index, "operator": op, "values": vals}]}

    return sel


def bound(addr: str, port_offset: int) -> Callable[[Ctx], Expect]:
    """UDP socket bound to (addr, a port derived from the listener's) connects to 127.0.0.1:listener."""
    return lambda c: connect(
        c, "127.0.0.1", c.port, kind_=socket.SOCK_DGRAM, bind=(addr, c.port + port_offset)
    )


def proc_sel(extra: Callable[[Ctx], dict[str, Any]]) -> Callable[[Ctx], dict[str, Any]]:
    """A process filter under test, narrowed to paths in the test directory."""
    return lambda c: {**extra(c), "matchArgs": [prefix_d(c)]}


CASES = [
    # --- matchArgs on a path (sys_mkdirat filename, made absolute in the kernel) ----------------
    Case("Equal", MKDIRAT, op_str("Equal", "eq-yes"), mk("eq-yes", relative=True), mk("eq-yes2")),
    Case("NotEqual", MKDIRAT, op_str("NotEqual", "ne-no"), mk("ne-yes"), mk("ne-no")),
    Case("Prefix", MKDIRAT, op_str("Prefix", "pre-"), mk("pre-x"), mk("xpre-")),
    Case("NotPrefix", MKDIRAT, op_str("NotPrefix", "npre-"), mk("other"), mk("npre-x")),
    Case("Postfix", MKDIRAT, op_str("Postfix", ".post"), mk("a.post"), mk("a.post2")),
    Case("NotPostfix", MKDIRAT, op_str("NotPostfix", ".npost"), mk("a.txt"), mk("a.npost")),
    # --- matchArgs on an int (sys_sched_getscheduler pid; the calls fail with ESRCH/EINVAL) -----
    args_case("int-Equal", SCHED, op_int("Equal", "777001", "777003"), sc_(777003), sc_(777002)),
    args_case("int-NotEqual", SCHED, op_int("NotEqual", "777001"), sc_(777002), sc_(777001)),
    args_case("Mask", SCHED, op_int("Mask", "0x10000"), sc_(0x10001), sc_(0x20001)),
    args_case("GT", SCHED, op_int("GT", "777000"), sc_(777001), sc_(777000)),
    args_case("LT-signed", SCHED, op_int("LT", "-5"), sc_(-6), sc_(-5)),
    args_case("InRange", SCHED, op_int("InRange", "777000:777010"), sc_(777010), sc_(777011)),
    args_case("NotInRange", SCHED, op_int("NotInRange", "777000:777010"), sc_(776999), sc_(777000)),
    args_case("InMap", SCHED, op_int("InMap", "777001", "777100:777105"), sc_(777103), sc_(777106)),
    args_case("NotInMap", SCHED, op_int("NotInMap", "777001", "777100:777105"), sc_(777106), sc_(777001)),
    # --- matchArgs on sys_connect's sockaddr (index 1) and sock (index 0) ---------------------
    Case("sockaddr-DPort", CONNECT, op_net(1, "DPort", "PORT"), conn("127.0.0.1"), conn("127.0.0.1", 1)),
    Case("sockaddr-SPort", CONNECT, op_net(1, "SPort", "PORT"), conn("127.0.0.1"), conn("127.0.0.1", 1)),
    Case("sockaddr-DAddr", CONNECT, op_net(1, "DAddr", "127.0.0.1"), conn("127.0.0.1"), conn("127.0.0.2")),
    Case(
        "sockaddr-SAddr-cidr",
        CONNECT,
        op_net(1, "SAddr", "127.0.0.0/31"),
        conn("127.0.0.1"),
        conn("127.0.0.2"),
    ),
    Case(
        "sockaddr-NotSAddr", CONNECT, op_net(1, "NotSAddr", "127.0.0.1"), conn("127.0.0.2"), conn("127.0.0.1")
    ),
    Case("sockaddr-DAddr-v6", CONNECT, op_net(1, "DAddr", "::1"), conn("::1"), conn("127.0.0.1")),
    Case("sockaddr-Family", CONNECT, op_net(1, "Family", "AF_INET6"), conn("::1"), conn("127.0.0.1")),
    Case("sock-Family", CONNECT, op_net(0, "Family", "AF_INET"), conn("127.0.0.1"), conn("::1")),
    Case(
        "sock-Protocol",
        CONNECT,
        op_net(0, "Protocol", "IPPROTO_UDP"),
        conn("127.0.0.1", kind_=socket.SOCK_DGRAM),
        conn("127.0.0.1"),
    ),
    Case("sock-SPort", CONNECT, op_net(0, "SPort", "PORT+1"), bound("127.0.0.1", 1), bound("127.0.0.1", 2)),
    Case(
        "sock-SAddr", CONNECT, op_net(0, "SAddr", "127.0.0.3"), bound("127.0.0.3", 3), bound("127.0.0.4", 3)
    ),
    Case(
        "sock-NotSAddr",
        CONNECT,
        op_net(0, "NotSAddr", "127.0.0.3"),
        bound("127.0.0.4", 4),
        bound("127.0.0.3", 4),
    ),
    # --- matchReturnArgs (return value of sys_openat) -------------------------------------------
    Case(
        "return-GT",
        OPENAT_RET,
        lambda c: {
            "matchPIDs": only_worker(c),
            "matchArgs": [prefix_d(c)],
            "matchReturnArgs": [{"operator": "GT", "values": ["0"]}],
        },
        lambda c: open_ret(c, "exists", create=True),
        lambda c: open_ret(c, "missing", create=False),
    ),
    Case(
        "return-Equal",
        OPENAT_RET,
        lambda c: {
            "matchPIDs": only_worker(c),
            "matchArgs": [prefix_d(c)],
            "matchReturnArgs": [{"operator": "Equal", "values": ["-2"]}],
        },
        lambda c: open_ret(c, "missing", create=False),
        lambda c: open_ret(c, "exists", create=True),
    ),
    # --- matchPIDs -------------------------------------------------------------------------------
    Case(
        "pids-In",
        OPENAT,
        proc_sel(lambda c: {"matchPIDs": only_worker(c)}),
        lambda c: open_in_worker(c, "pid-in"),
        lambda c: open_one_shot(c, "pid-in-other"),
    ),
    Case(
        "pids-NotIn",
        OPENAT,
        proc_sel(lambda c: {"matchPIDs": [{"operator": "NotIn", "values": [c.w.pid]}]}),
        lambda c: open_one_shot(c, "pid-notin"),
        lambda c: open_in_worker(c, "pid-notin-worker"),
    ),
    Case(
        "pids-In-no-followForks",
        OPENAT,
        proc_sel(lambda c: {"matchPIDs": only_worker(c)}),
        lambda c: open_in_worker(c, "nofollow"),
        lambda c: open_in_fork(c, "nofollow-fork"),
    ),
    Case(
        "pids-In-followForks",
        OPENAT,
        proc_sel(lambda c: {"matchPIDs": [{"operator": "In", "values": [c.w.pid], "followForks": True}]}),
        lambda c: open_in_fork(c, "follow-fork"),
        lambda c: open_one_shot(c, "follow-other"),
    ),
    # --- matchBinaries ---------------------------------------------------------------------------
    Case(
        "binaries-In",
        OPENAT,
        proc_sel(lambda c: {"matchBinaries": [{"operator": "In", "values": ["/usr/bin/touch"]}]}),
        lambda c: touch(c, "bin-in"),
        lambda c: open_in_worker(c, "bin-in-py"),
    ),
    Case(
        "binaries-NotIn",
        OPENAT,
        proc_sel(lambda c: {"matchBinaries": [{"operator": "NotIn", "values": ["/usr/bin/touch"]}]}),
        lambda c: open_in_worker(c, "bin-notin-py"),
        lambda c: touch(c, "bin-notin"),
    ),
    Case(
        "binaries-Prefix",
        OPENAT,
        proc_sel(lambda c: {"matchBinaries": [{"operator": "Prefix", "values": ["/usr/bin/tou"]}]}),
        lambda c: touch(c, "bin-prefix"),
        lambda c: open_in_worker(c, "bin-prefix-py"),
    ),
    Case(
        "binaries-Postfix",
        OPENAT,
        proc_sel(lambda c: {"matchBinaries": [{"operator": "Postfix", "values": ["bin/touch"]}]}),
        lambda c: touch(c, "bin-postfix"),
        lambda c: open_in_worker(c, "bin-postfix-py"),
    ),
    Case(
        "binaries-followChildren",
        OPENAT,
        proc_sel(
            lambda c: {
                "matchBinaries": [{"operator": "In", "values": ["/usr/bin/flock"], "followChildren": True}]
            }
        ),
        # flock -> sh -> touch: touch is a grandchild of the matching binary (flock forks its command)
        lambda c: touch_grandchild(c, "grandchild", "/usr/bin/flock", str(c.d.parent / "lock")),
        lambda c: touch_grandchild(c, "no-flock"),
    ),
    # --- matchNamespaces -------------------------------------------------------------------------
    Case(
        "namespaces-Mnt-In-inode",
        OPENAT,
        proc_sel(
            lambda c: {
                "matchNamespaces": [{"namespace": "Mnt", "operator": "In", "values": [str(ns_inode("mnt"))]}]
            }
        ),
        lambda c: open_in_worker(c, "mnt-in"),
        lambda c: touch(c, "mnt-in-unshared", "/usr/bin/unshare", "-m"),
    ),
    Case(
        "namespaces-Mnt-NotIn-inode",
        OPENAT,
        proc_sel(
            lambda c: {
                "matchNamespaces": [
                    {"namespace": "Mnt", "operator": "NotIn", "values": [str(ns_inode("mnt"))]}
                ]
            }
        ),
        lambda c: touch(c, "mnt-notin-unshared", "/usr/bin/unshare", "-m"),
        lambda c: open_in_worker(c, "mnt-notin"),
    ),
    Case(
        "namespaces-Pid-host_ns",
        OPENAT,
        proc_sel(
            lambda c: {"matchNamespaces": [{"namespace": "Pid", "operator": "In", "values": ["host_ns"]}]}
        ),
        lambda c: open_in_worker(c, "pid-host"),
        lambda c: touch(c, "pid-unshared", "/usr/bin/unshare", "-p", "-f"),
    ),
    Case(
        "namespaces-Pid-NotIn-host_ns",
        OPENAT,
        proc_sel(
            lambda c: {"matchNamespaces": [{"namespace": "Pid", "operator": "NotIn", "values": ["host_ns"]}]}
        ),
        lambda c: touch(c, "pid-notin-unshared", "/usr/bin/unshare", "-p", "-f"),
        lambda c: open_in_worker(c, "pid-notin-host"),
    ),
    # --- matchCapabilities -----------------------------------------------------------------------
    Case(
        "capabilities-In",
        OPENAT,
        proc_sel(
            lambda c: {
                "matchCapabilities": [{"type": "Effective", "operator": "In", "values": ["CAP_SYS_ADMIN"]}]
            }
        ),
        lambda c: open_in_worker(c, "cap-in"),
        lambda c: touch(c, "cap-in-dropped", *NO_CAPS),
    ),
    Case(
        "capabilities-NotIn",
        OPENAT,
        proc_sel(
            lambda c: {
                "matchCapabilities": [{"type": "Permitted", "operator": "NotIn", "values": ["CAP_SYS_ADMIN"]}]
            }
        ),
        lambda c: touch(c, "cap-notin-dropped", *NO_CAPS),
        lambda c: open_in_worker(c, "cap-notin-root"),
    ),
    # --- matchNamespaceChanges / matchCapabilityChanges (compared with the process's exec) -------
    Case(
        "namespaceChanges-Mnt",
        OPENAT,
        proc_sel(lambda c: {"matchNamespaceChanges": [{"operator": "In", "values": ["Mnt"]}]}),
        lambda c: open_one_shot(c, "nsch-mnt", UNSHARE_MNT),
        lambda c: open_one_shot(c, "nsch-none"),
    ),
    Case(
        "namespaceChanges-Net",
        OPENAT,
        proc_sel(lambda c: {"matchNamespaceChanges": [{"operator": "In", "values": ["Net"]}]}),
        lambda c: open_one_shot(c, "nsch-net", UNSHARE_NET),
        lambda c: open_one_shot(c, "nsch-net-mnt-only", UNSHARE_MNT),
    ),
    Case(
        "capabilityChanges",
        OPENAT,
        proc_sel(lambda c: {"matchCapabilityChanges": [{"operator": "In", "values": ["CAP_SYS_ADMIN"]}]}),
        lambda c: open_one_shot(c, "capch", DROP_SYS_ADMIN),
        lambda c: open_one_shot(c, "capch-none"),
    ),
]


@pytest.fixture
def ctx(tmp_path: Path, listener: int) -> Iterator[Ctx]:
    d = tmp_path / "d"
    d.mkdir()
    with worker() as w:
        yield Ctx(d, w, listener)


def _check(ev: Event, exp: Expect, name: str, call: str) -> None:
    assert ev["function_name"] == f"__x64_{call}"
    assert ev["args"] == exp.args
    assert ev["action"] == "KPROBE_ACTION_POST"
    assert ev["policy_name"] == name
    assert ev["process"]["binary"] == exp.binary
    if exp.pid:
        assert ev["process"]["pid"] == exp.pid
    if exp.parent_binary:
        assert ev["parent"]["binary"] == exp.parent_binary
    for key, value in exp.extra.items():
        assert ev[key] == value, key


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_selector(agent: AgentProcess, ctx: Ctx, tmp_path: Path, case: Case) -> None:
    name = "sel-" + case.id.lower().replace("_", "-")
    text = kprobe_policy(name, case.hook, [case.selector(ctx)])
    with policy(agent, tmp_path, text):
        exp = case.pos(ctx)
        ev = wait_kprobe(agent, name, lambda e: e.get("args") == exp.args)
        _check(ev, exp, name, case.hook["call"])
        before = counters(agent, name)
        assert before.post == 1
        neg = case.neg(ctx)
        after = counters(agent, name)
        if neg is not None:
            # dropped in the kernel: counted as filtered, never posted
            assert after.post == before.post
            assert after.filtered >= before.filtered + 1
        # barrier: the positive call again; its event comes after any event of the negative call
        exp2 = case.pos(ctx)
        wait_until(lambda: len(kprobe_events(agent, name)) >= 2)
        events = kprobe_events(agent, name)
        assert len(events) == 2
        assert expect_matches(events[1], exp2)
        _check(events[1], exp2, name, case.hook["call"])
        assert counters(agent, name).post == 2


def test_filtered_counter_in_tetra_list(agent: AgentProcess, ctx: Ctx, tmp_path: Path) -> None:
    """The kernel counters are part of `tetra tracingpolicy list -o json`; calls = filtered + posted."""
    text = kprobe_policy(
        "counted", SCHED, [{"matchPIDs": only_worker(ctx), "matchArgs": [op_int("Equal", "4242")]}]
    )
    with policy(agent, tmp_path, text) as name:
        sched(ctx, 4242)
        wait_kprobe(agent, name, lambda e: e["args"] == [{"int_arg": 4242}])
        for _ in range(20):
            sched(ctx, 4243)
        c = counters(agent, name)
        assert c.post == 1
        assert c.filtered >= 20
        assert c.calls == c.filtered + c.post + c.nopost
        assert (c.signal, c.monitor_signal, c.nopost, c.rate_limited) == (0, 0, 0, 0)


def test_selectors_are_ored_first_match_wins(agent: AgentProcess, ctx: Ctx, tmp_path: Path) -> None:
    """Two selectors: a call both match reports the first one's action; each alone reports its own."""
    c = ctx
    first = {
        "matchPIDs": only_worker(c),
        "matchArgs": [{"index": 1, "operator": "Prefix", "values": [c.path("both")]}],
        # SIGURG is ignored by default: the worker lives on
        "matchActions": [{"action": "Signal", "argSig": 23}],
    }
    second = {
        "matchPIDs": only_worker(c),
        "matchArgs": [{"index": 1, "operator": "Prefix", "values": [c.path("")]}],
        "matchActions": [{"action": "Post"}],
    }
    with policy(agent, tmp_path, kprobe_policy("ored", MKDIRAT, [first, second])) as name:
        both = mkdirat(c, "both-1")  # matches selector 0 and 1
        only2 = mkdirat(c, "two-1")  # matches selector 1 only
        ev1 = wait_kprobe(agent, name, lambda e: e["args"] == both.args)
        ev2 = wait_kprobe(agent, name, lambda e: e["args"] == only2.args)
        assert ev1["action"] == "KPROBE_ACTION_SIGNAL"
        assert ev2["action"] == "KPROBE_ACTION_POST"
        before = counters(agent, name)
        assert (before.post, before.signal) == (2, 1)  # the first selector's action ran once
        outside = str(c.d.parent / "outside")
        c.w.run(f"result = sc({NR_MKDIRAT}, -100, {outside!r}.encode(), 0o755)")  # matches none
        after = counters(agent, name)
        assert after.post == before.post
        assert after.filtered >= before.filtered + 1
    assert c.w.proc.poll() is None


def test_matchargs_in_one_selector_are_anded(agent: AgentProcess, ctx: Ctx, tmp_path: Path) -> None:
    c = ctx
    sel = {
        "matchPIDs": only_worker(c),
        "matchArgs": [
            {"index": 1, "operator": "Prefix", "values": [c.path("and-")]},
            {"index": 1, "operator": "Postfix", "values": [".yes"]},
        ],
    }
    with policy(agent, tmp_path, kprobe_policy("anded", MKDIRAT, [sel])) as name:
        pos = mkdirat(c, "and-1.yes")
        wait_kprobe(agent, name, lambda e: e["args"] == pos.args)
        before = counters(agent, name)
        mkdirat(c, "and-2.no")  # prefix only
        mkdirat(c, "or-3.yes")  # postfix only
        after = counters(agent, name)
        assert after.post == before.post == 1
        assert after.filtered >= before.filtered + 2
        pos2 = mkdirat(c, "and-4.yes")
        wait_kprobe(agent, name, lambda e: e["args"] == pos2.args)
        assert [e["args"] for e in kprobe_events(agent, name)] == [pos.args, pos2.args]


def test_ratelimit_suppresses_repeats(agent: AgentProcess, ctx: Ctx, tmp_path: Path) -> None:
    """Post rateLimit: the same arguments again within the window are not posted (other ones are)."""
    c = ctx
    sel = {
        "matchPIDs": only_worker(c),
        "matchArgs": [{"index": 0, "operator": "InRange", "values": ["880000:880010"]}],
        "matchActions": [{"action": "Post", "rateLimit": "1m"}],
    }
    with policy(agent, tmp_path, kprobe_policy("ratelimited", SCHED, [sel])) as name:
        for _ in range(5):
            sched(c, 880001)
        sched(c, 880002)  # different argument: its own window
        sched(c, 880002)
        ev = wait_kprobe(agent, name, lambda e: e["args"] == [{"int_arg": 880002}])
        assert ev["action"] == "KPROBE_ACTION_POST"
        got = [e["args"] for e in kprobe_events(agent, name)]
        assert got == [[{"int_arg": 880001}], [{"int_arg": 880002}]]
        cnt = counters(agent, name)
        assert (cnt.post, cnt.rate_limited, cnt.nopost) == (2, 5, 5)


def test_namespace_bogus_inode_matches_nothing(agent: AgentProcess, ctx: Ctx, tmp_path: Path) -> None:
    """matchNamespaces In [an inode no namespace has]: the worker's call is filtered in the kernel."""
    sel = {
        "matchPIDs": only_worker(ctx),
        "matchNamespaces": [{"namespace": "Mnt", "operator": "In", "values": ["12345"]}],
        "matchArgs": [prefix_d(ctx)],
    }
    with policy(agent, tmp_path, kprobe_policy("bogus-ns", OPENAT, [sel])) as name:
        before = counters(agent, name)
        open_in_worker(ctx, "bogus")
        after = counters(agent, name)
        assert after.post == before.post == 0
        assert after.filtered >= before.filtered + 1
    assert kprobe_events(agent, name) == []
