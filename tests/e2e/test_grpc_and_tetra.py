"""The same events through the gRPC stream, the JSON file and `tetra`, from a real agent."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN
from tests.e2e.agentproc import AgentProcess, Stream, body, is_exec_of, is_exit_of, kind, running_agent
from tetragon.api.gen.tetragon import events_pb2


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory, "agent-grpc", "--enable-ancestors", "base")


def _run_marked(tmp: Path) -> tuple[int, str]:
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    pidfile = tmp / f"{marker}.pid"
    subprocess.run(
        ["/bin/sh", "-c", f"echo $$ > {pidfile}; exec /bin/echo {marker} 'with space'"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return int(pidfile.read_text()), marker


def _wait_connected(stream: Stream, agent: AgentProcess, tmp: Path) -> None:
    """GetEvents subscribes asynchronously: run probes until one shows up on the stream."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid, _ = _run_marked(tmp)
        try:
            stream.wait_for(is_exec_of(pid), timeout=0.5)
            return
        except AssertionError:
            continue
    raise AssertionError("stream never delivered an event")


def test_grpc_stream_equals_json_file(agent: AgentProcess, tmp_path: Path) -> None:
    stream = Stream(agent.server)
    try:
        _wait_connected(stream, agent, tmp_path)
        pid, marker = _run_marked(tmp_path)
        streamed_exec = stream.wait_for(is_exec_of(pid, "/bin/echo"))
        streamed_exit = stream.wait_for(is_exit_of(pid, "/bin/echo"))
    finally:
        stream.close()
    file_exec = agent.wait_for(is_exec_of(pid, "/bin/echo"))
    file_exit = agent.wait_for(is_exit_of(pid, "/bin/echo"))
    assert streamed_exec == file_exec
    assert streamed_exit == file_exit
    p = body(streamed_exec)["process"]
    assert p["arguments"] == f'{marker} "with space"'
    assert p["pid"] == pid and p["binary"] == "/bin/echo"
    assert body(streamed_exec)["ancestors"][-1]["pid"] == 1


def test_grpc_filters_by_event_type_and_pid(agent: AgentProcess, tmp_path: Path) -> None:
    req = events_pb2.GetEventsRequest(
        allow_list=[events_pb2.Filter(event_set=[events_pb2.PROCESS_EXIT], binary_regex=["^/bin/echo$"])]
    )
    stream = Stream(agent.server, req)
    try:
        time.sleep(0.5)
        pid, _ = _run_marked(tmp_path)
        ev = stream.wait_for(is_exit_of(pid))
        assert body(ev)["process"]["binary"] == "/bin/echo"
        time.sleep(0.3)
        assert all(kind(e) == "process_exit" for e in stream.events)
        assert all(body(e)["process"]["binary"] == "/bin/echo" for e in stream.events)
    finally:
        stream.close()


def _tetra(*args: str) -> list[str]:
    return [str(VENV_BIN / "tetra"), *args]


def test_tetra_getevents_compact_live(agent: AgentProcess, tmp_path: Path) -> None:
    out = tmp_path / "compact.txt"
    with open(out, "wb") as f:
        proc = subprocess.Popen(
            _tetra("--server-address", agent.server, "getevents", "-o", "compact", "--process", "/bin/echo"),
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 15
        marker = ""
        while time.monotonic() < deadline:
            _, marker = _run_marked(tmp_path)
            time.sleep(0.3)
            if marker in out.read_text():
                break
        lines = out.read_text().splitlines()
    finally:
        proc.terminate()
        proc.wait(10)
    node = agent.wait_for(lambda e: True)["node_name"]
    # arguments with a space are Go-quoted (strconv.Quote), as tetra prints them
    assert f'🚀 process {node} /bin/echo "{marker} \\"with space\\""' in lines
    assert f'💥 exit    {node} /bin/echo "{marker} \\"with space\\"" 0' in lines


def test_tetra_reads_the_export_file_from_stdin(agent: AgentProcess, tmp_path: Path) -> None:
    pid, marker = _run_marked(tmp_path)
    agent.wait_for(is_exit_of(pid, "/bin/echo"))
    assert agent.export is not None
    with open(agent.export, "rb") as log:
        res = subprocess.run(
            _tetra("getevents", "-o", "compact", "--pid", str(pid), "--process", "^/bin/echo$"),
            stdin=log,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert res.returncode == 0, res.stderr
    node = agent.events[0]["node_name"]
    assert res.stdout.splitlines() == [
        f'🚀 process {node} /bin/echo "{marker} \\"with space\\""',
        f'💥 exit    {node} /bin/echo "{marker} \\"with space\\"" 0',
    ]


def test_tetra_status_and_version(agent: AgentProcess) -> None:
    res = subprocess.run(_tetra("--server-address", agent.server, "status"), capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("Health Status: "), res.stdout + res.stderr
    res = subprocess.run(
        _tetra("--server-address", agent.server, "version", "--server"), capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert "Server version: 0.1.0" in res.stdout


def test_garbage_on_the_grpc_port_does_not_disturb_clients(agent: AgentProcess, tmp_path: Path) -> None:
    stream = Stream(agent.server)
    try:
        _wait_connected(stream, agent, tmp_path)
        host, port = agent.server.rsplit(":", 1)
        for payload in (
            os.urandom(4096),
            b"GET / HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(64),
        ):
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(payload)
                s.settimeout(1)
                with contextlib.suppress(OSError):
                    s.recv(1024)
        pid, _ = _run_marked(tmp_path)
        assert body(stream.wait_for(is_exec_of(pid, "/bin/echo")))["process"]["pid"] == pid
    finally:
        stream.close()
    assert agent.proc.poll() is None


def _runs_of_exec_programs(agent: AgentProcess) -> int:
    """The kernel's run count of the agent's base-sensor programs, from `tetra debug progs`."""
    res = subprocess.run(
        _tetra("debug", "progs", "--pid", str(agent.proc.pid)), capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    return sum(int(row.split()[1]) for row in res.stdout.splitlines()[1:] if "process" in row.split()[-1])


def test_tetra_debug_enable_stats_counts_runs_only_while_it_runs(agent: AgentProcess) -> None:
    """This agent runs without --enable-bpf-stats: the kernel counts its programs' runs only while
    `tetra debug enable-stats` holds the statistics on."""
    subprocess.run(["/bin/true"], check=True)
    assert _runs_of_exec_programs(agent) == 0
    stats = subprocess.Popen(_tetra("debug", "enable-stats"), stdout=subprocess.PIPE, text=True)
    try:
        assert stats.stdout is not None
        assert stats.stdout.readline() == "BPF statistics enabled; Ctrl-C to stop\n"
        for _ in range(5):
            subprocess.run(["/bin/true"], check=True)
        during = _runs_of_exec_programs(agent)
        assert during >= 10  # 5 forks and 5 execs at least, each counted by its program
    finally:
        stats.send_signal(2)
        out, _ = stats.communicate(timeout=10)
    assert stats.returncode == 0 and out == "BPF statistics disabled\n"
    off = _runs_of_exec_programs(agent)  # the exit of the `tetra` that read `during` was still counted
    for _ in range(5):
        subprocess.run(["/bin/true"], check=True)
    assert _runs_of_exec_programs(agent) == off  # off again: nothing more is counted
