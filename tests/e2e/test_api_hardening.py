"""Hardening of a real agent (issue 13): who may use the API, the API under 200 event streams, and
bad flags refused before anything starts."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.conftest import VENV_BIN
from tests.e2e.agentproc import AgentProcess, free_port, running_agent
from tests.unit.test_api_load import HOLDER
from tetragon.api.gen.tetragon import events_pb2, sensors_pb2, sensors_pb2_grpc, tetragon_pb2

TETRA = str(VENV_BIN / "tetra")
TETRAGON = str(VENV_BIN / "tetragon")
NOBODY = "65534"
STREAMS = 200


def policy_yaml(name: str) -> str:
    return (
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\n"
        f"metadata:\n  name: {name}\n"
        "spec:\n  kprobes:\n  - call: sys_getcwd\n    syscall: true\n"
        '    selectors:\n    - matchBinaries:\n      - operator: In\n        values: ["/nonexistent/bin"]\n'
    )


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory, "agent-hardening")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory uid 65534 can read (pytest's tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="tetragon-hardening-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def as_nobody(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop privileges")
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_nobody_cannot_add_a_policy_or_read_events(agent: AgentProcess, shared_dir: Path) -> None:
    f = shared_dir / "p.yaml"
    f.write_text(policy_yaml("from-nobody"))
    f.chmod(0o644)
    res = as_nobody(TETRA, "--server-address", agent.server, "tracingpolicy", "add", str(f))
    assert (
        res.returncode != 0
        and "PermissionDenied" in res.stderr + res.stdout
        or "denied" in res.stderr.lower()
    )
    listed = agent.tetra("tracingpolicy", "list", "-o", "json")
    assert "from-nobody" not in listed.stdout  # nothing changed
    res = as_nobody(TETRA, "--server-address", agent.server, "getevents", "--timeout", "3s", timeout=30)
    assert res.returncode != 0 and res.stdout == "", (res.returncode, res.stdout, res.stderr)
    assert f"uid {NOBODY}" in agent.stderr() and "refused" in agent.stderr()
    # root's own tetra keeps working on the same address
    res = agent.tetra("tracingpolicy", "add", str(f))
    assert res.returncode == 0, res.stderr
    agent.tetra("tracingpolicy", "delete", "from-nobody")


def test_unix_socket_callers_are_checked_by_uid(tmp_path: Path, shared_dir: Path) -> None:
    """On a unix socket the relay's SO_PEERCRED names the caller: uid 65534, allowed to read by the
    flag, streams events but cannot add a policy; root can."""
    policy = shared_dir / "p.yaml"
    policy.write_text(policy_yaml("unix-from-nobody"))
    policy.chmod(0o644)
    address = f"unix://{shared_dir}/tetragon.sock"
    agent = AgentProcess(tmp_path, "--server-allow-uids", NOBODY, server=address)
    try:
        agent.wait_ready()
        res = as_nobody(TETRA, "--server-address", address, "tracingpolicy", "add", str(policy))
        assert res.returncode != 0 and "PERMISSION_DENIED" in res.stderr, res
        assert f"AddTracingPolicy refused for uid {NOBODY}" in agent.stderr()
        assert "unix-from-nobody" not in agent.tetra("tracingpolicy", "list", "-o", "json").stdout
        marker = shutil.which("true") or "/bin/true"
        out = tmp_path / "events.txt"
        with open(out, "wb") as f:
            reader = subprocess.Popen(
                ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                 TETRA, "--server-address", address, "getevents", "-o", "compact", "--process", marker],
                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and marker not in out.read_text():
                subprocess.run([marker])
                time.sleep(0.3)
        finally:
            reader.terminate()
            reader.wait(10)
        assert f"process {agent.wait_for(lambda e: True)['node_name']} {marker}" in out.read_text()
        res = agent.tetra("tracingpolicy", "add", str(policy))
        assert res.returncode == 0, res.stderr
        agent.tetra("tracingpolicy", "delete", "unix-from-nobody")
    finally:
        assert agent.stop() == 0, agent.stderr()[-3000:]


async def _streams_and_unary_rpcs(address: str, marker_bin: str) -> tuple[int, list[float]]:
    """Open STREAMS GetEvents streams (each its own connection), run `marker_bin` until every stream
    has seen its exec, timing unary RPCs meanwhile, then a policy add and delete (last timing).
    Returns (streams that got an event, timings)."""
    request = events_pb2.GetEventsRequest(allow_list=[events_pb2.Filter(binary_regex=[f"^{marker_bin}$"])])
    channels = [grpc.aio.insecure_channel(address) for _ in range(STREAMS)]
    got = [False] * STREAMS

    async def read(i: int) -> None:
        call = sensors_pb2_grpc.FineGuidanceSensorsStub(channels[i]).GetEvents(request)
        async for _ in call:  # kept open (and drained) until the end
            got[i] = True

    readers = [asyncio.create_task(read(i)) for i in range(STREAMS)]
    stub = sensors_pb2_grpc.FineGuidanceSensorsStub(channels[0])
    timings: list[float] = []
    try:
        deadline = time.monotonic() + 90
        while not all(got) and time.monotonic() < deadline:
            proc = await asyncio.create_subprocess_exec(
                marker_bin, "--version", stdout=asyncio.subprocess.DEVNULL
            )
            await proc.wait()
            for call in (
                lambda: stub.GetHealth(tetragon_pb2.GetHealthStatusRequest(), timeout=10),
                lambda: stub.ListTracingPolicies(sensors_pb2.ListTracingPoliciesRequest(), timeout=10),
            ):
                started = time.monotonic()
                await call()
                timings.append(time.monotonic() - started)
            await asyncio.sleep(0.5)
        # policy changes too, with every stream still open
        started = time.monotonic()
        await stub.AddTracingPolicy(
            sensors_pb2.AddTracingPolicyRequest(yaml=policy_yaml("under-load")), timeout=30
        )
        await stub.DeleteTracingPolicy(sensors_pb2.DeleteTracingPolicyRequest(name="under-load"), timeout=30)
        timings.append(time.monotonic() - started)
        return sum(got), timings
    finally:
        for t in readers:
            t.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for ch in channels:
            await ch.close(None)


def test_200_streams_all_get_events_and_unary_rpcs_stay_answerable(
    agent: AgentProcess, tmp_path: Path
) -> None:
    marker = tmp_path / "marker-bin"
    shutil.copy("/bin/true", marker)
    received, timings = asyncio.run(_streams_and_unary_rpcs(agent.server, str(marker)))
    assert received == STREAMS
    *unary, policy_change = timings
    assert unary and max(unary) < 2.0, unary
    assert policy_change < 10.0  # loads and unloads a BPF object: seconds at worst on a busy machine


def _one_line(res: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--export-file-perm", "7777"), ("--rb-size", "1099511627776"), ("--procfs", "/dev/null")],
)
def test_bad_flag_is_one_line_exit_2(flag: str, value: str, tmp_path: Path) -> None:
    res = subprocess.run(
        [TETRAGON, flag, value, "--run-dir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2
    line = _one_line(res)
    assert flag in line and repr(value) in line


def test_all_interfaces_without_tls_is_refused(tmp_path: Path) -> None:
    port = free_port()
    res = subprocess.run(
        [TETRAGON, "--server-address", f":{port}", "--run-dir", str(tmp_path / "run"),
         "--tracing-policy-dir", str(tmp_path / "tp.d")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2  # refused before anything is loaded
    assert "--server-tls-cert-file" in _one_line(res)


def test_one_users_idle_connections_are_capped(agent: AgentProcess) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop privileges")
    port = agent.server.rpartition(":")[2]
    holder = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         str(VENV_BIN / "python"), "-c", HOLDER, port, "500", "5"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        time.sleep(0.5)  # the cap is enforced at accept
        started = time.monotonic()
        res = agent.tetra("status")
        assert res.returncode == 0 and time.monotonic() - started < 5
        closed = int(holder.stdout.readline())
    finally:
        holder.kill()
        holder.wait()
    assert closed >= 500 - 64, closed
    assert f"uid {NOBODY}" in agent.stderr() and "closed" in agent.stderr()
