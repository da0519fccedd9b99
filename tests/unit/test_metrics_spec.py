"""Every metric family the agent declares is one Tetragon documents (tests/data/tetragon_metrics.txt),
and the per-policy BPF program counters are attributed by the maps each program uses."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import generate_latest

from tetragon.k8s.eventcache import EventCacheStats
from tetragon.metrics import AgentMetrics
from tetragon.metrics.bpfstats import BASE_POLICY, ProgramStats, per_policy
from tetragon.metrics.families import METRICS

DATA = Path(__file__).resolve().parents[1] / "data"
# exported before the list; and per-policy kernel losses, for which Tetragon has no family
NOT_IN_SPEC = {"tetragon_events_export_failed_total", "tetragon_policy_events_lost_total"}


def spec_names() -> set[str]:
    lines = (DATA / "tetragon_metrics.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_declared_families_are_tetragons() -> None:
    assert set(METRICS) - NOT_IN_SPEC <= spec_names(), set(METRICS) - NOT_IN_SPEC - spec_names()


def test_event_cache_and_queue_families_scrape() -> None:
    metrics = AgentMetrics(process_collectors=False)
    metrics.register_source(lambda: {"ringbuf_received": 7})
    stats = (
        3,
        EventCacheStats(inserts=5, fetch_retries=2, fetch_failures=1, failures_by_type={"PROCESS_KPROBE": 1}),
    )
    metrics.watch_event_cache(lambda: stats)
    text = generate_latest(metrics.registry).decode()
    assert "tetragon_event_cache_entries 3.0" in text
    assert "tetragon_event_cache_inserts_total 5.0" in text
    assert 'tetragon_event_cache_fetch_retries_total{entry_type="pod_info"} 2.0' in text
    failures = 'tetragon_event_cache_fetch_failures_total{entry_type="pod_info",event_type="PROCESS_KPROBE"}'
    assert f"{failures} 1.0" in text
    assert "tetragon_observer_ringbuf_queue_events_received_total 7.0" in text
    assert "# TYPE tetragon_map_errors_update_total counter" in text


def test_programs_belong_to_the_policy_whose_maps_they_use(monkeypatch: pytest.MonkeyPatch) -> None:
    import tetragon.metrics.bpfstats as bpfstats

    class Sensor:
        policy_maps = {"policy_conf": 100}

    monkeypatch.setattr(bpfstats, "map_id", lambda fd: {100: 42}.get(fd))
    programs = [
        ProgramStats(1, "gen_kprobe", 2_000_000_000, 10, 1, frozenset({7, 42})),
        ProgramStats(2, "gen_kprobe", 1_000_000_000, 5, 0, frozenset({42})),
        ProgramStats(3, "event_execve", 500_000_000, 3, 0, frozenset({7})),
    ]
    totals = per_policy(programs, [("p", "ns", Sensor())])
    assert totals == {
        ("p", "ns", "generic_sensor", "gen_kprobe"): [3.0, 15.0, 1.0],
        (BASE_POLICY, "", "base_sensor", "event_execve"): [0.5, 3.0, 0.0],
    }
