"""Tetragon's metric families: names, types, help texts and labels, and how a snapshot of values
becomes Prometheus families (the collection side is tetragon.metrics.collector)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)

Labels = tuple[str, ...]
# (event key, binary, namespace, workload, pod, node name, event has no process info)
EventKey = tuple[str, str, str, str, str, str, bool]

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
    # not in Tetragon (its one ring has only tetragon_bpf_missed_events_total, per record op): the policy
    # events each policy lost in the kernel, its hooks' GSTAT_LOST summed (bpf/include/generic/record.h)
    "tetragon_policy_events_lost_total": (
        COUNTER,
        "Policy events lost in the kernel: no room in the policy ring buffer (or in a return probe's stash).",
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
    "tetragon_observer_ringbuf_queue_events_received_total": (
        COUNTER,
        "Number of ring buffer events received by the user-space queue.",
        (),
    ),
    "tetragon_observer_ringbuf_queue_events_lost_total": (
        COUNTER,
        "Number of ring buffer events lost by the user-space queue.",
        (),
    ),
    "tetragon_map_errors_update_total": (COUNTER, "The number of failed updates per map.", ("map",)),
    "tetragon_map_errors_delete_total": (COUNTER, "The number of failed deletes per map.", ("map",)),
    "tetragon_map_entries": (GAUGE, "The total number of in-use entries per map.", ("map",)),
    "tetragon_map_capacity": (GAUGE, "Capacity of a BPF map. Expected to be constant.", ("map",)),
    "tetragon_event_cache_entries": (GAUGE, "The number of entries in the event cache.", ()),
    "tetragon_event_cache_inserts_total": (COUNTER, "Number of inserts to the event cache.", ()),
    "tetragon_event_cache_errors_total": (
        COUNTER,
        "The total of errors encountered while fetching process exec information from the cache.",
        ("error", "event_type"),
    ),
    "tetragon_event_cache_fetch_retries_total": (
        COUNTER,
        "Number of retries when fetching info from the event cache.",
        ("entry_type",),
    ),
    "tetragon_event_cache_fetch_failures_total": (
        COUNTER,
        "Number of failed fetches from the event cache. These won't be retried anymore.",
        ("entry_type", "event_type"),
    ),
    "tetragon_overhead_program_runs_total": (
        COUNTER,
        "The total number of times the BPF program was executed.",
        ("policy", "policy_namespace", "sensor", "attach", "section"),
    ),
    "tetragon_overhead_program_seconds_total": (
        COUNTER,
        "The total time of BPF program execution in seconds.",
        ("policy", "policy_namespace", "sensor", "attach", "section"),
    ),
    "tetragon_missed_prog_probes_total": (
        COUNTER,
        "The total number of Tetragon probe missed by program.",
        ("policy", "attach"),
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
    "policy_events_lost": "tetragon_policy_events_lost_total",
}


def parse_label_filter(text: str | Iterable[str]) -> tuple[str, ...]:
    """`--metrics-label-filter`: the enabled process labels, in Tetragon's order; unknown ones are
    ignored with a warning."""
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text)]
    unknown = [s for s in items if s and s not in PROCESS_LABELS]
    if unknown:
        log.warning("metrics: ignoring unknown labels in --metrics-label-filter: %s", ", ".join(unknown))
    return tuple(label for label in PROCESS_LABELS if label in items)


def label_names(process_labels: tuple[str, ...]) -> dict[str, Labels]:
    """Each metric's label names; the event counters also carry the enabled process labels."""
    names = {name: spec[2] for name, spec in METRICS.items()}
    names["tetragon_events_total"] = ("type", *process_labels)
    names["tetragon_policy_events_total"] = ("policy", "hook", *process_labels)
    return names


def families(snapshot: Mapping[str, Mapping[Labels, float]], names: Mapping[str, Labels]) -> Iterator[Metric]:
    """The Prometheus families of `snapshot` (metric name -> label values -> value), in METRICS order."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    for name, (kind, help_text, _) in METRICS.items():
        if name not in snapshot:
            continue
        labels = names[name]
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
