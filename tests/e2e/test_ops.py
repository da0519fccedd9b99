"""Operations against a real agent: the grpc.health.v1 liveness service as a Kubernetes probe asks it,
and `tetra debug dump processcache`."""

from __future__ import annotations

import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import VENV_BIN
from tests.e2e.agentproc import AgentProcess, free_port, running_agent

HEALTH_PORT = free_port()
METRICS_PORT = free_port()
DATA = Path(__file__).resolve().parents[1] / "data"
POLICY = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: ops-getcwd
spec:
  kprobes:
  - call: sys_getcwd
    syscall: true
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    policy = tmp_path_factory.mktemp("ops-policy") / "getcwd.yaml"
    policy.write_text(POLICY)
    yield from running_agent(
        tmp_path_factory,
        "agent-ops",
        "--health-server-address",
        f"127.0.0.1:{HEALTH_PORT}",
        "--health-server-interval",
        "1",
        "--metrics-server",
        f"127.0.0.1:{METRICS_PORT}",
        "--enable-bpf-stats",
        "--tracing-policy",
        str(policy),
    )


# exported before this list was written, and not among the names the spec lists; per-policy kernel
# losses (the policy ring), for which Tetragon has no family
NOT_IN_SPEC = {"tetragon_events_export_failed_total", "tetragon_policy_events_lost_total"}


def _spec_metric_names() -> set[str]:
    lines = (DATA / "tetragon_metrics.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def _scrape() -> dict[str, list[str]]:
    """family name -> its sample lines, from the agent's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).read().decode()
    families: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            families.setdefault(line.split()[2], [])
        elif line and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            family = next((f for f in families if name == f or name.startswith(f + "_")), name)
            families.setdefault(family, []).append(line)
    return families


def test_metrics_are_tetragons_names_and_labels(agent: AgentProcess) -> None:
    for _ in range(50):
        os.getcwd()
    families = _scrape()
    ours = {name for name in families if name.startswith("tetragon_")}
    assert ours - NOT_IN_SPEC <= _spec_metric_names(), ours - NOT_IN_SPEC - _spec_metric_names()
    for name in (
        "tetragon_map_errors_update_total",
        "tetragon_map_errors_delete_total",
        "tetragon_event_cache_entries",
        "tetragon_event_cache_inserts_total",
        "tetragon_event_cache_fetch_failures_total",
        "tetragon_handler_errors_total",
        "tetragon_overhead_program_runs_total",
        "tetragon_overhead_program_seconds_total",
        "tetragon_observer_ringbuf_queue_events_received_total",
    ):
        assert name in ours, name
    runs = [
        line for line in families["tetragon_overhead_program_runs_total"] if 'policy="ops-getcwd"' in line
    ]
    assert runs, families["tetragon_overhead_program_runs_total"]
    assert all('policy_namespace=""' in line and 'sensor="generic_sensor"' in line for line in runs)
    assert sum(float(line.rsplit(" ", 1)[1]) for line in runs) > 0  # --enable-bpf-stats: the kernel counts
    [entries] = families["tetragon_map_entries"]
    [capacity] = families["tetragon_map_capacity"]
    assert entries.startswith('tetragon_map_entries{map="execve_map"}') and float(entries.split()[-1]) > 10
    assert (
        capacity.startswith('tetragon_map_capacity{map="execve_map"}')
        and float(capacity.split()[-1]) >= 32768
    )
    base = [line for line in families["tetragon_overhead_program_runs_total"] if 'policy="__base__"' in line]
    assert base and sum(float(line.rsplit(" ", 1)[1]) for line in base) > 0


def test_liveness_probe_is_serving(agent: AgentProcess) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{HEALTH_PORT}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def _tetra(agent: AgentProcess, *args: str) -> list[dict[str, object]]:
    res = subprocess.run(
        [str(VENV_BIN / "tetra"), "--server-address", agent.server, *args], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    return [orjson.loads(line) for line in res.stdout.splitlines()]


def test_tetra_dumps_the_process_cache(agent: AgentProcess) -> None:
    processes = _tetra(agent, "debug", "dump", "processcache")
    by_pid = {p["process"]["pid"]: p for p in processes}  # type: ignore[index]
    me = by_pid[os.getpid()]  # seeded from /proc at start, still running
    assert me["color"] == "inUse" and me["refcnt"] >= 1  # type: ignore[operator]
    assert me["process"]["exec_id"]  # type: ignore[index]
    assert by_pid[1]["process"]["binary"]  # type: ignore[index]
    live = _tetra(agent, "dump", "processcache", "--skip-zero-refcnt")
    assert all(p["refcnt"] > 0 for p in live)  # type: ignore[operator]
    assert os.getpid() in {p["process"]["pid"] for p in live}  # type: ignore[index]
    leaked = _tetra(agent, "dump", "processcache", "--exclude-execve-map-processes")
    assert os.getpid() not in {p["process"]["pid"] for p in leaked}  # type: ignore[index]


def test_tetra_debug_progs_lists_the_agents_programs(agent: AgentProcess) -> None:
    res = subprocess.run(
        [str(VENV_BIN / "tetra"), "debug", "progs", "--pid", str(agent.proc.pid)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    header, *rows = res.stdout.splitlines()
    assert header.split() == ["ID", "RUNS", "TIME(ns)", "AVG(ns)", "NAME"]
    assert rows and sum(int(row.split()[1]) for row in rows) > 0  # --enable-bpf-stats: the kernel counts
    assert any(row.split()[-1].startswith("gen_") for row in rows), rows  # the policy's programs


def _metric(name: str) -> float:
    [line] = [line for line in _scrape()[name] if line.startswith(name + '{map="execve_map"}')]
    return float(line.rsplit(" ", 1)[1])


def test_tetra_info_and_policy_domains(agent: AgentProcess) -> None:
    [info] = [orjson.loads(agent.tetra("info").stdout)]
    assert info["name"] == "tetragon" and info["version"]
    probes = {p["Name"]: p["Enabled"] for p in info["probes"]}
    assert probes["tp_btf"] is True  # the base sensor runs on tp_btf: the agent could not start without
    conf = {c["key"]: c["value"] for c in info["conf"]}
    assert conf["tracing-policy"]["@type"] == "type.googleapis.com/google.protobuf.StringValue"
    assert conf["tracing-policy"]["value"].endswith("getcwd.yaml")
    assert conf["enable-bpf-stats"]["value"] is True
    assert info["build"]["go_version"].startswith("python3.")
    assert agent.tetra("tracingpolicy", "domains").stdout.splitlines() == ["static"]


def test_refcnt_ops_add_up_to_refcnt(agent: AgentProcess) -> None:
    dump: list[Any] = _tetra(agent, "debug", "dump", "processcache")
    [me] = [p for p in dump if p["process"]["pid"] == os.getpid()]
    ops = me["refcnt_ops"]
    assert ops["process++"] == 1 and "process--" not in ops
    assert ops["parent++"] >= 1  # the tetra just run is a child
    assert me["refcnt"] == 1 + ops["parent++"] - ops.get("parent--", 0)


def test_tetra_debug_maps_and_dump_execve(agent: AgentProcess) -> None:
    pid = str(agent.proc.pid)
    header, *rows, total = agent.tetra("debug", "maps", "--pid", pid).stdout.splitlines()
    assert header.split() == ["ID", "TYPE", "ENTRIES", "MAX", "MEMLOCK", "NAME"]
    by_name = {row.split()[-1]: row.split() for row in rows}
    execve = by_name["tg_execve_map"]
    assert execve[1] == "hash" and int(execve[2]) > 10 and execve[3] == "32768" and int(execve[4]) > 0
    assert by_name["tg_rb_events"][1] == "ringbuf"
    assert total == f"{len(rows)} maps, {sum(int(r.split()[4]) for r in rows)} bytes of kernel memory"
    lines = agent.tetra("debug", "dump", "execve", "--pid", pid).stdout.splitlines()
    entries = {e["pid"]: e for e in map(orjson.loads, lines)}
    me = entries[os.getpid()]  # seeded from /proc at start
    assert me["ppid"] == os.getppid() and me["exec_pid"] == os.getpid()
    child = subprocess.Popen(["/bin/sleep", "30"])
    try:
        agent.wait_for(lambda e: "process_exec" in e and e["process_exec"]["process"]["pid"] == child.pid)
        lines = agent.tetra("debug", "dump", "execve", "--pid", pid).stdout.splitlines()
        entry = next(e for e in map(orjson.loads, lines) if e["pid"] == child.pid)
        assert entry["binary"] == "/bin/sleep" and entry["ppid"] == os.getpid()
    finally:
        child.kill()
        child.wait()


def test_map_errors_count_the_kernels_failed_updates_and_deletes(agent: AgentProcess) -> None:
    """Real failures of the base sensor's tg_execve_map operations: a process whose entry is gone
    when it exits (its delete fails with ENOENT), and processes started while the map is full (their
    update fails with E2BIG)."""
    import ctypes

    from tetragon.abi.generic_cfg_h import GenProc
    from tetragon.bpf.libbpf_bindings import lib
    from tetragon.metrics.bpfmaps import maps_of_process, open_map

    def started(proc: subprocess.Popen[bytes]) -> None:
        agent.wait_for(lambda e: "process_exec" in e and e["process_exec"]["process"]["pid"] == proc.pid)

    [execve] = [m for m in maps_of_process(agent.proc.pid) if m.name == "tg_execve_map"]
    deletes, updates = (
        _metric("tetragon_map_errors_delete_total"),
        _metric("tetragon_map_errors_update_total"),
    )
    with open_map(execve.id) as fd:
        child = subprocess.Popen(["/bin/sleep", "30"])
        started(child)
        assert lib().bpf_map_delete_elem(fd, ctypes.byref(ctypes.c_uint32(child.pid))) == 0
        child.kill()
        child.wait()
        agent.wait_for(lambda e: "process_exit" in e and e["process_exit"]["process"]["pid"] == child.pid)
        assert _metric("tetragon_map_errors_delete_total") >= deletes + 1
        junk = 0x40000000  # keys above any pid (pid_max <= 2^22)
        value = GenProc()
        try:
            while (
                lib().bpf_map_update_elem(fd, ctypes.byref(ctypes.c_uint32(junk)), ctypes.byref(value), 0)
                == 0
            ):
                junk += 1
            full = subprocess.Popen(["/bin/true"])  # its fork's and its exec's updates find no room
            full.wait()
            started(full)
        finally:
            for key in range(0x40000000, junk):
                lib().bpf_map_delete_elem(fd, ctypes.byref(ctypes.c_uint32(key)))
    assert _metric("tetragon_map_errors_update_total") >= updates + 2
