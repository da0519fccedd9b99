"""Prometheus metrics with Tetragon's names and labels (`--metrics-server`, `--metrics-label-filter`).

Every metric lives in one collector on a dedicated CollectorRegistry. A metric gets its values in
one of two ways:

* pushed: the agent calls `record_*`/`inc`/`set` as things happen (cheap dict updates under a lock);
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
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

Labels = tuple[str, ...]
# (event key, binary, namespace, workload, pod, node name, event has no process info)
EventKey = tuple[str, str, str, str, str, str, bool]
Source = Callable[[], float | Mapping[Labels, float]]

PROCESS_LABELS = ("namespace", "workload", "pod", "binary", "node_name")
DEFAULT_LABEL_FILTER = "namespace,workload,pod,binary"

COUNTER, GAUGE = "counter", "gauge"
# name -> (type, help, label names); events_total's process labels are chosen at construction.
METRICS: dict[str, tuple[str, str, Labels]] = {
    "tetragon_events_total": (COUNTER, "The total number of Tetragon events", ("type",)),
    "tetragon_events_missing_process_info_total": (COUNTER, "Number of events missing process info.", ()),
    "tetragon_policy_events_total": (COUNTER, "Policy events calls observed.", ("policy", "hook")),
    "tetragon_tracingpolicy_loaded": (GAUGE, "The number of loaded tracing policy by state.", ("state",)),
    "tetragon_tracingpolicy_kernel_memory_bytes": (
        GAUGE,
        "The amount of kernel memory in bytes used by policy's sensors non-shared BPF maps (memlock).",
        ("policy", "policy_namespace"),
    ),
    "tetragon_events_exported_total": (COUNTER, "Total number of events exported", ()),
    "tetragon_events_exported_bytes_total": (COUNTER, "Number of bytes exported for events", ()),
    "tetragon_events_last_exported_timestamp": (
        GAUGE,
        "Timestamp of the most recent event to be exported",
        (),
    ),
    "tetragon_events_export_failed_total": (COUNTER, "Total number of events that failed to export", ()),
    "tetragon_export_ratelimit_events_dropped_total": (
        COUNTER,
        "Number of events dropped on export due to rate limiting",
        (),
    ),
    "tetragon_process_cache_size": (GAUGE, "The size of the process cache", ()),
    "tetragon_process_cache_capacity": (GAUGE, "The capacity of the process cache.", ()),
    "tetragon_process_cache_evictions_total": (COUNTER, "Number of process cache LRU evictions.", ()),
    "tetragon_process_cache_misses_total": (COUNTER, "Number of process cache misses.", ("operation",)),
    "tetragon_observer_ringbuf_events_received_total": (
        COUNTER,
        "Number of perf events Tetragon ring buffer received.",
        (),
    ),
    "tetragon_observer_ringbuf_events_lost_total": (
        COUNTER,
        "Number of perf events Tetragon ring buffer lost.",
        (),
    ),
    "tetragon_observer_ringbuf_errors_total": (
        COUNTER,
        "Number of errors when reading Tetragon ring buffer.",
        (),
    ),
    "tetragon_bpf_missed_events_total": (
        COUNTER,
        "Number of Tetragon perf events that are failed to be sent from the kernel.",
        ("msg_op", "error"),
    ),
    "tetragon_msg_op_total": (
        COUNTER,
        "The total number of times we encounter a given message opcode",
        ("msg_op",),
    ),
    "tetragon_handler_errors_total": (
        COUNTER,
        "The total number of event handler errors. For internal use only.",
        ("opcode", "error"),
    ),
    "tetragon_build_info": (
        GAUGE,
        "Build information about tetragon",
        ("commit", "go_version", "modified", "time"),
    ),
}


# Short names accepted from register_source() callables (full metric names are accepted too).
SOURCE_KEYS: dict[str, str] = {
    "process_cache_size": "tetragon_process_cache_size",
    "process_cache_capacity": "tetragon_process_cache_capacity",
    "process_cache_evictions": "tetragon_process_cache_evictions_total",
    "process_cache_misses": "tetragon_process_cache_misses_total",
    "ringbuf_received": "tetragon_observer_ringbuf_events_received_total",
    "ringbuf_lost": "tetragon_observer_ringbuf_events_lost_total",
    "ringbuf_errors": "tetragon_observer_ringbuf_errors_total",
    "bpf_missed": "tetragon_bpf_missed_events_total",
    "msg_op": "tetragon_msg_op_total",
    "missing_process_info": "tetragon_events_missing_process_info_total",
    "tracingpolicy_loaded": "tetragon_tracingpolicy_loaded",
    "tracingpolicy_memory": "tetragon_tracingpolicy_kernel_memory_bytes",
}


class MetricsError(OSError):
    """The metrics server cannot start; the message names the address and the reason."""


class ExporterCounters(Protocol):
    exported_events: int
    exported_bytes: int
    last_exported_timestamp: float
    failed_events: int

    @property
    def ratelimit_dropped(self) -> int: ...


def parse_label_filter(text: str | Iterable[str]) -> tuple[str, ...]:
    """`--metrics-label-filter`: the enabled process labels, in Tetragon's order; unknown ones are
    ignored with a warning."""
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text)]
    unknown = [s for s in items if s and s not in PROCESS_LABELS]
    if unknown:
        log.warning("metrics: ignoring unknown labels in --metrics-label-filter: %s", ", ".join(unknown))
    return tuple(label for label in PROCESS_LABELS if label in items)


def split_address(address: str) -> tuple[str, int]:
    """`:2112` -> ("0.0.0.0", 2112); `localhost:2112`; `[::1]:2112`."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise MetricsError(f"invalid metrics server address {address!r}: expected [host]:port")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


class _Collector(Collector):
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
        self.registry = CollectorRegistry(auto_describe=False)
        self.enable_event_metrics = enable_event_metrics
        self.process_labels = parse_label_filter(label_filter)
        self._label_names = {name: spec[2] for name, spec in METRICS.items()}
        self._label_names["tetragon_events_total"] = ("type", *self.process_labels)
        self._label_names["tetragon_policy_events_total"] = ("policy", "hook", *self.process_labels)
        self._lock = threading.Lock()
        self._values: dict[str, dict[Labels, float]] = {name: {} for name in METRICS}
        self._sources: dict[str, Source] = {}
        self._bulk_sources: list[Callable[[], Mapping[str, Any]]] = []
        info = {"commit": "", "go_version": f"python{platform.python_version()}", "modified": "", "time": ""}
        info.update(build_info or {})
        self._values["tetragon_build_info"][tuple(info[k] for k in METRICS["tetragon_build_info"][2])] = 1.0
        # (event key, binary, namespace, workload, pod, node) -> label values of events_total
        self._event_labels: dict[tuple[str, str, str, str, str, str], Labels] = {}
        self.registry.register(_Collector(self))
        if process_collectors:
            ProcessCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

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
        snapshot = self._snapshot()
        for name, (kind, help_text, _) in METRICS.items():
            if name not in snapshot:
                continue
            labels = self._label_names[name]
            family: CounterMetricFamily | GaugeMetricFamily
            if kind == COUNTER:
                family = CounterMetricFamily(name, help_text, labels=labels)
            else:
                family = GaugeMetricFamily(name, help_text, labels=labels)
            values = snapshot[name]
            if not labels and not values:
                values = {(): 0.0}
            try:
                for label_values, value in values.items():
                    family.add_metric(list(label_values), value)
            except Exception:
                log.exception("metrics: %s has values that do not fit its labels %s", name, labels)
                continue
            yield family

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

    def record_event(self, event: Mapping[str, Any]) -> None:
        """Count one event in tetragon_events_total (and missing process info)."""
        if self.enable_event_metrics:
            self.add_event_counts({self.event_key(event): 1})

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

    def record_policy_event(self, policy: str, hook: str, event: Mapping[str, Any], count: int = 1) -> None:
        """tetragon_policy_events_total for one policy event (hook as Tetragon names it, e.g. kprobe:X)."""
        if not self.enable_event_metrics:
            return
        raw = self.event_key(event)[:6]
        labels = self._event_labels.get(raw)  # type: ignore[call-overload]
        if labels is None:
            labels = self._event_label_values(raw)  # type: ignore[arg-type]
        key = (policy, hook, *labels[1:])
        values = self._values["tetragon_policy_events_total"]
        with self._lock:
            values[key] = values.get(key, 0.0) + count

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

    def record_missing_process_info(self, count: int = 1) -> None:
        self.inc("tetragon_events_missing_process_info_total", (), count)

    def record_msg_op(self, msg_op: int | str) -> None:
        self.inc("tetragon_msg_op_total", (str(msg_op),))

    def record_handler_error(self, opcode: int | str, error: str) -> None:
        """`error`: event_handler_failed, perf_empty_data or unknown_opcode."""
        self.inc("tetragon_handler_errors_total", (str(opcode), error))

    handler_error = record_handler_error

    def record_bpf_missed(self, msg_op: int | str, error: str, count: int = 1) -> None:
        """`error`: E2BIG EAGAIN EBUSY EINVAL ENOENT ENOSPC unknown."""
        self.inc("tetragon_bpf_missed_events_total", (str(msg_op), error), count)

    def record_process_cache_eviction(self, count: int = 1) -> None:
        self.inc("tetragon_process_cache_evictions_total", (), count)

    def record_process_cache_miss(self, operation: str) -> None:
        """`operation`: get or remove."""
        self.inc("tetragon_process_cache_misses_total", (operation,))

    def watch_exporter(self, exporter: ExporterCounters) -> None:
        """Read the JSON exporter's counters at scrape time."""
        self.set_source("tetragon_events_exported_total", lambda: exporter.exported_events)
        self.set_source("tetragon_events_exported_bytes_total", lambda: exporter.exported_bytes)
        self.set_source("tetragon_events_last_exported_timestamp", lambda: exporter.last_exported_timestamp)
        self.set_source("tetragon_events_export_failed_total", lambda: exporter.failed_events)
        self.set_source("tetragon_export_ratelimit_events_dropped_total", lambda: exporter.ratelimit_dropped)

    # -- serving ------------------------------------------------------------------------------

    def serve(self, address: str) -> tuple[str, int]:
        """Serve /metrics on `address` (`--metrics-server`) from a daemon thread; returns the bound
        (host, port). Raises MetricsError when the address cannot be used."""
        if self._server is not None:
            raise MetricsError("the metrics server is already running")
        host, port = split_address(address)
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise MetricsError(f"cannot serve metrics on {address}: port {port} is already in use") from e
            raise MetricsError(f"cannot serve metrics on {address}: {e.strerror or e}") from e
        self._server, self._thread = server, thread
        bound = server.server_address
        return str(bound[0]), int(bound[1])

    def close(self) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None
