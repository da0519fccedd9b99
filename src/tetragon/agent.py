"""Wiring: configuration → base sensor, policies → pipeline → sinks (JSON file, gRPC, metrics).

The agent opens the sinks, loads the base sensor, seeds the process cache from /proc, starts the
policy manager and the gRPC server, then drains the ring buffer on one thread: every record goes
through the Pipeline (tetragon.pipeline), which owns the hot path. The gRPC and metrics servers
run in their own threads.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tetragon import __version__
from tetragon.config import AgentConfig, AgentError, check_ancestors
from tetragon.events.bus import EventBus
from tetragon.hostsetup import (
    HostError,
    batch_scheduling,
    check_btf,
    check_privileges,
    give_memory_back,
    host_namespaces,
    tune_malloc,
    write_run_files,
)
from tetragon.pipeline import Pipeline
from tetragon.policy.errors import PolicyError
from tetragon.process import procfs
from tetragon.process.cache import ProcessCache
from tetragon.process.events import ProcessEvents, ProcessOptions
from tetragon.process.model import Clock, node_name
from tetragon.sensors.base import MAX_WAKEUP_BYTES, BaseSensor
from tetragon.sensors.manager import PolicyManager, policy_files  # the policy lifecycle

if TYPE_CHECKING:  # imported where used: a config error must not wait for grpc to import
    from tetragon.api.health import HealthServer
    from tetragon.api.server import GrpcServer
    from tetragon.export.jsonfile import JsonFileExporter
    from tetragon.k8s.enrich import PodSource
    from tetragon.metrics import AgentMetrics

log = logging.getLogger("tetragon")

DEFAULT_BTF = "/sys/kernel/btf/vmlinux"
# The longest the drain loop sleeps with an empty ring (Agent.run): the kernel side wakes it with the
# first record into an empty ring (bpf/include/ringbuf.h), so this only paces the chores (process
# cache collection, clock refresh) and bounds how long a record that raced with the last drain waits.
REST_WAIT = 10.0


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.node = node_name()
        self.bus = EventBus()
        self.clock = Clock()
        self.cache = ProcessCache(config.process_cache_size, config.process_cache_gc_interval)
        check_ancestors(config.enable_ancestors)
        self.pod_source: PodSource | None = None
        self.crd_watchers: list[Any] = []  # TracingPolicy objects of the API (--enable-k8s-api)
        if config.enable_k8s_api or config.enable_cri:  # kubernetes/grpc imported only then
            from tetragon.k8s.enrich import pod_source

            self.pod_source = pod_source(config, self.node, self.cache)
        pods = self.pod_source.enricher if self.pod_source is not None else None
        self.events = ProcessEvents(
            self.cache,
            ProcessOptions(
                node_name=self.node,
                enable_process_cred=config.enable_process_cred,
                enable_process_ns=config.enable_process_ns,
                enable_ancestors="base" in config.enable_ancestors,
                host_ns=host_namespaces(config.procfs),
                pod_of=pods.pod_of if pods is not None else None,
            ),
            self.clock,
        )
        # the sinks and policies are wired into the pipeline as they come up (start())
        self.pipeline = Pipeline(self.events, self.bus, frozenset(config.enable_ancestors))
        self.pipeline.pods = pods
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self.sensor: BaseSensor | None = None
        self.exporter: JsonFileExporter | None = None
        self.grpc: GrpcServer | None = None
        self.health_server: HealthServer | None = None
        self.metrics: AgentMetrics | None = None
        self.policies: PolicyManager | None = None
        self._lost_reported = 0

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
        self.pipeline.exporter = self.exporter

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
            process_cache=self.cache,
            config=self.config,
        )
        self.grpc.runtime_hooks = self._runtime_hooks()
        try:
            self.grpc.start()
        except ServerStartError as exc:
            raise AgentError(str(exc)) from exc

    def _runtime_hooks(self) -> Any:
        """RuntimeHook's answerer (tetragon-oci-hook): the policy filter and the pod source."""
        from tetragon.api.runtime_hook import RuntimeHooks

        source = self.pod_source
        return RuntimeHooks(
            self.policies.pod_filter if self.policies is not None else None,
            source.cache.by_uid if source is not None else None,
            source.poke if source is not None else None,
        )

    def _start_health(self) -> None:
        """As Tetragon: a health server that cannot listen is logged, the agent runs on."""
        if not self.config.health_server_address:
            return
        from tetragon.api.health import HealthServer
        from tetragon.api.listen import ServerStartError

        server = HealthServer(
            self.config.health_server_address, self.health, self.config.health_server_interval
        )
        try:
            server.start()
        except ServerStartError as exc:
            log.error("health server not started: %s", exc)
            return
        self.health_server = server

    def _start_policies(self) -> None:
        """The policy manager, then --tracing-policy (must load) and --tracing-policy-dir (each may fail)."""
        from tetragon.bpf.features import probe_features

        sensor = self.sensor
        assert sensor is not None
        pod_filter = None
        if self.config.enable_policy_filter and self.pod_source is not None:
            from tetragon.k8s.policyfilter import PolicyFilter

            pod_filter = PolicyFilter(
                self.pod_source.cache.pods, debug=self.config.enable_policy_filter_debug
            )
            self.pod_source.cache.on_change.append(pod_filter.refresh)
        elif self.config.enable_policy_filter:
            log.warning(
                "--enable-policy-filter without --enable-k8s-api or --enable-cri has no pods to filter "
                "by: pod-scoped policies will be refused"
            )
        self.policies = PolicyManager(
            sensor.shared_maps,
            probe_features(),
            btf_path=self.config.btf or None,
            max_hooks_per_policy=self.config.tracing_policy_max_hooks,
            max_hooks=self.config.tracing_policies_max_hooks,
            pod_filter=pod_filter,
        )
        self.pipeline.policies = self.policies
        cfg = self.config
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

        self.metrics = self.pipeline.metrics = AgentMetrics(label_filter=self.config.metrics_label_filter)
        self.metrics.register_source(self._metric_values)
        from tetragon.metrics.bpfstats import BpfProgramStats

        programs = BpfProgramStats(lambda: self.policies, enable_stats=self.config.enable_bpf_stats)
        self.metrics.watch_bpf_programs(programs)
        if self.exporter is not None:
            self.metrics.watch_exporter(self.exporter)
        if self.pipeline.pods is not None:
            self.metrics.watch_event_cache(self.pipeline.pods.cache_stats)
        if self.config.metrics_server:
            try:
                self.metrics.serve(self.config.metrics_server)
            except OSError as exc:
                raise AgentError(f"--metrics-server {self.config.metrics_server}: {exc}") from exc

    def _metric_values(self) -> dict[str, Any]:
        from tetragon.metrics.sources import policy_values, ring_values

        return {**self.pipeline.metric_values(), **ring_values(self.sensor), **policy_values(self.policies)}

    def health(self) -> list[tuple[str, str]]:
        from tetragon.api.health import agent_statuses

        return agent_statuses(self.ready.is_set(), self.stop_event.is_set(), self.sensor)

    def start(self) -> None:
        """Everything up to the first drain; raises AgentError with a one-line reason."""
        cfg = self.config
        batch_scheduling()
        tune_malloc()
        try:
            check_btf(cfg.btf or DEFAULT_BTF)
            check_privileges()
        except HostError as exc:
            raise AgentError(str(exc)) from exc
        self._open_exporter()
        self._start_metrics()
        from tetragon.bpf.libbpf import BpfError

        try:
            self.sensor = BaseSensor(cfg.rb_size, btf_path=cfg.btf or None)
        except BpfError as exc:
            raise AgentError(f"cannot load the base sensor: {exc}") from exc
        if self.pod_source is not None:  # pods known before the scan, so its events find them
            self.pod_source.enricher.sink = self.pipeline.release
            self.pod_source.start()
        # attach first, then scan: a process started in between is seen by both, never by neither
        infos = procfs.scan(cfg.procfs)
        startup_events = self.events.seed_procfs(infos)
        for info in infos:
            self.sensor.seed_process(
                info.pid, info.ppid, info.nspid, info.exe or info.binary, info.ns, info.cap_effective
            )
        log.info("process cache seeded from %s with %d processes", cfg.procfs, len(infos))
        self.pipeline.emit_all(startup_events)
        # run files before policies, as Tetragon: a policy must not report the agent's own start-up
        write_run_files(Path(self.config.run_dir), self.config.server_address)
        # the gRPC relays' private directories (API, health), made now for the same reason
        relays = bool(cfg.server_address) + bool(cfg.health_server_address)
        if relays:
            from tetragon.api.relay import reserve_private_dirs

            reserve_private_dirs(relays)
        self._start_policies()
        if cfg.enable_k8s_api and self.policies is not None:
            from tetragon.k8s.policywatch import start_crd_watchers

            self.crd_watchers = start_crd_watchers(cfg.k8s_kubeconfig_path, self.policies, self.node)
        self._start_grpc()
        self.ready.set()
        self._start_health()  # after ready: its first answer is SERVING
        log.info(
            "tetragon %s ready: node %s, export %s, gRPC %s",
            __version__,
            self.node,
            cfg.export_filename or "off",
            cfg.server_address or "off",
        )

    # --- draining ------------------------------------------------------------------------------
    def run(self) -> None:
        """Drain until stop() is called, in batches at most `drain_interval` apart.

        The kernel wakes us with the first record into an empty ring (and when a burst crosses
        256 KiB); records that come after it are batched until `drain_interval` has passed since the
        previous drain. While drains find records the loop also drains every `drain_interval`
        without a wake-up; the first empty drain ends that, and the loop sleeps until the next record
        or REST_WAIT. The first event after a quiet spell is exported at once, and an agent at rest
        wakes only for its chores. A record whose submission raced with the end of a drain (it saw
        the ring not yet empty) is picked up by the next drain, at most `drain_interval` later.
        """
        assert self.sensor is not None and self.sensor.reader is not None
        reader = self.sensor.reader
        fast = self.config.drain_interval
        burst = min(MAX_WAKEUP_BYTES, reader.size // 4)  # the kernel side's tg_wakeup_bytes
        busy = True
        last_drain = time.monotonic()
        next_gc = last_drain + self.config.process_cache_gc_interval
        next_clock = last_drain + 10
        next_lost_check = last_drain + 1
        while not self.stop_event.is_set():
            if busy:
                timeout = fast
            else:
                timeout = max(0.0, min(REST_WAIT, next_gc - last_drain, next_clock - last_drain))
                if self.pipeline.pods is not None:
                    timeout = min(timeout, 1.0)  # events waiting for their pod are looked at again
            reader.wait(timeout)
            delay = last_drain + fast - time.monotonic()
            if delay > 0 and reader.pending() < burst:
                # woken by a record: let the batch fill up to the drain interval, unless a burst
                # crosses the wake-up threshold meanwhile (the kernel wakes us again)
                reader.wait(delay)
            busy = self.drain_once() > 0
            now = last_drain = time.monotonic()
            if self.pipeline.pods is not None:
                self.pipeline.pods.tick()  # events whose pod was not known: due for a new look
            if now >= next_gc:
                if self.cache.gc(now):  # the end of a burst: what it freed goes back to the kernel
                    give_memory_back()
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
        return self.pipeline.drain(self.sensor.reader)

    def stop(self) -> None:
        self.stop_event.set()
        sensor = self.sensor
        if sensor is not None and sensor.reader is not None:
            with contextlib.suppress(OSError):  # closed under us: nothing left to wake
                sensor.reader.interrupt()  # the drain loop may be sleeping until the next record

    def close(self) -> None:
        """Detach and free every BPF object, stop servers, flush and close the export file."""
        grpc, policies, sensor = self.grpc, self.policies, self.sensor
        exporter, metrics, health = self.exporter, self.metrics, self.health_server
        self.grpc = self.policies = self.sensor = self.exporter = self.metrics = self.health_server = None
        if health is not None:
            health.stop()
        for watcher in self.crd_watchers:
            watcher.stop()
        if grpc is not None:
            grpc.stop()
        if policies is not None:
            policies.close()
        if sensor is not None and sensor.reader is not None:
            # records submitted after run()'s last drain: stop the producers, then read what is left,
            # so that "received" and "kernel sent" below count the same records
            sensor.detach()
            self.pipeline.drain(sensor.reader)
        if self.pod_source is not None:
            self.pod_source.enricher.flush()
            self.pod_source.stop()
        self.pipeline.close()
        if sensor is not None:
            reader = sensor.reader
            log.info(
                "ring buffer: received %d records, lost %d (kernel sent %d)",
                reader.received if reader is not None else 0,
                sensor.lost(),
                sensor.sent(),
            )
            sensor.close()
        if exporter is not None:
            exporter.close()
        if metrics is not None:
            metrics.shutdown()
