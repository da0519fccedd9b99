"""Wiring: configuration → base sensor → decode → process cache → sinks (JSON file, gRPC, metrics).

One pipeline thread reads the ring buffer, turns records into Tetragon JSON event dicts and hands
each to the exporter (directly, buffered, flushed once per drained batch) and to the event bus
(only when a gRPC client listens). The gRPC and metrics servers run in their own threads.

Policy (generic) records take a faster route when no gRPC client listens and the exporter has no
filter, redaction or field filter: the event is built with the process, parent and ancestors as
orjson fragments cached on their cache entries, serialized once and handed to the exporter as a
line (the same bytes as the dict route, tests/unit/test_generic_fastpath.py). Per-hook plans
(events.generic.HookPlan) hold the argument converters; policy-event metrics are counted per batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from tetragon import __version__
from tetragon.abi import events_h as L
from tetragon.events.bus import EventBus
from tetragon.events.decode import decode_clone, decode_exec, decode_exit
from tetragon.events.generic import HookPlan, decode_header
from tetragon.events.genline import HookLines
from tetragon.process import procfs
from tetragon.process.cache import ProcessCache, ProcessEntry, with_tid
from tetragon.process.events import ProcessEvents, ProcessOptions
from tetragon.process.model import Clock, node_name
from tetragon.sensors.base import BaseSensor
from tetragon.timefmt import WallStamps, format_timestamp

if TYPE_CHECKING:  # imported where used: a config error must not wait for grpc to import
    from tetragon.api.access import ServerOptions
    from tetragon.api.server import GrpcServer
    from tetragon.export.jsonfile import JsonFileExporter
    from tetragon.metrics import AgentMetrics
    from tetragon.sensors.manager import PolicyManager

log = logging.getLogger("tetragon")

Event = dict[str, Any]
DEFAULT_BTF = "/sys/kernel/btf/vmlinux"
_dumps = orjson.dumps
_APPEND_NEWLINE = orjson.OPT_APPEND_NEWLINE
_GENERIC_OPS = frozenset((L.MSG_OP_GENERIC_KPROBE, L.MSG_OP_GENERIC_TRACEPOINT, L.MSG_OP_GENERIC_UPROBE))
RUN_DIR = Path("/var/run/tetragon")


class AgentError(Exception):
    """A start-up problem the user can fix; printed as one line, exit code 1."""


@dataclass
class AgentConfig:
    export_filename: str = ""
    export_file_max_size_mb: int = 10
    export_file_max_backups: int = 5
    export_file_compress: bool = False
    export_file_rotation_interval: float = 0.0
    export_file_perm: int = 0o600
    export_allowlist: str = ""
    export_denylist: str = ""
    field_filters: str = ""
    redaction_filters: str = ""
    export_rate_limit: int = -1
    server_address: str = "localhost:54321"
    metrics_server: str = ""
    metrics_label_filter: str = "namespace,workload,pod,binary"
    enable_process_cred: bool = False
    enable_process_ns: bool = False
    enable_ancestors: list[str] = field(default_factory=list)
    process_cache_size: int = 65536
    process_cache_gc_interval: float = 30.0
    rb_size: int = 0
    procfs: str = "/proc"
    btf: str = ""
    drain_interval: float = 0.05
    run_dir: str = str(RUN_DIR)
    tracing_policy: str = ""  # one policy file loaded at start (domain "static")
    tracing_policy_dir: str = "/etc/tetragon/tetragon.tp.d"  # every *.yaml / *.yml in it, sorted
    tracing_policy_max_hooks: int = 128  # per policy
    tracing_policies_max_hooks: int = 256  # all loaded policies together
    server_options: ServerOptions | None = None  # the --server-* flags but the address (None: defaults)


def _host_namespaces(proc: str) -> tuple[int, ...]:
    """Namespaces of pid 1; where those are unreadable (a sandboxed agent), the agent's own."""
    init = procfs.read_process(Path(proc), 1)
    own = procfs.read_process(Path(proc), os.getpid())
    init_ns = init.ns if init is not None else ()
    own_ns = own.ns if own is not None else ()
    if not init_ns:
        return own_ns
    return tuple(i or (own_ns[n] if n < len(own_ns) else 0) for n, i in enumerate(init_ns))


def check_privileges() -> None:
    """Root, or CAP_BPF + CAP_PERFMON + CAP_SYS_ADMIN, is needed to load and attach the sensors."""
    if os.geteuid() == 0:
        return
    need = {21: "CAP_SYS_ADMIN", 38: "CAP_PERFMON", 39: "CAP_BPF"}
    eff = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                eff = int(line.split()[1], 16)
    missing = [name for bit, name in need.items() if not eff >> bit & 1]
    if missing:
        raise AgentError(
            "tetragon needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN) to load BPF programs; missing: "
            + ", ".join(missing)
        )


def _batch_scheduling() -> None:
    """SCHED_BATCH for the agent (threads started later inherit it).

    The pipeline drains in batches on a timer, so it never needs to preempt the workload it
    watches when it wakes up; with the normal policy it does, and on an exec storm that showed as
    ~3 % of the workload's wall time (bench/sched_batch_ab.py). Under CPU pressure a batch task
    keeps its normal share.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError as exc:  # not fatal: only the overhead on the workload changes
        log.debug("cannot use SCHED_BATCH: %s", exc)


# glibc mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _tune_malloc() -> None:
    """Keep freed heap memory instead of returning it to the kernel after every batch.

    The pipeline holds about a megabyte of exported lines (orjson output, mostly > 512 bytes so
    from malloc, not pymalloc) until the batch is flushed, then frees it all; with glibc's default
    128 KiB trim threshold the heap top is given back each time and the next batch page-faults it in
    again, which cost ~2 us per event. A 32 MiB trim threshold (and 4 MiB mmap threshold, so the
    joined batch comes from the heap too) only keeps memory the agent already used.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return
    mallopt(_M_TRIM_THRESHOLD, 32 << 20)
    mallopt(_M_MMAP_THRESHOLD, 4 << 20)


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.node = node_name()
        self.bus = EventBus()
        self.clock = Clock()
        self.cache = ProcessCache(config.process_cache_size, config.process_cache_gc_interval)
        unknown = set(config.enable_ancestors) - {
            "base",
            "kprobe",
            "tracepoint",
            "uprobe",
            "lsm",
            "usdt",
            "loader",
        }
        if unknown:
            raise AgentError(f"--enable-ancestors: unknown event type(s) {', '.join(sorted(unknown))}")
        if config.enable_ancestors and "base" not in config.enable_ancestors:
            raise AgentError("--enable-ancestors: 'base' is required when other types are given")
        self.events = ProcessEvents(
            self.cache,
            ProcessOptions(
                node_name=self.node,
                enable_process_cred=config.enable_process_cred,
                enable_process_ns=config.enable_process_ns,
                enable_ancestors="base" in config.enable_ancestors,
                host_ns=_host_namespaces(config.procfs),
            ),
            self.clock,
        )
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self.sensor: BaseSensor | None = None
        self.exporter: JsonFileExporter | None = None
        self.grpc: GrpcServer | None = None
        self.metrics: AgentMetrics | None = None
        self._lost_reported = 0
        self._event_counts: dict[Any, int] = {}  # tetragon_events_total, added once per drain
        # policy events per (hook plan, exec_id) -> [(policy, hook), event key, count]: added to
        # tetragon_policy_events_total and tetragon_events_total once per drain
        self._policy_counts: dict[tuple[HookPlan, str | None], list[Any]] = {}
        self._plans: dict[tuple[int, int, int], HookPlan] = {}  # per (policy, hook, func) id
        self._plans_generation = -1  # PolicyManager.generation the plans were made under
        self._thread: tuple[int, int, ProcessEntry | None, ProcessEntry | None] | None = None
        self._ancestor_kinds = frozenset(config.enable_ancestors)
        self._stamps = WallStamps()  # `time` of line-path events, formatted per second
        self.op_counts: dict[int, int] = {
            L.MSG_OP_EXECVE: 0,
            L.MSG_OP_EXIT: 0,
            L.MSG_OP_CLONE: 0,
            L.MSG_OP_GENERIC_KPROBE: 0,
            L.MSG_OP_GENERIC_TRACEPOINT: 0,
            L.MSG_OP_GENERIC_UPROBE: 0,
        }
        self.policies: PolicyManager | None = None
        self._user_actions: Any = None  # thread pool for GetUrl / DnsLookup, made on first use

    # --- set-up -------------------------------------------------------------------------------
    def _open_exporter(self) -> None:
        cfg = self.config
        if not cfg.export_filename:
            return
        from tetragon.export.fieldfilters import parse_field_filter_lines
        from tetragon.export.filters import FilterError, parse_filter_lines
        from tetragon.export.jsonfile import ExportError, JsonFileExporter
        from tetragon.export.redaction import parse_redaction_filter_lines

        try:
            self.exporter = JsonFileExporter(
                cfg.export_filename,
                max_size_mb=cfg.export_file_max_size_mb,
                max_backups=cfg.export_file_max_backups,
                compress=cfg.export_file_compress,
                rotation_interval=cfg.export_file_rotation_interval,
                perm=cfg.export_file_perm,
                allow=parse_filter_lines(cfg.export_allowlist),
                deny=parse_filter_lines(cfg.export_denylist),
                field_filters=parse_field_filter_lines(cfg.field_filters),
                redaction=parse_redaction_filter_lines(cfg.redaction_filters),
                rate_limit=cfg.export_rate_limit,
                node_name=self.node,
            )
        except (ExportError, FilterError, ValueError) as exc:
            raise AgentError(str(exc)) from exc

    def _start_grpc(self) -> None:
        if not self.config.server_address:
            return
        from tetragon.api.server import GrpcServer, ServerStartError

        self.grpc = GrpcServer(
            self.bus,
            self.config.server_address,
            version=__version__,
            health=self.health,
            policy_handler=self.policies,
            options=self.config.server_options,
        )
        try:
            self.grpc.start()
        except ServerStartError as exc:
            raise AgentError(str(exc)) from exc

    def _start_policies(self) -> None:
        """The policy manager, then --tracing-policy (must load) and --tracing-policy-dir (each may fail)."""
        from tetragon.bpf.features import probe_features
        from tetragon.policy.errors import PolicyError
        from tetragon.sensors.manager import PolicyManager, policy_files

        sensor = self.sensor
        assert sensor is not None
        cfg = self.config
        self.policies = PolicyManager(
            sensor.shared_maps,
            probe_features(),
            btf_path=cfg.btf or None,
            max_hooks_per_policy=cfg.tracing_policy_max_hooks,
            max_hooks=cfg.tracing_policies_max_hooks,
        )
        if cfg.tracing_policy:
            try:
                text = Path(cfg.tracing_policy).read_text()
                self.policies.add(text, domain="static")
            except OSError as exc:
                raise AgentError(f"--tracing-policy {cfg.tracing_policy}: {exc.strerror}") from exc
            except PolicyError as exc:
                raise AgentError(f"--tracing-policy {cfg.tracing_policy}: {exc}") from exc
        for path in policy_files(cfg.tracing_policy_dir):
            try:
                self.policies.add(path.read_text(), domain="static")
            except (OSError, PolicyError) as exc:
                log.error("policy file %s not loaded: %s", path, exc)

    def _start_metrics(self) -> None:
        from tetragon.metrics import AgentMetrics

        self.metrics = AgentMetrics(label_filter=self.config.metrics_label_filter)
        self.metrics.register_source(self._metric_values)
        if self.exporter is not None:
            self.metrics.watch_exporter(self.exporter)
        if self.config.metrics_server:
            try:
                self.metrics.serve(self.config.metrics_server)
            except OSError as exc:
                raise AgentError(f"--metrics-server {self.config.metrics_server}: {exc}") from exc

    def _metric_values(self) -> dict[str, Any]:
        stats = self.sensor.stats() if self.sensor is not None else {}
        reader = self.sensor.reader if self.sensor is not None else None
        return {
            "process_cache_size": len(self.cache),
            "process_cache_capacity": self.cache.capacity,
            "process_cache_evictions": self.cache.evictions,
            "process_cache_misses": {"get": self.cache.misses_get, "remove": self.cache.misses_remove},
            "ringbuf_received": reader.received if reader is not None else 0,
            "ringbuf_lost": stats.get(L.STAT_EXEC_LOST, 0)
            + stats.get(L.STAT_EXIT_LOST, 0)
            + stats.get(L.STAT_CLONE_LOST, 0)
            + stats.get(L.STAT_GENERIC_LOST, 0),
            # bpf_ringbuf_output() fails with EAGAIN when the ring has no room
            "bpf_missed": {
                "5": {"EAGAIN": stats.get(L.STAT_EXEC_LOST, 0)},
                "7": {"EAGAIN": stats.get(L.STAT_EXIT_LOST, 0)},
                "23": {"EAGAIN": stats.get(L.STAT_CLONE_LOST, 0)},
                "13": {"EAGAIN": stats.get(L.STAT_GENERIC_LOST, 0)},
            },
            "msg_op": {str(op): n for op, n in self.op_counts.items()},
            "missing_process_info": self.events.missing_process_info,
            **self._policy_metric_values(),
        }

    def _policy_metric_values(self) -> dict[str, Any]:
        if self.policies is None:
            return {}
        statuses = self.policies.list()
        states: dict[str, int] = {"enabled": 0, "disabled": 0, "load_error": 0, "error": 0}
        memory: dict[tuple[str, str], int] = {}
        for st in statuses:
            state = st.state.removeprefix("TP_STATE_").lower()
            states[state] = states.get(state, 0) + 1
            memory[(st.name, st.namespace)] = st.kernel_memory_bytes
        return {"tracingpolicy_loaded": states, "tracingpolicy_memory": memory}

    def _write_info(self) -> None:
        run = Path(self.config.run_dir)
        with contextlib.suppress(OSError):
            run.mkdir(parents=True, exist_ok=True)
            (run / "tetragon-info.json").write_text(
                json.dumps({"server_address": self.config.server_address})
            )
            (run / "tetragon.pid").write_text(f"{os.getpid()}\n")

    def health(self) -> list[tuple[str, str]]:
        return [("HEALTH_STATUS_RUNNING", "running")] if self.ready.is_set() else []

    def start(self) -> None:
        """Everything up to the first drain; raises AgentError with a one-line reason."""
        cfg = self.config
        _batch_scheduling()
        _tune_malloc()
        btf = cfg.btf or DEFAULT_BTF
        if not os.access(btf, os.R_OK):
            raise AgentError(
                f"kernel BTF not found at {btf}: tetragon needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
                " (or --btf pointing to a BTF file for this kernel)"
            )
        check_privileges()
        self._open_exporter()
        self._start_metrics()
        from tetragon.bpf.libbpf import BpfError

        try:
            self.sensor = BaseSensor(cfg.rb_size, btf_path=cfg.btf or None)
        except BpfError as exc:
            raise AgentError(f"cannot load the base sensor: {exc}") from exc
        # attach first, then scan: a process started in between is seen by both, never by neither
        infos = procfs.scan(cfg.procfs)
        seeded = self.events.seed_procfs(infos)
        for info in infos:
            self.sensor.seed_process(
                info.pid, info.ppid, info.nspid, info.exe or info.binary, info.ns, info.cap_effective
            )
        log.info("process cache seeded from %s with %d processes", cfg.procfs, seeded)
        self._start_policies()
        self._start_grpc()
        self._write_info()
        self.ready.set()
        log.info(
            "tetragon %s ready: node %s, export %s, gRPC %s",
            __version__,
            self.node,
            cfg.export_filename or "off",
            cfg.server_address or "off",
        )

    # --- pipeline -----------------------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        if self.metrics is not None:
            key = self.metrics.event_key(event)
            self._event_counts[key] = self._event_counts.get(key, 0) + 1
        if self.exporter is not None:
            self.exporter.write(event)
        if self.bus.subscriber_count:
            self.bus.publish(event)

    def _handle(self, record: memoryview) -> None:
        op = record[0]
        if op in self.op_counts:
            self.op_counts[op] += 1
        try:
            if op in _GENERIC_OPS:
                self._handle_generic(record)
                return
            self._thread = None  # process records change the cache _handle_generic looks into
            if op == L.MSG_OP_EXECVE:
                self._emit(self.events.on_exec(decode_exec(record)))
            elif op == L.MSG_OP_EXIT:
                event = self.events.on_exit(decode_exit(record))
                if event is not None:
                    self._emit(event)
            elif op == L.MSG_OP_CLONE:
                self.events.on_clone(decode_clone(record))
            else:
                self._handler_error(op, "unknown_opcode")
        except Exception:
            self._handler_error(op, "event_handler_failed")
            log.exception("failed to handle a record with op %d", op)

    def _handle_generic(self, record: memoryview) -> None:
        buf = bytes(record)
        (
            _,
            _,
            size,
            ktime,
            pid,
            tid,
            policy_id,
            hook_id,
            action,
            return_action,
            selector,
            nargs,
            flags,
            func_id,
            ret,
        ) = decode_header(buf)
        policies = self.policies
        if policies is None:
            raise ValueError("policy record without a policy manager")
        if policies.generation != self._plans_generation:
            self._plans = {}  # hook infos changed: plans are rebuilt on demand
            self._plans_generation = policies.generation
        key = (policy_id, hook_id, func_id)
        plan = self._plans.get(key)
        if plan is None:
            hook = policies.hook(policy_id, hook_id, func_id)
            if hook is None:
                raise ValueError(f"record of unknown policy hook {policy_id}/{hook_id}")
            plan = self._plans[key] = HookPlan(hook)
        # the process and parent of the last thread seen; forgotten whenever a process record or
        # a cache collection could have changed them (_handle, drain_once)
        thread = self._thread
        if thread is None or thread[0] != pid or thread[1] != tid:
            entry = self.events.current(pid)
            parent = self.cache.get(entry.parent_exec_id) if entry is not None else None
            thread = self._thread = (pid, tid, entry, parent)
        else:
            entry, parent = thread[2], thread[3]
        if entry is None:
            self.events.missing_process_info += 1
        ancestors: list[ProcessEntry] | None = None
        if entry is not None and plan.ancestors_kind in self._ancestor_kinds:
            ancestors = self.cache.ancestors(entry) or None
        line = None
        exporter = self.exporter
        if (
            exporter is not None
            and exporter.takes_lines
            and ancestors is None
            and not self.bus.subscriber_count
        ):
            # only the JSON line is needed, and it is made without building the event
            lines = plan.lines
            if lines is None:
                lines = plan.lines = HookLines(plan, self.node)
            stamps = self._stamps
            line = lines.line(
                buf,
                action,
                return_action,
                flags,
                ret,
                nargs,
                size,
                entry.json_with_tid(tid) if entry is not None else None,
                parent.json() if parent is not None else None,
                stamps.stamp(ktime + self.clock.offset),
            )
            if line is not None:
                exporter.write_line(line, stamps.seconds)
        if line is None:
            self._generic_event(
                plan,
                buf,
                ktime,
                action,
                return_action,
                flags,
                ret,
                nargs,
                size,
                tid,
                entry,
                parent,
                ancestors,
            )
        if self.metrics is not None:
            # counted per batch under (hook, process); the metrics' event key is made once per batch
            mkey = (plan, entry.exec_id if entry is not None else None)
            slot = self._policy_counts.get(mkey)
            if slot is None:
                if entry is None:
                    ekey = (plan.event, "", "", "", "", self.node, True)
                else:
                    ekey = (plan.event, *entry.key_parts(), self.node, False)
                self._policy_counts[mkey] = [plan.policy_hook, ekey, 1]
            else:
                slot[2] += 1
        if selector != 255:
            actions = plan.user_actions.get(selector)
            if actions is None:  # registered with the hook: cached for as long as the plan's hook
                actions = plan.user_actions[selector] = policies.actions(policy_id, hook_id, selector)
            if actions:
                self._run_user_actions(actions)

    def _generic_event(
        self,
        plan: HookPlan,
        buf: bytes,
        ktime: int,
        action: int,
        return_action: int,
        flags: int,
        ret: int,
        nargs: int,
        size: int,
        tid: int,
        entry: ProcessEntry | None,
        parent: ProcessEntry | None,
        ancestors: list[ProcessEntry] | None,
    ) -> None:
        """The event as a dict (gRPC subscribers, export filters, redaction) or, for the export file
        alone, serialized with the process, parent and ancestors embedded pre-serialized."""
        args = plan.args(buf, nargs, size)
        exporter = self.exporter
        subscribers = self.bus.subscriber_count
        wall = ktime + self.clock.offset
        stamp = format_timestamp(wall)
        if subscribers or (exporter is not None and not exporter.takes_lines):
            event = plan.event_builder(
                args,
                action,
                return_action,
                flags,
                ret,
                with_tid(entry.to_dict(), tid) if entry is not None else None,
                parent.to_dict() if parent is not None else None,
                [a.to_dict() for a in ancestors] if ancestors else None,
                self.node,
                stamp,
            )
            if exporter is not None:
                exporter.write(event)
            if subscribers:
                self.bus.publish(event)
        elif exporter is not None:
            frag = orjson.Fragment
            event = plan.event_builder(
                args,
                action,
                return_action,
                flags,
                ret,
                frag(entry.json_with_tid(tid)) if entry is not None else None,
                frag(parent.json()) if parent is not None else None,
                [frag(a.json()) for a in ancestors] if ancestors else None,
                self.node,
                stamp,
            )
            try:
                line = _dumps(event, option=_APPEND_NEWLINE)
            except orjson.JSONEncodeError:
                exporter.write(event)  # counts and logs the failure like any other event
            else:
                exporter.write_line(line, float(wall // 1_000_000_000))

    def _run_user_actions(self, actions: list[Any]) -> None:
        """GetUrl / DnsLookup: done from user space, off the pipeline thread."""
        from concurrent.futures import ThreadPoolExecutor

        from tetragon.policy.useractions import run_action

        if self._user_actions is None:
            self._user_actions = ThreadPoolExecutor(max_workers=4, thread_name_prefix="user-action")
        for action in actions:
            self._user_actions.submit(run_action, action)

    def _handler_error(self, op: int, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.record_handler_error(op, kind)

    def run(self) -> None:
        """Drain until stop() is called; the kernel wakes us past 256 KiB, the timer otherwise."""
        assert self.sensor is not None and self.sensor.reader is not None
        reader = self.sensor.reader
        next_gc = time.monotonic() + self.config.process_cache_gc_interval
        next_clock = time.monotonic() + 10
        next_lost_check = time.monotonic() + 1
        while not self.stop_event.is_set():
            reader.wait(self.config.drain_interval)
            self.drain_once()
            now = time.monotonic()
            if now >= next_gc:
                self.cache.gc(now)
                next_gc = now + self.config.process_cache_gc_interval
            if now >= next_clock:
                self.clock.refresh()
                next_clock = now + 10
            if now >= next_lost_check:
                self._warn_lost()
                next_lost_check = now + 1
        self.drain_once()

    def _warn_lost(self) -> None:
        """One warning per second in which the kernel could not reserve ring-buffer space."""
        assert self.sensor is not None
        lost = self.sensor.lost()
        if lost > self._lost_reported:
            log.warning(
                "ring buffer full: %d events lost in the kernel (%d in total); consider a larger --rb-size",
                lost - self._lost_reported,
                lost,
            )
            self._lost_reported = lost

    def drain_once(self) -> int:
        assert self.sensor is not None and self.sensor.reader is not None
        self._thread = None  # the cache may have been collected since the last batch
        n = self.sensor.reader.drain(self._handle)
        if self.exporter is not None:
            self.exporter.flush()
        if self.metrics is not None:
            if self._policy_counts:
                counts = self._event_counts
                policy: dict[Any, int] = {}
                for policy_hook, key, k in self._policy_counts.values():
                    counts[key] = counts.get(key, 0) + k
                    policy[(policy_hook, key)] = policy.get((policy_hook, key), 0) + k
                self.metrics.add_policy_event_counts(policy)
                self._policy_counts = {}
            if self._event_counts:
                self.metrics.add_event_counts(self._event_counts)
                self._event_counts = {}
        return n

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        """Detach and free every BPF object, stop servers, flush and close the export file."""
        if self.grpc is not None:
            self.grpc.stop()
            self.grpc = None
        if self.policies is not None:
            self.policies.close()
            self.policies = None
        if self._user_actions is not None:
            self._user_actions.shutdown(wait=False, cancel_futures=True)
            self._user_actions = None
        if self.sensor is not None:
            reader = self.sensor.reader
            log.info(
                "ring buffer: received %d records, lost %d (kernel sent %d)",
                reader.received if reader is not None else 0,
                self.sensor.lost(),
                self.sensor.sent(),
            )
            self.sensor.close()
            self.sensor = None
        if self.exporter is not None:
            self.exporter.close()
            self.exporter = None
        if self.metrics is not None:
            self.metrics.shutdown()
            self.metrics = None
