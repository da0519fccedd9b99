from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tetragon.export.jsonfile import JsonFileExporter
from tetragon.metrics.collector import AgentMetrics, MetricsError, split_address
from tetragon.metrics.families import METRICS, parse_label_filter

POD_EXEC = {
    "process_exec": {
        "process": {
            "pid": 3,
            "binary": "/usr/bin/curl",
            "pod": {"namespace": "default", "name": "web-1", "workload": "web"},
        }
    },
    "node_name": "node-1",
    "time": "2024-01-02T03:04:05Z",
}
HOST_KPROBE = {
    "process_kprobe": {"process": {"pid": 4, "binary": "/bin/cat"}, "policy_name": "p"},
    "node_name": "n",
}
THROTTLE = {"process_throttle": {"type": "THROTTLE_START", "cgroup": "x"}, "node_name": "node-1"}


def count_event(metrics: AgentMetrics, event: dict[str, Any]) -> None:
    metrics.add_event_counts({metrics.event_key(event): 1})


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


@pytest.fixture
def served() -> Iterator[tuple[AgentMetrics, int]]:
    metrics = AgentMetrics(build_info={"commit": "abc123"})
    _, port = metrics.serve("127.0.0.1:0")
    try:
        yield metrics, port
    finally:
        metrics.shutdown()


def test_all_tetragon_metrics_are_exposed_with_exact_names(served: tuple[AgentMetrics, int]) -> None:
    _, port = served
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for name, (kind, _, _) in METRICS.items():
        assert f"# TYPE {name} {kind}\n" in text, name
    got = scrape(port)
    for name, (_, _, labels) in METRICS.items():
        if not labels:
            assert name in got, name  # scalars are exported from the start, as in Go
    build = got["tetragon_build_info"]
    ((labels, value),) = build.items()
    assert value == 1
    assert dict(labels)["commit"] == "abc123"
    assert set(dict(labels)) == {"commit", "go_version", "modified", "time"}
    assert "process_cpu_seconds_total" in got


def test_events_total_labels_and_missing_process_info(served: tuple[AgentMetrics, int]) -> None:
    metrics, port = served
    for _ in range(3):
        count_event(metrics, POD_EXEC)
    count_event(metrics, HOST_KPROBE)
    count_event(metrics, THROTTLE)
    got = scrape(port)
    events = got["tetragon_events_total"]
    pod = (("binary", "/usr/bin/curl"), ("namespace", "default"), ("pod", "web-1"), ("type", "PROCESS_EXEC"))
    assert events[(*pod, ("workload", "web"))] == 3
    host = (
        ("binary", "/bin/cat"),
        ("namespace", ""),
        ("pod", ""),
        ("type", "PROCESS_KPROBE"),
        ("workload", ""),
    )
    assert events[host] == 1
    throttle = (
        ("binary", ""),
        ("namespace", ""),
        ("pod", ""),
        ("type", "PROCESS_THROTTLE"),
        ("workload", ""),
    )
    assert events[throttle] == 1
    assert got["tetragon_events_missing_process_info_total"][()] == 1


def test_label_filter_drops_labels() -> None:
    metrics = AgentMetrics(label_filter="binary,bogus", process_collectors=False)
    _, port = metrics.serve("127.0.0.1:0")
    try:
        count_event(metrics, POD_EXEC)
        count_event(metrics, POD_EXEC)
        got = scrape(port)
        assert got["tetragon_events_total"] == {(("binary", "/usr/bin/curl"), ("type", "PROCESS_EXEC")): 2}
    finally:
        metrics.shutdown()
    assert parse_label_filter("") == ()
    assert parse_label_filter("pod,namespace,node_name") == ("namespace", "pod", "node_name")


def test_event_metrics_can_be_disabled() -> None:
    metrics = AgentMetrics(enable_event_metrics=False, process_collectors=False)
    count_event(metrics, POD_EXEC)
    assert (
        metrics.value("tetragon_events_total", ("PROCESS_EXEC", "default", "web", "web-1", "/usr/bin/curl"))
        == 0
    )


def test_pushed_counters(served: tuple[AgentMetrics, int]) -> None:
    metrics, port = served
    metrics.inc("tetragon_msg_op_total", ("5",))
    metrics.inc("tetragon_msg_op_total", ("5",))
    metrics.inc("tetragon_msg_op_total", ("23",))
    metrics.record_handler_error(13, "event_handler_failed")
    metrics.inc("tetragon_bpf_missed_events_total", ("5", "ENOSPC"), 7)
    metrics.inc("tetragon_process_cache_evictions_total")
    metrics.inc("tetragon_process_cache_misses_total", ("get",))
    metrics.inc("tetragon_process_cache_misses_total", ("remove",))
    metrics.inc("tetragon_process_cache_misses_total", ("get",))
    got = scrape(port)
    assert got["tetragon_msg_op_total"] == {(("msg_op", "5"),): 2, (("msg_op", "23"),): 1}
    assert got["tetragon_handler_errors_total"] == {(("error", "event_handler_failed"), ("opcode", "13")): 1}
    assert got["tetragon_bpf_missed_events_total"] == {(("error", "ENOSPC"), ("msg_op", "5")): 7}
    assert got["tetragon_process_cache_evictions_total"][()] == 1
    assert got["tetragon_process_cache_misses_total"] == {
        (("operation", "get"),): 2,
        (("operation", "remove"),): 1,
    }


def test_sources_are_read_at_scrape_time(served: tuple[AgentMetrics, int]) -> None:
    metrics, port = served
    state: dict[str, Any] = {"size": 10, "lost": 0}
    metrics.set_source("tetragon_process_cache_size", lambda: state["size"])
    metrics.set_source("tetragon_process_cache_capacity", lambda: 65536)
    metrics.set_source("tetragon_observer_ringbuf_events_lost_total", lambda: state["lost"])
    metrics.set_source("tetragon_bpf_missed_events_total", lambda: {(7, "E2BIG"): 2})
    assert scrape(port)["tetragon_process_cache_size"][()] == 10
    state["size"], state["lost"] = 12, 4
    got = scrape(port)
    assert got["tetragon_process_cache_size"][()] == 12
    assert got["tetragon_process_cache_capacity"][()] == 65536
    assert got["tetragon_observer_ringbuf_events_lost_total"][()] == 4
    assert got["tetragon_bpf_missed_events_total"] == {(("error", "E2BIG"), ("msg_op", "7")): 2}


def test_broken_source_does_not_break_the_scrape(served: tuple[AgentMetrics, int]) -> None:
    metrics, port = served

    def broken() -> float:
        raise RuntimeError("map gone")

    metrics.set_source("tetragon_observer_ringbuf_errors_total", broken)
    got = scrape(port)
    assert "tetragon_observer_ringbuf_errors_total" not in got
    assert got["tetragon_process_cache_size"][()] == 0


def test_exporter_counters(served: tuple[AgentMetrics, int], tmp_path: Path) -> None:
    metrics, port = served
    exporter = JsonFileExporter(str(tmp_path / "t.log"), rate_limit=1)
    metrics.watch_exporter(exporter)
    assert exporter.write(POD_EXEC)
    assert not exporter.write(POD_EXEC)
    exporter.flush()
    got = scrape(port)
    assert got["tetragon_events_exported_total"][()] == 1
    assert got["tetragon_events_exported_bytes_total"][()] == (tmp_path / "t.log").stat().st_size
    assert got["tetragon_events_last_exported_timestamp"][()] == 1704164645
    assert got["tetragon_export_ratelimit_events_dropped_total"][()] == 1
    exporter.close()


def test_dedicated_registry() -> None:
    metrics = AgentMetrics(process_collectors=False)
    metrics.inc("tetragon_msg_op_total", ("5",))
    assert metrics.registry is not REGISTRY
    assert REGISTRY.get_sample_value("tetragon_msg_op_total", {"msg_op": "5"}) is None
    assert metrics.registry.get_sample_value("tetragon_msg_op_total", {"msg_op": "5"}) == 1


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(MetricsError, match=f"port {port} is already in use"):
            AgentMetrics(process_collectors=False).serve(f"127.0.0.1:{port}")


def test_address_parsing() -> None:
    assert split_address(":2112") == ("0.0.0.0", 2112)
    assert split_address("localhost:2112") == ("localhost", 2112)
    assert split_address("[::1]:9") == ("::1", 9)
    for bad in ("2112", "host:", "host:http", ":70000"):
        with pytest.raises(MetricsError, match="invalid metrics server address"):
            split_address(bad)


def test_unknown_metric_and_wrong_labels() -> None:
    metrics = AgentMetrics(process_collectors=False)
    with pytest.raises(KeyError):
        metrics.inc("tetragon_nope_total")
    with pytest.raises(ValueError, match="takes labels"):
        metrics.inc("tetragon_msg_op_total", ())


def test_register_source_by_short_names(served: tuple[AgentMetrics, int]) -> None:
    metrics, port = served
    calls = {"n": 0}

    def values() -> dict[str, Any]:
        calls["n"] += 1
        return {
            "process_cache_size": 5,
            "process_cache_capacity": 65536,
            "process_cache_evictions": 2,
            "process_cache_misses": {"get": 3, "remove": 1},
            "ringbuf_received": 100 * calls["n"],
            "ringbuf_lost": 4,
            "bpf_missed": {"5": 1, "7": {"EAGAIN": 2}},
            "tetragon_observer_ringbuf_errors_total": 6,
        }

    metrics.register_source(values)
    got = scrape(port)
    assert got["tetragon_process_cache_size"][()] == 5
    assert got["tetragon_process_cache_capacity"][()] == 65536
    assert got["tetragon_process_cache_evictions_total"][()] == 2
    assert got["tetragon_process_cache_misses_total"] == {
        (("operation", "get"),): 3,
        (("operation", "remove"),): 1,
    }
    assert got["tetragon_observer_ringbuf_events_received_total"][()] == 100
    assert got["tetragon_observer_ringbuf_events_lost_total"][()] == 4
    assert got["tetragon_observer_ringbuf_errors_total"][()] == 6
    assert got["tetragon_bpf_missed_events_total"] == {
        (("error", "unknown"), ("msg_op", "5")): 1,
        (("error", "EAGAIN"), ("msg_op", "7")): 2,
    }
    assert scrape(port)["tetragon_observer_ringbuf_events_received_total"][()] == 200  # evaluated per scrape
    assert metrics.value("tetragon_process_cache_size") == 5


def test_handler_errors_and_shutdown() -> None:
    metrics = AgentMetrics(process_collectors=False)
    metrics.record_handler_error("13", "unknown_opcode")
    assert metrics.value("tetragon_handler_errors_total", ("13", "unknown_opcode")) == 1
    _, port = metrics.serve("127.0.0.1:0")
    metrics.shutdown()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    assert issubclass(MetricsError, OSError)


def test_map_errors_come_from_the_kernel_counters() -> None:
    """tetragon_map_errors_{update,delete}_total{map="execve_map"} are the base sensor's per-CPU
    counts of failed tg_execve_map updates and deletes (summed by BaseSensor.stats)."""
    from tetragon.abi import events_h as L
    from tetragon.metrics.sources import ring_values

    class Sensor:
        reader = None

        def stats(self) -> dict[int, int]:
            return {L.STAT_EXECVE_MAP_UPDATE_ERR: 3, L.STAT_EXECVE_MAP_DELETE_ERR: 7}

    metrics = AgentMetrics(process_collectors=False)
    metrics.register_source(lambda: ring_values(Sensor()))  # type: ignore[arg-type]
    assert metrics.value("tetragon_map_errors_update_total", ("execve_map",)) == 3
    assert metrics.value("tetragon_map_errors_delete_total", ("execve_map",)) == 7
