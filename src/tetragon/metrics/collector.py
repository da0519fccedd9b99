"""AgentMetrics: the values of Tetragon's metrics (tetragon.metrics.families), collected on a
dedicated CollectorRegistry and served over HTTP (`--metrics-server`).

A metric gets its values in one of two ways:

* pushed: the agent calls `inc`/`set`/`add_event_counts` as things happen (cheap dict updates under
  a lock);
* pulled: `set_source(name, fn)` installs a callable run at scrape time, returning a number (for a
  metric without labels) or a mapping of label-value tuples to numbers; `register_source(fn)` one
  returning several metrics at once by short name (`SOURCE_KEYS`). A source replaces pushed values.
  Use it for what lives elsewhere: process cache size, ring buffer counters read from BPF maps, the
  JSON exporter's counters (`watch_exporter`).
"""

from __future__ import annotations

import errno
import logging
import platform
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

from tetragon.metrics.bpfstats import BpfProgramStats, map_occupancy
from tetragon.metrics.families import (
    DEFAULT_LABEL_FILTER,
    METRICS,
    SOURCE_KEYS,
    EventKey,
    Labels,
    families,
    label_names,
    parse_label_filter,
)

log = logging.getLogger(__name__)

Source = Callable[[], float | Mapping[Labels, float]]


class MetricsError(OSError):
    """The metrics server cannot start; the message names the address and the reason."""


class ExporterCounters(Protocol):
    exported_events: int
    exported_bytes: int
    last_exported_timestamp: float
    failed_events: int

    @property
    def ratelimit_dropped(self) -> int: ...


def split_address(address: str) -> tuple[str, int]:
    """`:2112` -> ("0.0.0.0", 2112); `localhost:2112`; `[::1]:2112`."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise MetricsError(f"invalid metrics server address {address!r}: expected [host]:port")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


class _Collector:
    """The agent's families for a prometheus_client registry (which calls `collect` at each scrape)."""

    def __init__(self, owner: AgentMetrics) -> None:
        self._owner = owner

    def collect(self) -> Iterator[Metric]:
        return self._owner._families()


class AgentMetrics:
    def __init__(
        self,
        *,
        label_filter: str | Iterable[str] = DEFAULT_LABEL_FILTER,
        enable_event_metrics: bool = True,
        build_info: Mapping[str, str] | None = None,
        process_collectors: bool = True,
    ) -> None:
        self._registry: CollectorRegistry | None = None  # made at the first scrape or serve()
        self._process_collectors = process_collectors
        self.enable_event_metrics = enable_event_metrics
        self.process_labels = parse_label_filter(label_filter)
        self._label_names = label_names(self.process_labels)
        self._lock = threading.Lock()
        self._values: dict[str, dict[Labels, float]] = {name: {} for name in METRICS}
        self._sources: dict[str, Source] = {}
        self._bulk_sources: list[Callable[[], Mapping[str, Any]]] = []
        info = {"commit": "", "go_version": f"python{platform.python_version()}", "modified": "", "time": ""}
        info.update(build_info or {})
        self._values["tetragon_build_info"][tuple(info[k] for k in METRICS["tetragon_build_info"][2])] = 1.0
        # (event key, binary, namespace, workload, pod, node) -> label values of events_total
        self._event_labels: dict[tuple[str, str, str, str, str, str], Labels] = {}
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._bpf_programs: BpfProgramStats | None = None

    @property
    def registry(self) -> CollectorRegistry:
        """The prometheus_client registry, made on first use: an agent without --metrics-server
        counts in plain dicts and never imports prometheus_client (~13 MB of RSS with what it loads)."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector

            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Collector(self))  # type: ignore[arg-type]
            if self._process_collectors:
                ProcessCollector(registry=registry)
                GCCollector(registry=registry)
            self._registry = registry
        return self._registry

    # -- generic ------------------------------------------------------------------------------

    def _check(self, name: str, labels: Labels) -> dict[Labels, float]:
        if name not in METRICS:
            raise KeyError(f"unknown metric {name!r}")
        if len(labels) != len(self._label_names[name]):
            raise ValueError(f"{name} takes labels {self._label_names[name]}, got {labels}")
        return self._values[name]

    def inc(self, name: str, labels: Labels = (), amount: float = 1.0) -> None:
        values = self._check(name, labels)
        with self._lock:
            values[labels] = values.get(labels, 0.0) + amount

    def set(self, name: str, value: float, labels: Labels = ()) -> None:
        values = self._check(name, labels)
        with self._lock:
            values[labels] = float(value)

    def set_source(self, name: str, source: Source | None) -> None:
        """Compute `name` at scrape time from `source` (None removes it)."""
        if name not in METRICS:
            raise KeyError(f"unknown metric {name!r}")
        if source is None:
            self._sources.pop(name, None)
        else:
            self._sources[name] = source

    def register_source(self, source: Callable[[], Mapping[str, Any]]) -> None:
        """A callable run at each scrape returning {short or full metric name: value}. Values: a
        number; for labelled metrics a mapping of label value(s) to numbers, where a plain key is the
        first label. `bpf_missed` also takes {msg_op: {error: n}}, and {msg_op: n} (error "unknown")."""
        self._bulk_sources.append(source)

    def value(self, name: str, labels: Labels = ()) -> float:
        """The current value (pulled through the sources when there are any); 0 when unset."""
        return self._snapshot().get(name, {}).get(labels, 0.0)

    def _current(self, name: str) -> dict[Labels, float]:
        source = self._sources.get(name)
        if source is None:
            with self._lock:
                return dict(self._values[name])
        return self._normalize(name, source())

    def _normalize(self, name: str, result: Any) -> dict[Labels, float]:
        if not isinstance(result, Mapping):
            return {(): float(result)}
        width = len(self._label_names[name])
        out: dict[Labels, float] = {}
        for key, value in result.items():
            labels = tuple(str(v) for v in key) if isinstance(key, tuple) else (str(key),)
            if isinstance(value, Mapping):  # {first label: {second label: n}}
                for sub, n in value.items():
                    out[(*labels, str(sub))] = float(n)
            elif len(labels) < width:  # bpf_missed given per msg_op only
                out[(*labels, *(["unknown"] * (width - len(labels))))] = float(value)
            else:
                out[labels] = float(value)
        return out

    def _snapshot(self) -> dict[str, dict[Labels, float]]:
        pulled: dict[str, dict[Labels, float]] = {}
        for bulk in self._bulk_sources:
            try:
                for key, result in bulk().items():
                    name = SOURCE_KEYS.get(key, key)
                    if name not in METRICS:
                        log.warning("metrics: source returned unknown metric %r", key)
                        continue
                    pulled[name] = self._normalize(name, result)
            except Exception:  # a broken source must not break the whole scrape
                log.exception("metrics: a metrics source failed")
        # No user-space queue sits between the ring buffer and the handlers: what the ring delivers,
        # the "queue" received, and it never loses anything.
        ring = pulled.get("tetragon_observer_ringbuf_events_received_total")
        if ring is not None:
            pulled.setdefault("tetragon_observer_ringbuf_queue_events_received_total", ring)
        out: dict[str, dict[Labels, float]] = {}
        for name in METRICS:
            if name in pulled and name not in self._sources:
                out[name] = pulled[name]
                continue
            try:
                out[name] = self._current(name)
            except Exception:
                log.exception("metrics: computing %s failed", name)
        return out

    def _families(self) -> Iterator[Metric]:
        return families(self._snapshot(), self._label_names)

    # -- recording ----------------------------------------------------------------------------

    def event_key(self, event: Mapping[str, Any]) -> EventKey:
        """What tetragon_events_total (and the missing-process-info counter) counts `event` under.

        Cheap and lock-free, so a pipeline can count events per batch and hand the counts to
        `add_event_counts` once.
        """
        key = next(iter(event))
        body = event[key]
        proc = body.get("process") if isinstance(body, dict) else None
        node = event.get("node_name", "")
        if proc is None:
            return (key, "", "", "", "", node, True)
        pod = proc.get("pod")
        if pod is None:
            return (key, proc.get("binary", ""), "", "", "", node, False)
        return (
            key,
            proc.get("binary", ""),
            pod.get("namespace", ""),
            pod.get("workload", ""),
            pod.get("name", ""),
            node,
            False,
        )

    def add_event_counts(self, counts: Mapping[EventKey, int]) -> None:
        """Add per-key event counts (from `event_key`) to tetragon_events_total, under one lock."""
        if not self.enable_event_metrics or not counts:
            return
        values = self._values["tetragon_events_total"]
        missing = self._values["tetragon_events_missing_process_info_total"]
        with self._lock:
            for key, n in counts.items():
                if key[6]:
                    missing[()] = missing.get((), 0.0) + n
                raw = key[:6]
                labels = self._event_labels.get(raw)
                if labels is None:
                    labels = self._event_label_values(raw)  # type: ignore[arg-type]
                values[labels] = values.get(labels, 0.0) + n

    def _event_label_values(self, raw: tuple[str, str, str, str, str, str]) -> Labels:
        key, binary, namespace, workload, pod, node = raw
        by_name = {
            "namespace": namespace,
            "workload": workload,
            "pod": pod,
            "binary": binary,
            "node_name": node,
        }
        labels = (key.upper(), *(by_name[name] for name in self.process_labels))
        if len(self._event_labels) >= 65536:  # bound the lookup cache, not the metric
            self._event_labels.clear()
        self._event_labels[raw] = labels
        return labels

    def add_policy_event_counts(self, counts: Mapping[tuple[tuple[str, str], EventKey], int]) -> None:
        """Add per-((policy, hook), event key) counts to tetragon_policy_events_total, under one lock
        (the per-batch form of record_policy_event; the events themselves go to add_event_counts)."""
        if not self.enable_event_metrics or not counts:
            return
        values = self._values["tetragon_policy_events_total"]
        resolved = []
        for (policy_hook, key), n in counts.items():
            raw = key[:6]
            labels = self._event_labels.get(raw)  # type: ignore[call-overload]
            if labels is None:
                labels = self._event_label_values(raw)  # type: ignore[arg-type]
            resolved.append(((*policy_hook, *labels[1:]), n))
        with self._lock:
            for labels, n in resolved:
                values[labels] = values.get(labels, 0.0) + n

    def record_handler_error(self, opcode: int | str, error: str) -> None:
        """`error`: event_handler_failed, perf_empty_data or unknown_opcode."""
        self.inc("tetragon_handler_errors_total", (str(opcode), error))

    def watch_exporter(self, exporter: ExporterCounters) -> None:
        """Read the JSON exporter's counters at scrape time."""
        self.set_source("tetragon_events_exported_total", lambda: exporter.exported_events)
        self.set_source("tetragon_events_exported_bytes_total", lambda: exporter.exported_bytes)
        self.set_source("tetragon_events_last_exported_timestamp", lambda: exporter.last_exported_timestamp)
        self.set_source("tetragon_events_export_failed_total", lambda: exporter.failed_events)
        self.set_source("tetragon_export_ratelimit_events_dropped_total", lambda: exporter.ratelimit_dropped)

    def watch_event_cache(self, stats: Callable[[], tuple[int, Any]]) -> None:
        """The pod event cache's (entries, EventCacheStats) at scrape time; it only holds pod info."""

        def values() -> Mapping[str, Any]:
            entries, st = stats()
            return {
                "tetragon_event_cache_entries": entries,
                "tetragon_event_cache_inserts_total": st.inserts,
                "tetragon_event_cache_fetch_retries_total": {"pod_info": st.fetch_retries},
                "tetragon_event_cache_fetch_failures_total": {
                    ("pod_info", kind): n for kind, n in st.failures_by_type.items()
                },
            }

        self.register_source(values)

    def watch_bpf_programs(self, programs: BpfProgramStats) -> None:
        """Per-policy BPF run time, runs and recursion misses, and the execve map's occupancy, at scrape
        time (metrics.bpfstats)."""

        def values() -> Mapping[str, Any]:
            totals = programs.totals()
            seconds: dict[Labels, float] = {}
            runs: dict[Labels, float] = {}
            missed: dict[Labels, float] = {}
            for (policy, namespace, sensor, section), (sec, cnt, miss) in totals.items():
                key = (policy, namespace, sensor, "", section)
                seconds[key], runs[key] = sec, cnt
                missed[(policy, "")] = missed.get((policy, ""), 0.0) + miss
            occupancy = map_occupancy()
            return {
                "tetragon_map_entries": {name: n for name, (n, _) in occupancy.items()},
                "tetragon_map_capacity": {name: cap for name, (_, cap) in occupancy.items()},
                "tetragon_overhead_program_seconds_total": seconds,
                "tetragon_overhead_program_runs_total": runs,
                "tetragon_missed_prog_probes_total": missed,
            }

        self._bpf_programs = programs
        self.register_source(values)

    # -- serving ------------------------------------------------------------------------------

    def serve(self, address: str) -> tuple[str, int]:
        """Serve /metrics on `address` (`--metrics-server`) from a daemon thread; returns the bound
        (host, port). Raises MetricsError when the address cannot be used."""
        if self._server is not None:
            raise MetricsError("the metrics server is already running")
        host, port = split_address(address)
        try:
            from prometheus_client import start_http_server

            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise MetricsError(f"cannot serve metrics on {address}: port {port} is already in use") from e
            raise MetricsError(f"cannot serve metrics on {address}: {e.strerror or e}") from e
        self._server, self._thread = server, thread
        bound = server.server_address
        return str(bound[0]), int(bound[1])

    def shutdown(self) -> None:
        programs, self._bpf_programs = self._bpf_programs, None
        if programs is not None:
            programs.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None
