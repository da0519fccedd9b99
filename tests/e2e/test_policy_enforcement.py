"""TracingPolicy enforcement end to end: Sigkill, Signal, NotifyEnforcer and monitor mode, through a real
agent, policies added with the real `tetra`, and real processes that are (or are not) killed.

Enforcement here is bpf_send_signal() at the syscall tracepoints (no kprobes/override on this kernel):
the signal is queued when the call starts and acts when the call returns to user space. What that does
and does not prevent is asserted per hook below.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.agentproc import AgentProcess, Event, body, is_exit_of, running_agent
from tests.e2e.policyutil import (
    NR_MKDIRAT,
    Worker,
    counters,
    kprobe_events,
    policy,
    policy_status,
    wait_kprobe,
)

PY = sys.executable


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory, "enforcement")


def doc(name: str, kprobes: list[dict[str, Any]], **spec: Any) -> str:
    out = {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": name},
        "spec": {**spec, "kprobes": kprobes},
    }
    return str(yaml.safe_dump(out, sort_keys=False))


def exit_of(agent: AgentProcess, pid: int) -> Event:
    return body(agent.wait_for(is_exit_of(pid)))


def test_sigkill_on_execve_stops_the_program(agent: AgentProcess, tmp_path: Path) -> None:
    """Killed in sys_execve: the new program never runs (its marker file is never created)."""
    marker = tmp_path / "marker"
    script = tmp_path / "evil.sh"
    script.write_text(f"#!/bin/sh\n/usr/bin/touch {marker}\n")
    script.chmod(0o755)
    ok = tmp_path / "fine.sh"
    ok.write_text(f"#!/bin/sh\n/usr/bin/touch {marker}.ok\n")
    ok.chmod(0o755)
    hook = {
        "call": "sys_execve",
        "syscall": True,
        "args": [{"index": 0, "type": "string"}],
        "selectors": [
            {
                "matchArgs": [{"index": 0, "operator": "Equal", "values": [str(script)]}],
                "matchActions": [{"action": "Sigkill"}],
            }
        ],
    }
    with policy(agent, tmp_path, doc("kill-exec", [hook])) as name:
        # dash runs a lone -c command with exec: /bin/sh itself calls execve(evil.sh)
        proc = subprocess.run(["/bin/sh", "-c", f"exec {script}"], timeout=10)
        assert proc.returncode == -signal.SIGKILL
        ev = wait_kprobe(agent, name, lambda e: e["args"] == [{"string_arg": str(script)}])
        assert ev["function_name"] == "__x64_sys_execve"
        assert ev["action"] == "KPROBE_ACTION_SIGKILL"
        assert ev["process"]["binary"] == "/bin/sh"
        pid = ev["process"]["pid"]
        ex = exit_of(agent, pid)
        assert ex["signal"] == "SIGKILL"
        assert ex["process"]["binary"] == "/bin/sh"
        assert not marker.exists()
        # another program is not matched: it runs
        assert subprocess.run(["/bin/sh", "-c", f"exec {ok}"], timeout=10).returncode == 0
        assert Path(f"{marker}.ok").exists()
        c = counters(agent, name)
        assert (c.post, c.signal, c.monitor_signal) == (1, 1, 0)


def test_sigkill_on_write_leaves_the_file_empty(agent: AgentProcess, tmp_path: Path) -> None:
    """Killed in sys_write: the data is not written (a pending fatal signal stops generic_perform_write
    before it copies anything), and the process does nothing after it."""
    d = tmp_path / "d"
    d.mkdir()
    target, after = d / "wfile", tmp_path / "after-write"
    hook = {
        "call": "sys_write",
        "syscall": True,
        "args": [
            {"index": 0, "type": "fd"},
            {"index": 1, "type": "char_buf", "sizeArgIndex": 3},
            {"index": 2, "type": "size_t"},
        ],
        "selectors": [
            {
                "matchArgs": [{"index": 0, "operator": "Prefix", "values": [f"{d}/"]}],
                "matchActions": [{"action": "Sigkill"}],
            }
        ],
    }
    code = (
        "import os\n"
        f"fd = os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT, 0o600)\n"
        "os.write(fd, b'hello')\n"
        f"open({str(after)!r}, 'w').close()\n"
    )
    with policy(agent, tmp_path, doc("kill-write", [hook])) as name:
        proc = subprocess.Popen([PY, "-c", code])
        assert proc.wait(10) == -signal.SIGKILL
        ev = wait_kprobe(agent, name, lambda e: e["process"]["pid"] == proc.pid)
        assert ev["function_name"] == "__x64_sys_write"
        assert ev["args"] == [
            {"file_arg": {"path": str(target), "permission": "-rw-------"}},
            {"bytes_arg": "aGVsbG8="},  # b"hello"
            {"size_arg": "5"},
        ]
        assert ev["action"] == "KPROBE_ACTION_SIGKILL"
        assert exit_of(agent, proc.pid)["signal"] == "SIGKILL"
        assert target.read_bytes() == b""
        assert not after.exists()


def test_sigkill_on_openat_kills_but_the_open_happens(agent: AgentProcess, tmp_path: Path) -> None:
    """Killed in sys_openat. The hook runs at syscall entry and only queues SIGKILL: the open itself still
    completes (O_CREAT creates the file); what is prevented is everything the process would do next."""
    d = tmp_path / "d"
    d.mkdir()
    target, after = d / "ofile", tmp_path / "after-open"
    hook = {
        "call": "sys_openat",
        "syscall": True,
        "args": [{"index": 1, "type": "filename"}],
        "selectors": [
            {
                "matchArgs": [{"index": 1, "operator": "Prefix", "values": [f"{d}/"]}],
                "matchActions": [{"action": "Sigkill"}],
            }
        ],
    }
    code = f"open({str(target)!r}, 'w').write('data')\nopen({str(after)!r}, 'w').close()\n"
    with policy(agent, tmp_path, doc("kill-open", [hook])) as name:
        proc = subprocess.Popen([PY, "-c", code])
        assert proc.wait(10) == -signal.SIGKILL
        ev = wait_kprobe(agent, name, lambda e: e["process"]["pid"] == proc.pid)
        assert ev["args"] == [{"string_arg": str(target)}]
        assert ev["action"] == "KPROBE_ACTION_SIGKILL"
        assert exit_of(agent, proc.pid)["signal"] == "SIGKILL"
    # (read once the policy is gone: opening the file here would kill this process too)
    assert target.exists()  # not prevented: created by the open that was being killed
    assert target.read_bytes() == b""  # the write after it never happened
    assert not after.exists()


SIGUSR1_HANDLER = """
import builtins, signal
builtins.got = []
signal.signal(signal.SIGUSR1, lambda s, f: builtins.got.append(s))
"""


def test_signal_action_delivers_argsig(agent: AgentProcess, tmp_path: Path) -> None:
    """Signal argSig 10: the process gets exactly SIGUSR1 (its handler records it) and lives on."""
    d = tmp_path / "d"
    d.mkdir()
    w = Worker()
    try:
        w.run(SIGUSR1_HANDLER)
        hook = {
            "call": "sys_mkdirat",
            "syscall": True,
            "args": [{"index": 1, "type": "filename"}],
            "selectors": [
                {
                    "matchPIDs": [{"operator": "In", "values": [w.pid]}],
                    "matchArgs": [{"index": 1, "operator": "Prefix", "values": [f"{d}/sig"]}],
                    "matchActions": [{"action": "Signal", "argSig": 10}],
                }
            ],
        }
        with policy(agent, tmp_path, doc("signal-usr1", [hook])) as name:
            w.run(f"result = sc({NR_MKDIRAT}, -100, {str(d / 'nosig')!r}.encode(), 0o755)")
            assert w.run("import builtins\nresult = builtins.got") == []
            w.run(f"result = sc({NR_MKDIRAT}, -100, {str(d / 'sig1')!r}.encode(), 0o755)")
            assert w.run("import builtins\nresult = builtins.got") == [signal.SIGUSR1]
            ev = wait_kprobe(agent, name, lambda e: e["args"] == [{"string_arg": str(d / "sig1")}])
            assert ev["action"] == "KPROBE_ACTION_SIGNAL"
            assert ev["process"]["pid"] == w.pid
            c = counters(agent, name)
            assert (c.post, c.signal) == (1, 1)
            assert (d / "sig1").is_dir()  # Signal does not stop the call
        assert w.proc.poll() is None
    finally:
        assert w.close() == 0


def _kill_mkdir(d: Path) -> dict[str, Any]:
    return {
        "call": "sys_mkdirat",
        "syscall": True,
        "args": [{"index": 1, "type": "filename"}],
        "selectors": [
            {
                "matchArgs": [{"index": 1, "operator": "Prefix", "values": [f"{d}/"]}],
                "matchActions": [{"action": "Sigkill"}],
            }
        ],
    }


def _mkdir_in_new_process(path: Path) -> subprocess.Popen[bytes]:
    # mkdirat() itself: glibc's mkdir() is the mkdir syscall
    code = f"import ctypes\nctypes.CDLL(None).syscall({NR_MKDIRAT}, -100, {str(path).encode()!r}, 0o755)\n"
    proc = subprocess.Popen([PY, "-c", code])
    proc.wait(10)
    return proc


def test_monitor_mode_and_set_mode(agent: AgentProcess, tmp_path: Path) -> None:
    """--mode monitor: the Sigkill is reported (action KPROBE_ACTION_SIGKILL) but not carried out;
    `tetra tracingpolicy set-mode` switches the loaded policy to enforce and back at run time."""
    d = tmp_path / "d"
    d.mkdir()
    with policy(agent, tmp_path, doc("monitored", [_kill_mkdir(d)]), "--mode", "monitor") as name:
        assert policy_status(agent, name)["mode"] == "TP_MODE_MONITOR"
        p1 = _mkdir_in_new_process(d / "m1")
        assert p1.returncode == 0
        ev = wait_kprobe(agent, name, lambda e: e["process"]["pid"] == p1.pid)
        assert ev["action"] == "KPROBE_ACTION_SIGKILL"
        assert ev["args"] == [{"string_arg": str(d / "m1")}]
        c = counters(agent, name)
        assert (c.post, c.signal, c.monitor_signal) == (1, 0, 1)

        out = agent.tetra("tracingpolicy", "set-mode", name, "enforce")
        assert out.stdout == f'tracing policy "{name}" set to mode "enforce"\n'
        assert policy_status(agent, name)["mode"] == "TP_MODE_ENFORCE"
        p2 = _mkdir_in_new_process(d / "e1")
        assert p2.returncode == -signal.SIGKILL
        ev = wait_kprobe(agent, name, lambda e: e["process"]["pid"] == p2.pid)
        assert ev["action"] == "KPROBE_ACTION_SIGKILL"
        assert exit_of(agent, p2.pid)["signal"] == "SIGKILL"
        c = counters(agent, name)
        assert (c.post, c.signal, c.monitor_signal) == (2, 1, 1)

        agent.tetra("tracingpolicy", "set-mode", name, "monitor")
        assert policy_status(agent, name)["mode"] == "TP_MODE_MONITOR"
        p3 = _mkdir_in_new_process(d / "m2")
        assert p3.returncode == 0
        assert (d / "m2").is_dir()
        ev = wait_kprobe(agent, name, lambda e: e["process"]["pid"] == p3.pid)
        assert ev["action"] == "KPROBE_ACTION_SIGKILL"
        c = counters(agent, name)
        assert (c.post, c.signal, c.monitor_signal) == (3, 1, 2)
        assert [e["process"]["pid"] for e in kprobe_events(agent, name)] == [p1.pid, p2.pid, p3.pid]


def test_monitor_mode_from_policy_options(agent: AgentProcess, tmp_path: Path) -> None:
    """spec.options policy-mode: monitor, without the CLI flag."""
    d = tmp_path / "d"
    d.mkdir()
    text = doc("monitored-opt", [_kill_mkdir(d)], options=[{"name": "policy-mode", "value": "monitor"}])
    with policy(agent, tmp_path, text) as name:
        assert policy_status(agent, name)["mode"] == "TP_MODE_MONITOR"
        p = _mkdir_in_new_process(d / "x")
        assert p.returncode == 0
        ev = wait_kprobe(agent, name, lambda e: e["process"]["pid"] == p.pid)
        assert ev["action"] == "KPROBE_ACTION_SIGKILL"


def test_notify_enforcer_kills_at_the_listed_syscall(agent: AgentProcess, tmp_path: Path) -> None:
    """Like Tetragon's killer.yaml: a list of syscalls, hooked with NotifyEnforcer for one binary and
    served by spec.enforcers. The process is killed at that syscall; a process of another binary is not."""
    w = Worker()  # its binary is this interpreter; matchPIDs keeps pytest and the agent (same binary) out
    try:
        hook = {
            "call": "list:dups",
            "syscall": True,
            "args": [{"index": 0, "type": "int"}],
            "selectors": [
                {
                    "matchBinaries": [{"operator": "In", "values": [PY]}],
                    "matchPIDs": [{"operator": "In", "values": [w.pid]}],
                    "matchActions": [{"action": "NotifyEnforcer", "argError": -1, "argSig": 9}],
                }
            ],
        }
        text = doc(
            "killer",
            [hook],
            lists=[{"name": "dups", "type": "syscalls", "values": ["sys_dup", "sys_dup2"]}],
            enforcers=[{"calls": ["list:dups"]}],
        )
        with policy(agent, tmp_path, text) as name:
            assert policy_status(agent, name)["sensors"] == ["generic_kprobe", "enforcer"]
            assert w.run("result = 7") == 7  # other syscalls are not affected
            with pytest.raises(RuntimeError, match="died"):
                w.run("result = sc(32, 1)")  # dup(1)
            assert w.proc.wait(10) == -signal.SIGKILL
            ev = wait_kprobe(agent, name, lambda e: e["process"]["pid"] == w.pid)
            assert ev["function_name"] == "__x64_sys_dup"
            assert ev["args"] == [{"int_arg": 1}]
            assert ev["action"] == "KPROBE_ACTION_NOTIFYENFORCER"
            ex = exit_of(agent, w.pid)
            assert ex["signal"] == "SIGKILL"
            assert ex["process"]["binary"] == PY
            c = counters(agent, name)
            # the notification and the signal the enforcer sent
            assert (c.post, c.signal) == (1, 2)
    finally:
        if w.proc.poll() is None:
            w.close()
