"""Process cache: exec_id → process, the current process of each pid, parents, ancestors, refcounts.

Reference counting follows Tetragon: a process holds one reference on itself until it exits and one
on its parent for as long as it lives, so a parent stays resolvable while any child can still emit
events. Entries whose count reached zero are dropped by `gc()` one interval later (events already in
flight may still name them); when the cache is full the oldest exited entries go first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

ProcessDict = dict[str, Any]

# Tables smaller than this are never rebuilt (their slack is a few hundred KB at most)
_SHRINK_FLOOR = 4096
_LAST_ANCESTOR_PID = 2  # kthreadd; init is 1: Tetragon's ancestors end with either

# Process fields after `tid` (16), to insert tid at its declaration position.
_AFTER_TID = ("process_credentials", "binary_properties", "user", "in_init_tree", "environment_variables")
# Process fields after `pod` (10), to insert pod at its declaration position.
_AFTER_POD = frozenset(("docker", "parent_exec_id", "refcnt", "cap", "ns", "tid", *_AFTER_TID))


def with_tid(process: ProcessDict, tid: int) -> ProcessDict:
    """A copy of a Process dict whose `tid` is the thread that hit the hook."""
    if "tid" in process:
        out = dict(process)
        out["tid"] = tid
        return out
    out = {}
    placed = False
    for key, value in process.items():
        if not placed and key in _AFTER_TID:
            out["tid"] = tid
            placed = True
        out[key] = value
    if not placed:
        out["tid"] = tid
    return out


def with_pod(process: ProcessDict, pod: ProcessDict) -> ProcessDict:
    """A copy of a Process dict with `pod` at its declaration position (field 10, before `docker`)."""
    out: ProcessDict = {}
    for key, value in process.items():
        if key in _AFTER_POD and "pod" not in out:
            out["pod"] = pod
        if key != "pod":
            out[key] = value
    if "pod" not in out:
        out["pod"] = pod
    return out


@dataclass(slots=True)
class ProcessEntry:
    exec_id: str
    pid: int
    ktime: int
    parent_exec_id: str
    # `Process` fields 1-12 (exec_id .. parent_exec_id); refcnt (13) is live; then cap and ns (14-15),
    # tid (16), process_credentials and binary_properties (17-18). Optional parts stay None, and
    # strings repeated across processes are interned: tens of thousands of entries live here.
    head: ProcessDict
    tid: int = 0
    caps_ns: ProcessDict | None = None
    extra: ProcessDict | None = None
    in_init_tree: bool = False  # Process field 20, a BoolValue: Tetragon prints it even when false
    cloned: bool = False  # made by a fork that has not exec'd (yet)
    refcnt: int = 1
    exited: bool = False
    policy_event: bool = False  # a policy event named it (GetDebug's dump; `tetra processtree` marks it)
    zero_since: float = 0.0
    # Reference changes by operation, for the process-cache dump's refcnt_ops (Tetragon's names:
    # "process++" is the reference every entry starts with, "process--" its release at exit,
    # "parent++"/"parent--" those its children take and release). Three small ints, not a dict per
    # process: tens of thousands of entries live here, and each change is one increment.
    parent_refs_taken: int = 0
    parent_refs_released: int = 0
    own_ref_released: int = 0
    # Serialized forms for the export fast path (the fields above never change after creation but
    # refcnt): (refcnt, tid, JSON of with_tid(to_dict(refcnt), tid)) and the JSON of to_dict().
    _json_tid: tuple[int, int, bytes] | None = field(default=None, repr=False, compare=False)
    _json: bytes | None = field(default=None, repr=False, compare=False)
    _key_parts: tuple[str, str, str, str] | None = field(default=None, repr=False, compare=False)

    def json_with_tid(self, tid: int) -> bytes:
        """`orjson.dumps(with_tid(self.to_dict(self.refcnt), tid))`, the `process` of a policy
        event; cached while refcnt holds."""
        cached = self._json_tid
        if cached is not None and cached[0] == self.refcnt and cached[1] == tid:
            return cached[2]
        data = orjson.dumps(with_tid(self.to_dict(self.refcnt), tid))
        self._json_tid = (self.refcnt, tid, data)
        return data

    def json(self) -> bytes:
        """`orjson.dumps(self.to_dict())`, a `parent` or ancestor (no refcnt): cached for good."""
        data = self._json
        if data is None:
            data = self._json = orjson.dumps(self.to_dict())
        return data

    def key_parts(self) -> tuple[str, str, str, str]:
        """(binary, pod namespace, workload, pod name) as metrics' event_key reads them from to_dict()."""
        parts = self._key_parts
        if parts is None:
            d = self.to_dict()
            pod = d.get("pod")
            if pod is None:
                parts = (d.get("binary", ""), "", "", "")
            else:
                parts = (
                    d.get("binary", ""),
                    pod.get("namespace", ""),
                    pod.get("workload", ""),
                    pod.get("name", ""),
                )
            self._key_parts = parts
        return parts

    def set_pod(self, pod: ProcessDict) -> None:
        """Gives the process its `pod` (field 10, before `docker`) once the pod is known; drops the
        serialized forms made without it."""
        self.head = with_pod(self.head, pod)
        self._json_tid = self._json = self._key_parts = None

    def to_dict(self, refcnt: int = 0) -> ProcessDict:
        """The Process message, with `refcnt` when it is not 0. Tetragon prints none on the
        process and parent of exec and exit events and on every parent, 1 on the exit of a
        process that never exec'd, and the live count on the process of policy events."""
        d = dict(self.head)
        if refcnt:
            d["refcnt"] = refcnt
        if self.caps_ns:
            d.update(self.caps_ns)
        if self.tid:
            d["tid"] = self.tid
        if self.extra:
            d.update(self.extra)
        d["in_init_tree"] = self.in_init_tree
        return d

    def refcnt_ops(self) -> dict[str, int]:
        """Reference changes by operation, under Tetragon's keys (those never made are left out)."""
        ops = {"process++": 1}
        for key, count in (
            ("process--", self.own_ref_released),
            ("parent++", self.parent_refs_taken),
            ("parent--", self.parent_refs_released),
        ):
            if count:
                ops[key] = count
        return ops


class ProcessCache:
    def __init__(self, capacity: int = 65536, gc_interval: float = 30.0) -> None:
        self.capacity = capacity
        self.gc_interval = gc_interval
        self._by_exec: dict[str, ProcessEntry] = {}
        self._by_pid: dict[int, ProcessEntry] = {}
        self._high = 0  # the most entries a collection has seen since the tables were last rebuilt
        self.evictions = 0
        self.misses_get = 0
        self.misses_remove = 0

    def __len__(self) -> int:
        return len(self._by_exec)

    def get(self, exec_id: str) -> ProcessEntry | None:
        return self._by_exec.get(exec_id)

    def entries(self) -> list[ProcessEntry]:
        """Every cached process (a copy, safe to take from another thread: one C-level list call)."""
        return list(self._by_exec.values())

    def by_pid(self, pid: int) -> ProcessEntry | None:
        entry = self._by_pid.get(pid)
        if entry is None:
            self.misses_get += 1
        return entry

    def get_by_pid(self, pid: int) -> ProcessEntry | None:
        """Like by_pid, without counting a miss."""
        return self._by_pid.get(pid)

    def add(self, entry: ProcessEntry, *, replaces: ProcessEntry | None = None) -> None:
        """Insert a process (exec, clone or /proc scan) and take its reference on its parent.

        `replaces` is the pid's previous process when this is an exec: that image is gone, so it
        drops its own reference (and, when it never exited, its reference on its parent).
        """
        if entry.exec_id in self._by_exec:
            return  # duplicate (e.g. the /proc scan raced a live exec)
        self._by_exec[entry.exec_id] = entry
        self._by_pid[entry.pid] = entry
        parent = self._by_exec.get(entry.parent_exec_id)
        if parent is not None:
            parent.parent_refs_taken += 1
            self._ref(parent, 1)
        if replaces is not None and not replaces.exited:
            replaces.exited = True
            replaces.own_ref_released += 1
            self._ref(replaces, -1)
            self._release_parent(replaces)
            if replaces.refcnt <= 0:
                # no event can name the replaced image any more: its pid now resolves to `entry`
                self._remove(replaces)
        if len(self._by_exec) > self.capacity:
            self._evict()

    def exit(self, pid: int) -> ProcessEntry | None:
        """Mark the current process of `pid` exited; returns it (None if unknown)."""
        entry = self._by_pid.get(pid)
        if entry is None or entry.exited:
            self.misses_remove += 1
            return None
        entry.exited = True
        entry.own_ref_released += 1
        self._ref(entry, -1)
        self._release_parent(entry)
        return entry

    def forget_pid(self, entry: ProcessEntry) -> None:
        """Stop resolving `entry.pid` to `entry` (its pid may be reused)."""
        if self._by_pid.get(entry.pid) is entry:
            del self._by_pid[entry.pid]

    def ancestors(self, entry: ProcessEntry, limit: int = 4096) -> list[ProcessEntry]:
        """The parent's parent, its parent, ... up to init or kthreadd: as in Tetragon, the walk
        stops at pid 1 or 2 (never reaching `<kernel>`)."""
        out: list[ProcessEntry] = []
        parent = self._by_exec.get(entry.parent_exec_id)
        if parent is None or parent.pid <= _LAST_ANCESTOR_PID:
            return out
        cur = self._by_exec.get(parent.parent_exec_id)
        seen = {entry.exec_id}
        while cur is not None and cur.exec_id not in seen and len(out) < limit:
            out.append(cur)
            if cur.pid <= _LAST_ANCESTOR_PID:
                break
            seen.add(cur.exec_id)
            cur = self._by_exec.get(cur.parent_exec_id)
        return out

    def gc(self, now: float | None = None) -> int:
        """Drop entries whose refcount has been zero for at least one interval; returns how many."""
        now = time.monotonic() if now is None else now
        self._high = max(self._high, len(self._by_exec))
        dead = [
            e
            for e in self._by_exec.values()
            if e.refcnt <= 0 and e.zero_since and now - e.zero_since >= self.gc_interval
        ]
        for e in dead:
            self._remove(e)
        if self._high > _SHRINK_FLOOR and len(self._by_exec) * 4 < self._high:
            self._shrink()
        return len(dead)

    def _shrink(self) -> None:
        """Rebuild the tables after a burst: a dict never shrinks when entries leave, so the tables
        of a 100,000-exec burst (megabytes) would stay at their largest for the agent's lifetime.
        The copies replace the tables in one assignment each: entries() may run on another thread."""
        self._by_exec = dict(self._by_exec)
        self._by_pid = dict(self._by_pid)
        self._high = len(self._by_exec)

    def _ref(self, entry: ProcessEntry, delta: int) -> None:
        entry.refcnt += delta
        if entry.refcnt <= 0 and not entry.zero_since:
            entry.zero_since = time.monotonic()
        elif entry.refcnt > 0:
            entry.zero_since = 0.0

    def _release_parent(self, entry: ProcessEntry) -> None:
        parent = self._by_exec.get(entry.parent_exec_id)
        if parent is not None:
            parent.parent_refs_released += 1
            self._ref(parent, -1)

    def _remove(self, entry: ProcessEntry) -> None:
        self._by_exec.pop(entry.exec_id, None)
        self.forget_pid(entry)

    def _evict(self) -> None:
        # evict a little more than needed so a full cache does not scan on every insert
        excess = len(self._by_exec) - self.capacity + max(1, self.capacity // 64)
        victims = [e for e in self._by_exec.values() if e.exited][:excess]
        if len(victims) < excess:  # nothing exited left to drop: drop the oldest
            taken = {e.exec_id for e in victims}
            victims += [e for e in self._by_exec.values() if e.exec_id not in taken][: excess - len(victims)]
        for e in victims:
            self._remove(e)
            self.evictions += 1
