"""`tetra` as a subprocess against a real in-process GrpcServer fed through a real EventBus."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import DATA, tetragon_examples
from tetragon.api.server import GrpcServer
from tetragon.cli import tetra
from tetragon.events.bus import EventBus
from tetragon.events.compact import format_compact

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


def exec_event(pid: int, binary: str = "/bin/true", args: str = "") -> dict[str, Any]:
    process: dict[str, Any] = {"exec_id": f"e{pid}", "pid": pid, "binary": binary}
    if args:
        process["arguments"] = args
    return {"process_exec": {"process": process}, "node_name": "node1", "time": "2024-01-02T03:04:05.500Z"}


def exit_event(pid: int, binary: str = "/bin/true") -> dict[str, Any]:
    body = {"process": {"exec_id": f"e{pid}", "pid": pid, "binary": binary}, "status": 1}
    return {"process_exit": body, "node_name": "node1"}


def kprobe_event(pid: int) -> dict[str, Any]:
    body = {
        "process": {"exec_id": f"e{pid}", "pid": pid, "binary": "/bin/cat"},
        "function_name": "fd_install",
    }
    return {"process_kprobe": body, "node_name": "node1"}


SERVER_VERSION = "v1.2.3-test"  # what the `server` fixture (conftest.py) reports


def tetra_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tetragon.cli.tetra", *args]


def run_tetra(
    *args: str, stdin: bytes | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        tetra_cmd(*args),
        input=stdin.decode() if stdin is not None else None,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
        check=False,
    )


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def stream_lines(
    server: GrpcServer, bus: EventBus, args: list[str], events: list[dict[str, Any]], expect: int
) -> list[str]:
    """Run `tetra getevents ARGS`, publish `events` once it is subscribed, return `expect` lines."""
    proc = subprocess.Popen(
        tetra_cmd("getevents", "--server-address", f"localhost:{server.port}", *args),
        stdin=subprocess.DEVNULL,
        # unbuffered: a buffered readline could pull two lines at once, hiding the second from select()
        bufsize=0,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    try:
        wait_for(lambda: bus.subscriber_count == 1 or proc.poll() is not None)
        assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
        for event in events:
            bus.publish(event)
        lines: list[str] = []
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + 20
            while len(lines) < expect:
                assert sel.select(timeout=max(deadline - time.monotonic(), 0)), f"only got {lines}"
                line = proc.stdout.readline()
                assert line, f"tetra exited early: {proc.stderr.read()!r}"  # type: ignore[union-attr]
                lines.append(line.decode().rstrip("\n"))
        return lines
    finally:
        proc.kill()  # an abrupt client disconnect: the server must notice and unsubscribe
        proc.wait()
        wait_for(lambda: bus.subscriber_count == 0)


def _assert_getevents_json_is_identical(server: GrpcServer, bus: EventBus, events_file: Path) -> None:
    lines = [line for line in events_file.read_bytes().splitlines() if line.strip()]
    got = stream_lines(server, bus, [], [orjson.loads(line) for line in lines], len(lines))
    assert [g.encode() for g in got] == lines


def test_getevents_json_is_identical_to_recorded_events(server: GrpcServer, bus: EventBus) -> None:
    _assert_getevents_json_is_identical(server, bus, DATA / "events.json")


@pytest.mark.conformance
def test_getevents_json_is_identical_to_published_events(server: GrpcServer, bus: EventBus) -> None:
    _assert_getevents_json_is_identical(server, bus, tetragon_examples("events", "events.json"))


def test_getevents_filters(server: GrpcServer, bus: EventBus) -> None:
    events = [exec_event(10, "/usr/bin/curl"), exit_event(10, "/usr/bin/curl"), kprobe_event(11)]
    sentinel = exit_event(12, "/usr/bin/wget")
    got = stream_lines(server, bus, ["-e", "PROCESS_EXIT"], [*events, sentinel], 2)
    assert [json.loads(g) for g in got] == [events[1], sentinel]

    sentinel = exec_event(20, "/usr/bin/curl")
    got = stream_lines(server, bus, ["--process", "curl$,wget$"], [*events, sentinel], 3)
    assert [json.loads(g) for g in got] == [events[0], events[1], sentinel]

    got = stream_lines(server, bus, ["--pid", "11", "--pid", "12"], [*events, exit_event(12)], 2)
    assert [json.loads(g) for g in got] == [events[2], exit_event(12)]

    got = stream_lines(server, bus, ["-F", "process.exec_id", "-e", "process_kprobe"], events, 1)
    assert json.loads(got[0]) == {
        "process_kprobe": {"process": {"pid": 11, "binary": "/bin/cat"}, "function_name": "fd_install"},
        "node_name": "node1",
    }


def test_getevents_compact(server: GrpcServer, bus: EventBus) -> None:
    events = [exec_event(30, "/usr/bin/curl", "https://ebpf.io"), exit_event(30, "/usr/bin/curl")]
    got = stream_lines(server, bus, ["-o", "compact", "--timestamps"], events, 2)
    assert got == [
        "2024-01-02T03:04:05.500000000Z 🚀 process node1 /usr/bin/curl https://ebpf.io",
        "1970-01-01T00:00:00.000000000Z 💥 exit    node1 /usr/bin/curl  1",
    ]
    colored = stream_lines(server, bus, ["-o", "compact", "--color", "always"], events[:1], 1)
    assert colored == [format_compact(events[0], color=True)]


def _assert_stdin_passes_through(data: bytes) -> None:
    out = run_tetra("getevents", stdin=data)
    assert out.returncode == 0, out.stderr
    assert out.stdout.encode() == data if data.endswith(b"\n") else data + b"\n"


def test_getevents_from_stdin_recorded_events() -> None:
    # tests/data/events.json: our agent on host "vm" with policies/file-integrity-etc.yaml and network.yaml
    data = (DATA / "events.json").read_bytes()
    _assert_stdin_passes_through(data)

    out = run_tetra("getevents", "-o", "compact", "--process", "/rm$,/sh$", stdin=data)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        '🚀 process vm /bin/rm "-f /etc/tetragon-py-no-such-file"',
        "❓ syscall vm /bin/rm __x64_sys_unlinkat",
        '💥 exit    vm /bin/rm "-f /etc/tetragon-py-no-such-file" 0',
        '🚀 process vm /bin/sh "-c \\"exit 3\\""',
        '💥 exit    vm /bin/sh "-c \\"exit 3\\"" 3',
    ]


@pytest.mark.conformance
def test_getevents_from_stdin() -> None:
    data = tetragon_examples("events", "events.json").read_bytes()
    _assert_stdin_passes_through(data)

    out = run_tetra("getevents", "-o", "compact", "--pod", "^deathstar", stdin=data)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "🚀 process default/deathstar-6f87496b94-qdlh8 /starwars-docker " + '"--port 80 --host 0.0.0.0"',
        "🚀 process default/deathstar-6f87496b94-gjf74 /starwars-docker " + '"--port 80 --host 0.0.0.0"',
    ]


def test_getevents_from_stdin_skips_bad_lines() -> None:
    mixed = b'{"process_exec":{"process":{"binary":"/a"}},"node_name":"n"}\nnot json\n\n'
    out = run_tetra("getevents", "-e", "PROCESS_EXEC", stdin=mixed)
    assert out.stdout == '{"process_exec":{"process":{"binary":"/a"}},"node_name":"n"}\n'
    assert "skipping stdin line 2" in out.stderr


def test_version_and_status(server: GrpcServer) -> None:
    address = f"localhost:{server.port}"
    out = run_tetra("version")
    assert (out.returncode, out.stdout) == (0, "CLI version: 0.1.0\n")
    out = run_tetra("version", "-s", "--server-address", address)
    assert out.stdout == "CLI version: 0.1.0\nServer version: v1.2.3-test\n"
    out = run_tetra("--server-address", address, "status")
    assert (out.returncode, out.stdout) == (0, "Health Status: running\n")


def test_unix_socket_address(bus: EventBus, tmp_path: Path) -> None:
    path = tmp_path / "tetragon.sock"
    with GrpcServer(bus, f"unix://{path}", version="unix-1"):
        assert (
            oct(path.stat().st_mode & 0o777) == "0o666"
        )  # the access rule decides, through the relay (SO_PEERCRED)
        out = run_tetra("version", "--server", "--server-address", f"unix://{path}")
        assert out.stdout.splitlines()[-1] == "Server version: unix-1"


def test_errors_are_one_line(tmp_path: Path) -> None:
    out = run_tetra("status", "--server-address", "localhost:1", "--retries", "0", "--timeout", "5s")
    assert out.returncode == 1
    assert out.stderr.startswith("Error: cannot connect to the server at localhost:1")
    assert len(out.stderr.splitlines()) == 1
    out = run_tetra("getevents", "--output", "yaml")
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr
    out = run_tetra("getevents", "-e", "PROCESS_NOPE", stdin=b"")
    assert (out.returncode, out.stderr) == (
        1,
        "Error: invalid event type 'PROCESS_NOPE' (e.g. PROCESS_EXEC, PROCESS_KPROBE)\n",
    )
    out = run_tetra("status", "--timeout", "soon")
    assert out.returncode == 2 and "invalid duration" in out.stderr


def test_retries_back_off_on_unavailable() -> None:
    started = time.monotonic()
    out = run_tetra("status", "--server-address", "localhost:1", "--retries", "2")
    assert out.returncode == 1
    assert time.monotonic() - started >= 3.0  # waited 1 s, then 2 s


def test_ctrl_c_exits_quietly(server: GrpcServer, bus: EventBus) -> None:
    proc = subprocess.Popen(
        tetra_cmd("getevents", "--server-address", f"localhost:{server.port}"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    wait_for(lambda: bus.subscriber_count == 1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130 and err == b""
    wait_for(lambda: bus.subscriber_count == 0)


def test_default_server_address(tmp_path: Path) -> None:
    info = tmp_path / "tetragon-info.json"
    assert tetra.default_server_address(info) == "localhost:54321"
    info.write_text('{"server_address": "unix:///run/t.sock"}')
    assert tetra.default_server_address(info) == "unix:///run/t.sock"
    info.write_text("garbage")
    assert tetra.default_server_address(info) == "localhost:54321"


def test_probe_wiring(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("tetragon.bpf.features.probe_features", lambda: {"kprobe": True, "lsm": False})
    assert tetra.main(["probe"]) == 0
    assert capsys.readouterr().out == "kprobe: true\nlsm: false\n"

    def broken() -> dict[str, bool]:
        raise OSError("probe object missing")

    monkeypatch.setattr("tetragon.bpf.features.probe_features", broken)
    assert tetra.main(["probe"]) == 1
    assert capsys.readouterr().err == "Error: feature probe failed: probe object missing\n"
