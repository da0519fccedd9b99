"""The hot path: ring-buffer records → decode → process cache → render → sinks.

One thread (the agent's) hands every record of a drained batch to Pipeline.handle. Exec, clone and
exit records update the process cache (process.events) and exec/exit become events; policy
(generic) records are rendered per hook with a RenderPlan. Sinks: the export file (written
directly, buffered, flushed once per batch), the event bus (gRPC streams, only when a client
listens) and the metrics (event counts added once per batch).

A policy event takes one of three forms, chosen in one place (Pipeline.handle_generic):
- a dict, when a gRPC client listens or the export file filters, redacts or drops fields;
- else the export line alone, without building the event (events.genline: per-hook templates cut
  from the same builder's output, tests/unit/test_generic_fastpath.py proves the bytes equal);
- else (ancestors wanted, or a shape without a template) the event serialized with the process,
  parent and ancestors embedded as the orjson fragments cached on their cache entries.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from tetragon.abi import events_h as L
from tetragon.events.bus import EventBus
from tetragon.events.decode import (
    GENERIC_OPS,
    GenericHeader,
    decode_clone,
    decode_exec,
    decode_exit,
    decode_generic_header,
)
from tetragon.events.genline import HookLines
from tetragon.events.lsm_event import add_ima_hash
from tetragon.events.render_plan import RenderPlan
from tetragon.events.stack_traces import STACK_FLAGS, with_stack_traces
from tetragon.jsontypes import Event
from tetragon.policy.hookinfo import HookInfo
from tetragon.process.cache import ProcessEntry, with_tid
from tetragon.process.events import ProcessEvents
from tetragon.timefmt import WallStamps, format_timestamp

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from tetragon.bpf.ringbuf import RingBufferReader
    from tetragon.export.jsonfile import JsonFileExporter
    from tetragon.k8s.enrich import PodEnricher
    from tetragon.metrics import AgentMetrics

log = logging.getLogger("tetragon")

# the record ops counted in tetragon_msg_op_total, in the order they are reported
RECORD_OPS = (
    L.MSG_OP_EXECVE,
    L.MSG_OP_EXIT,
    L.MSG_OP_CLONE,
    L.MSG_OP_GENERIC_KPROBE,
    L.MSG_OP_GENERIC_TRACEPOINT,
    L.MSG_OP_GENERIC_UPROBE,
    L.MSG_OP_GENERIC_LSM,
    L.MSG_OP_GENERIC_USDT,
)
_dumps = orjson.dumps
_APPEND_NEWLINE = orjson.OPT_APPEND_NEWLINE


class HookSource(Protocol):
    """The loaded policies, as the pipeline reads them (sensors.manager.PolicyManager)."""

    @property
    def generation(self) -> int:
        """Changes whenever a hook is added or removed."""
        ...

    def hook(self, policy_id: int, hook_id: int, func_id: int = 0) -> HookInfo | None: ...

    def actions(self, policy_id: int, hook_id: int, selector: int) -> Sequence[Any]: ...


class Pipeline:
    """Records in, events out to the sinks the agent wires in: `exporter`, `bus`, `metrics`."""

    def __init__(self, events: ProcessEvents, bus: EventBus, ancestor_kinds: frozenset[str]) -> None:
        """`events` brings the process cache, the clock and the node name; `ancestor_kinds` are the
        event kinds (--enable-ancestors) whose events carry the process's ancestors."""
        self.events = events
        self.cache = events.cache
        self.clock = events.clock
        self.node = events.opts.node_name
        self.bus = bus
        self.exporter: JsonFileExporter | None = None
        self.metrics: AgentMetrics | None = None
        self.policies: HookSource | None = None
        self.pods: PodEnricher | None = None  # holds exec/exit events until their pod is known
        self.op_counts: dict[int, int] = dict.fromkeys(RECORD_OPS, 0)
        self._ancestor_kinds = ancestor_kinds
        self._event_counts: dict[Any, int] = {}  # tetragon_events_total, added once per drain
        # policy events per (render plan, exec_id) -> [(policy, hook), event key, count]: added to
        # tetragon_policy_events_total and tetragon_events_total once per drain
        self._policy_counts: dict[tuple[RenderPlan, str | None], list[Any]] = {}
        self._plans: dict[tuple[int, int, int], RenderPlan] = {}  # per (policy, hook, func) id
        # GetUrl / DnsLookup actions per (policy, hook, selector) id, for as long as the plans
        self._selector_actions: dict[tuple[int, int, int], Sequence[Any]] = {}
        self._plans_generation = -1  # HookSource.generation the plans were made under
        # the process and parent of the last thread seen: (pid, tid, process, parent)
        self._thread: tuple[int, int, ProcessEntry | None, ProcessEntry | None, str] | None = None
        self._stamps = WallStamps()  # `time` of line-path events, formatted per second
        self._user_actions: ThreadPoolExecutor | None = None  # made on first use

    def metric_values(self) -> dict[str, Any]:
        """The pipeline's side of the agent's metrics: process cache, record ops, missing processes."""
        cache = self.cache
        return {
            "process_cache_size": len(cache),
            "process_cache_capacity": cache.capacity,
            "process_cache_evictions": cache.evictions,
            "process_cache_misses": {"get": cache.misses_get, "remove": cache.misses_remove},
            "msg_op": {str(op): n for op, n in self.op_counts.items()},
            "missing_process_info": self.events.missing_process_info,
        }

    def drain(self, reader: RingBufferReader) -> int:
        """Handle every record the ring holds, flush the export file, add the batch's counts."""
        self._thread = None  # the cache may have been collected since the last batch
        n = reader.drain(self.handle)
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

    def handle(self, record: memoryview) -> None:
        op = record[0]
        if op in self.op_counts:
            self.op_counts[op] += 1
        try:
            if op in GENERIC_OPS:
                self.handle_generic(record)
                return
            self._thread = None  # process records change the cache handle_generic looks into
            event: Event | None = None
            if op == L.MSG_OP_EXECVE:
                event = self.events.on_exec(decode_exec(record))
            elif op == L.MSG_OP_EXIT:
                event = self.events.on_exit(decode_exit(record))
            elif op == L.MSG_OP_CLONE:
                self.events.on_clone(decode_clone(record))
            else:
                self._handler_error(op, "unknown_opcode")
            if event is not None and (self.pods is None or not self.pods.hold(event)):
                self._emit(event)
        except Exception:
            self._handler_error(op, "event_handler_failed")
            log.exception("failed to handle a record with op %d", op)

    def emit_all(self, events: list[Event], hold: bool = True) -> None:
        """Events made outside a drain (the /proc scan's at start-up, those the pod event cache
        releases: `hold` False) to the sinks, flushed."""
        pods = self.pods if hold else None
        for event in events:
            if pods is None or not pods.hold(event):
                self._emit(event)
        if self.exporter is not None:
            self.exporter.flush()

    def release(self, event: Event, policy_hook: tuple[str, str] | None) -> None:
        """An event the pod event cache lets go (with its pod, or without after the last retry): to
        the sinks, and counted now, under the pod it has (a policy event also under its hook)."""
        if policy_hook is not None and self.metrics is not None:
            self.metrics.add_policy_event_counts({(policy_hook, self.metrics.event_key(event)): 1})
        self.emit_all([event], hold=False)

    def _emit(self, event: Event) -> None:
        if self.metrics is not None:
            key = self.metrics.event_key(event)
            self._event_counts[key] = self._event_counts.get(key, 0) + 1
        if self.exporter is not None:
            self.exporter.write(event)
        if self.bus.subscriber_count:
            self.bus.publish(event)

    def handle_generic(self, record: memoryview) -> None:
        buf = bytes(record)
        head = decode_generic_header(buf)
        # the header's fields as locals, unpacked in GenericHeader's order: attribute reads of a
        # NamedTuple cost ~30 ns each on this path
        _, _, _, ktime, pid, tid, policy_id, hook_id, _, _, selector, _, flags, func_id, _ = head
        policies = self.policies
        if policies is None:
            raise ValueError("policy record without a policy manager")
        if policies.generation != self._plans_generation:
            self._plans = {}  # hook infos changed: plans are rebuilt on demand
            self._selector_actions = {}
            self._plans_generation = policies.generation
        key = (policy_id, hook_id, func_id)
        plan = self._plans.get(key)
        if plan is None:
            hook = policies.hook(*key)
            if hook is None:
                raise ValueError(f"record of unknown policy hook {policy_id}/{hook_id}")
            plan = self._plans[key] = RenderPlan(hook)
        # the process and parent of the last thread seen are reused until a process record or a
        # new batch (a cache collection) could have changed them
        thread = self._thread
        if thread is None or thread[0] != pid or thread[1] != tid:
            entry = self.events.current(pid)
            parent = self.cache.get(entry.parent_exec_id) if entry is not None else None
            waiting = ""  # the container whose pod the thread's events wait for (pod event cache)
            if entry is not None:
                entry.policy_event = True  # here, not per event: once per thread and batch
                if self.pods is not None:
                    waiting = self.pods.awaits_pod(entry, parent)
            thread = self._thread = (pid, tid, entry, parent, waiting)
        else:
            entry, parent, waiting = thread[2], thread[3], thread[4]
        if entry is None:
            self.events.missing_process_info += 1
        ancestors: list[ProcessEntry] | None = None
        if entry is not None and plan.ancestors_kind in self._ancestor_kinds:
            ancestors = self.cache.ancestors(entry) or None
        # the one place the event's form is chosen (see the module docstring)
        exporter = self.exporter
        subscribers = self.bus.subscriber_count
        held = bool(waiting) and (subscribers > 0 or exporter is not None)
        if held:  # as a dict into the event cache, counted when it leaves with its pod
            self._generic_event(plan, buf, head, entry, parent, ancestors, True, waiting)
        elif subscribers or exporter is None or not exporter.takes_lines:
            self._generic_event(plan, buf, head, entry, parent, ancestors, True)
        else:
            line = None
            if ancestors is None and not flags & (
                STACK_FLAGS | L.GEN_F_IMA
            ):  # stack traces, an IMA hash: dict path
                lines = plan.lines
                if lines is None:
                    lines = plan.lines = HookLines(plan, self.node)
                stamps = self._stamps
                line = lines.line(
                    buf,
                    head,
                    entry.json_with_tid(tid) if entry is not None else None,
                    parent.json() if parent is not None else None,
                    stamps.stamp(ktime + self.clock.offset),
                )
                if line is not None:
                    exporter.write_line(line, stamps.seconds)
            if line is None:
                self._generic_event(plan, buf, head, entry, parent, ancestors, False)
        if self.metrics is not None and not held:
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
        if selector != L.GEN_SELECTOR_NONE:
            self._run_selector_actions(policy_id, hook_id, selector)

    def _generic_event(
        self,
        plan: RenderPlan,
        buf: bytes,
        head: GenericHeader,
        entry: ProcessEntry | None,
        parent: ProcessEntry | None,
        ancestors: list[ProcessEntry] | None,
        as_dict: bool,
        hold_for: str = "",
    ) -> None:
        """The event as a dict for every sink (as_dict), or, for an export file that is its only
        sink, serialized with the process, parent and ancestors embedded pre-serialized. With
        `hold_for` (a container id, as_dict) the dict waits in the pod event cache instead."""
        _, _, size, ktime, _, tid, _, _, action, return_action, _, nargs, flags, _, ret = head
        args = plan.args(buf, nargs, size)
        exporter = self.exporter
        subscribers = self.bus.subscriber_count if as_dict else 0
        if as_dict and exporter is None and not subscribers:
            return  # nobody takes the event: the arguments were still checked
        if as_dict:
            process: Any = with_tid(entry.to_dict(entry.refcnt), tid) if entry is not None else None
            parent_part: Any = parent.to_dict() if parent is not None else None
            ancestor_parts: list[Any] | None = [a.to_dict() for a in ancestors] if ancestors else None
        else:
            frag = orjson.Fragment
            process = frag(entry.json_with_tid(tid)) if entry is not None else None
            parent_part = frag(parent.json()) if parent is not None else None
            ancestor_parts = [frag(a.json()) for a in ancestors] if ancestors else None
        wall = ktime + self.clock.offset
        event = plan.event_builder(
            args,
            action,
            return_action,
            flags,
            ret,
            process,
            parent_part,
            ancestor_parts,
            self.node,
            format_timestamp(wall),
        )
        if flags & STACK_FLAGS:
            event = with_stack_traces(event, buf, nargs, size, head.pid)
        if flags & L.GEN_F_IMA:
            add_ima_hash(event, buf, size)
        if hold_for:
            assert self.pods is not None
            self.pods.hold_policy_event(event, hold_for, plan.policy_hook)
            return
        if as_dict:
            if exporter is not None:
                exporter.write(event)
            if subscribers:
                self.bus.publish(event)
            return
        assert exporter is not None
        try:
            line = _dumps(event, option=_APPEND_NEWLINE)
        except orjson.JSONEncodeError:
            exporter.write(event)  # counts and logs the failure like any other event
        else:
            exporter.write_line(line, float(wall // 1_000_000_000))

    def _run_selector_actions(self, policy_id: int, hook_id: int, selector: int) -> None:
        """GetUrl / DnsLookup of the matched selector: done from user space, off the pipeline thread."""
        key = (policy_id, hook_id, selector)
        actions = self._selector_actions.get(key)
        if actions is None:  # registered with the hook: cached for as long as the plans
            assert self.policies is not None
            actions = self._selector_actions[key] = self.policies.actions(*key)
        if not actions:
            return
        from concurrent.futures import ThreadPoolExecutor

        from tetragon.policy.useractions import run_action

        if self._user_actions is None:
            self._user_actions = ThreadPoolExecutor(max_workers=4, thread_name_prefix="user-action")
        for action in actions:
            self._user_actions.submit(run_action, action)

    def _handler_error(self, op: int, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.record_handler_error(op, kind)

    def close(self) -> None:
        """Stop pending user-space actions; the sinks are the agent's to close."""
        if self._user_actions is not None:
            self._user_actions.shutdown(wait=False, cancel_futures=True)
            self._user_actions = None
