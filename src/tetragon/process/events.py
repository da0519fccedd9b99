"""Turns decoded exec/clone/exit records into process-cache updates and Tetragon JSON event dicts."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from sys import intern
from typing import Any

from tetragon.abi import events_h as L
from tetragon.jsontypes import Event
from tetragon.process.cache import ProcessCache, ProcessEntry
from tetragon.process.model import (
    Clock,
    CloneRecord,
    ExecInfo,
    ExitRecord,
    cap_names,
    container_id,
    exec_id,
    exit_fields,
    format_flags,
    kernel_info,
    quote_arguments,
    securebit_names,
)


@dataclass(slots=True)
class ProcessOptions:
    node_name: str
    enable_process_cred: bool = False
    enable_process_ns: bool = False
    enable_ancestors: bool = False
    host_ns: tuple[int, ...] = ()  # inode of each namespace of pid 1, in layout.NS_NAMES order
    # (container id, pid, pid in the container, binary, arguments) -> the process's `pod` when it is
    # known (k8s.enrich)
    pod_of: Callable[[str, int, int, str, str], dict[str, Any] | None] | None = None


class ProcessEvents:
    def __init__(self, cache: ProcessCache, options: ProcessOptions, clock: Clock | None = None) -> None:
        self.cache = cache
        self.opts = options
        self.clock = clock or Clock()
        self.missing_process_info = 0
        # Forked processes whose entry is not built yet: most exec within microseconds, so the
        # entry (a copy of the parent's) is built only when something needs it: an exit, a child.
        self._pending: dict[int, tuple[CloneRecord, ProcessEntry]] = {}

    def current(self, pid: int) -> ProcessEntry | None:
        """The process `pid` is now, building a pending clone's entry if need be."""
        pending = self._pending.pop(pid, None)
        if pending is not None:
            rec, parent = pending
            entry = self.entry_from_clone(rec, parent)
            self.cache.add(entry)
            return entry
        return self.cache.by_pid(pid)

    # --- process entries -------------------------------------------------------------------
    def _caps(self, info: ExecInfo) -> dict[str, list[str]]:
        caps: dict[str, list[str]] = {}
        for key, mask in (
            ("permitted", info.cap_permitted),
            ("effective", info.cap_effective),
            ("inheritable", info.cap_inheritable),
        ):
            names = cap_names(mask)
            if names:
                caps[key] = names
        return caps

    def _namespace(self, slot: int, inum: int) -> dict[str, Any]:
        """A Namespace message: inode number, and is_host when it is pid 1's namespace of that kind."""
        host = self.opts.host_ns
        if slot < len(host) and host[slot] == inum:
            return {"inum": inum, "is_host": True}
        return {"inum": inum}

    def _caps_ns(self, info: ExecInfo) -> dict[str, Any] | None:
        """`cap` and `ns` (Process fields 14-15), when enabled."""
        tail: dict[str, Any] = {}
        opts = self.opts
        if opts.enable_process_cred:
            caps = self._caps(info)
            if caps:
                tail["cap"] = caps
        if opts.enable_process_ns and info.ns:
            ns: dict[str, Any] = {}
            for i, name in enumerate(L.NS_NAMES):
                inum = info.ns[i] if i < len(info.ns) else 0
                if not inum:
                    continue
                ns[name] = self._namespace(i, inum)
            if ns:
                tail["ns"] = ns
        return tail or None

    def _extra(self, info: ExecInfo, binary: str) -> dict[str, Any] | None:
        """`process_credentials` and `binary_properties` (Process fields 17-18)."""
        tail: dict[str, Any] = {}
        opts = self.opts
        if opts.enable_process_cred:
            creds: dict[str, Any] = {
                "uid": info.uid,
                "gid": info.gid,
                "euid": info.euid,
                "egid": info.egid,
                "suid": info.suid,
                "sgid": info.sgid,
                "fsuid": info.fsuid,
                "fsgid": info.fsgid,
            }
            bits = securebit_names(info.securebits)
            if bits:
                creds["securebits"] = bits
            caps = self._caps(info)
            if caps:
                creds["caps"] = caps
            user_ns: dict[str, Any] = {
                "level": info.userns_level,
                "uid": info.userns_uid,
                "gid": info.userns_gid,
            }
            user_inum = info.ns[L.NS_USER] if len(info.ns) > L.NS_USER else 0
            if user_inum:
                user_ns["ns"] = self._namespace(L.NS_USER, user_inum)
            creds["user_ns"] = user_ns
            tail["process_credentials"] = creds
        props = self._binary_properties(info, binary)
        if props:
            tail["binary_properties"] = props
        return tail or None

    @staticmethod
    def _binary_properties(info: ExecInfo, binary: str) -> dict[str, Any]:
        props: dict[str, Any] = {}
        changed: list[str] = []
        if info.privs & L.EXEC_PRIV_SETUID:
            props["setuid"] = info.file_uid
            changed.append("PRIVILEGES_RAISED_EXEC_FILE_SETUID")
        if info.privs & L.EXEC_PRIV_SETGID:
            props["setgid"] = info.file_gid
            changed.append("PRIVILEGES_RAISED_EXEC_FILE_SETGID")
        if info.privs & L.EXEC_PRIV_FILE_CAP:
            changed.insert(0, "PRIVILEGES_RAISED_EXEC_FILE_CAP")
        if changed:
            props["privileges_changed"] = changed
        if info.file_nlink == 0 and "procFS" not in info.flags:
            # executed from a file with no name left: memfd, deleted, or O_TMPFILE; named as d_path does
            file: dict[str, Any] = {"inode": {"number": str(info.file_ino), "links": 0}}
            if info.exe:
                file["path"] = f"{info.exe} (deleted)"
            props["file"] = file
        return props

    def entry_from_exec(self, info: ExecInfo, parent: ProcessEntry | None) -> ProcessEntry:
        binary = info.binary
        if binary and not binary.startswith("/") and info.cwd.startswith("/"):
            binary = posixpath.normpath(posixpath.join(info.cwd, binary))
        eid = exec_id(self.opts.node_name, info.ktime, info.pid)
        head: dict[str, Any] = {
            "exec_id": eid,
            "pid": info.pid,
            "uid": info.euid,
        }
        if info.cwd:
            head["cwd"] = intern(info.cwd)
        if binary:
            head["binary"] = intern(binary)
        arguments = quote_arguments(info.argv[1:])
        if arguments:
            head["arguments"] = intern(arguments)
        head["flags"] = intern(format_flags(info.flags))
        head["start_time"] = self.clock.rfc3339(info.ktime)
        head["auid"] = info.auid
        docker = container_id(info.cgroup_name)
        if docker:
            pod = (
                self.opts.pod_of(docker, info.pid, info.nspid, binary, arguments)
                if self.opts.pod_of is not None
                else None
            )
            if pod is not None:
                head["pod"] = pod
            head["docker"] = docker[:31]
        parent_id = parent.exec_id if parent is not None else ""
        if parent_id:
            head["parent_exec_id"] = parent_id
        return ProcessEntry(
            exec_id=eid,
            pid=info.pid,
            ktime=info.ktime,
            parent_exec_id=parent_id,
            head=head,
            tid=info.tid,
            caps_ns=self._caps_ns(info),
            extra=self._extra(info, binary),
        )

    def entry_from_clone(self, rec: CloneRecord, parent: ProcessEntry) -> ProcessEntry:
        eid = exec_id(self.opts.node_name, rec.ktime, rec.pid)
        head = dict(parent.head)
        head["exec_id"] = eid
        head["pid"] = rec.pid
        # Tetragon's fork program sets common flag 0x01, which user space decodes with the process
        # flag table, where 0x01 is `execve`
        head["flags"] = "execve"
        head["start_time"] = self.clock.rfc3339(rec.ktime)
        head["parent_exec_id"] = parent.exec_id
        extra = {k: v for k, v in (parent.extra or {}).items() if k != "binary_properties"} or None
        return ProcessEntry(
            eid, rec.pid, rec.ktime, parent.exec_id, head, rec.tid, parent.caps_ns, extra, cloned=True
        )

    # --- events -----------------------------------------------------------------------------
    def _with_family(self, body: Event, entry: ProcessEntry, parent: ProcessEntry | None) -> None:
        body["process"] = entry.to_dict()
        if parent is not None:
            body["parent"] = parent.to_dict()

    def _ancestors(self, entry: ProcessEntry) -> list[dict[str, Any]]:
        return [a.to_dict() for a in self.cache.ancestors(entry)]

    def seed_procfs(self, infos: list[ExecInfo]) -> list[Event]:
        """Insert `<kernel>` and the processes found by the /proc scan (parents first); returns
        the process_exec events Tetragon emits for them at start (procevents/proc_reader.go): one
        for `<kernel>` and one per process but kernel threads, which are cached only."""
        kernel = self.entry_from_exec(kernel_info(), None)
        kernel.parent_exec_id = kernel.head["parent_exec_id"] = kernel.exec_id  # its own parent
        self.cache.add(kernel)
        # the event's time: its ktime read as monotonic (Clock); start_time: read as boot time
        as_monotonic = self.clock.rfc3339_as_monotonic
        events = [self._exec_event(kernel, kernel, as_monotonic(kernel.ktime))]
        for info in infos:
            parent = self.cache.by_pid(info.ppid) if info.ppid else kernel
            entry = self.entry_from_exec(info, parent)
            self.cache.add(entry)
            if not info.kthread:
                events.append(self._exec_event(entry, parent, as_monotonic(info.ktime)))
        return events

    def _exec_event(self, entry: ProcessEntry, parent: ProcessEntry | None, when: str) -> Event:
        body: Event = {}
        self._with_family(body, entry, parent)
        if self.opts.enable_ancestors:
            ancestors = self._ancestors(entry)
            if ancestors:
                body["ancestors"] = ancestors
        return {"process_exec": body, "node_name": self.opts.node_name, "time": when}

    def on_exec(self, info: ExecInfo) -> Event:
        cache = self.cache
        if self._pending.pop(info.pid, None) is not None:
            info.flags.add("clone")  # the first exec after fork; the clone needs no entry now
            prev = cache.get_by_pid(info.pid)  # an older process with this pid whose exit was lost
            parent = self.current(info.ppid)
        else:
            prev = cache.by_pid(info.pid)
            if prev is not None and prev.cloned and not prev.exited:
                info.flags.add("clone")
                parent = self.current(info.ppid)
            elif prev is not None and not prev.exited:
                # an exec without a fork (`env ... true`): Tetragon's parent is the pid's previous
                # image (pkg/process AddExecEvent uses the execve_map entry unless the exec is a clone)
                parent = prev
            else:
                parent = self.current(info.ppid)
        if parent is None:
            self.missing_process_info += 1
        entry = self.entry_from_exec(info, parent)
        cache.add(entry, replaces=prev if prev is not None and not prev.exited else None)
        # The event's time is the exec's ktime, the same kernel time as start_time: Tetragon's exec
        # program sets msg_common.ktime = process.ktime (bpf_execve_event.c), so its two strings
        # differ only by the jitter of converting one ktime twice (sub-µs to a few µs)
        return self._exec_event(entry, parent, entry.head["start_time"])

    def on_clone(self, rec: CloneRecord) -> None:
        parent = self.current(rec.ppid)
        if parent is None:
            self.missing_process_info += 1
            return
        self._pending[rec.pid] = (rec, parent)
        if len(self._pending) > self.cache.capacity:  # exits were lost: forget the oldest
            del self._pending[next(iter(self._pending))]
            self.cache.evictions += 1

    def on_exit(self, rec: ExitRecord) -> Event | None:
        known = self.current(rec.pid)  # a forked process that never exec'd gets its entry now
        if known is not None and known.exited and known.ktime <= rec.ktime:
            # Two threads of one group can both see signal->live == 0 when they exit together
            # (the kernel decrements before the tracepoint): the group's exit is already reported.
            return None
        entry = self.cache.exit(rec.pid)
        if entry is None:
            self.missing_process_info += 1
            return None
        parent = self.cache.get(entry.parent_exec_id)
        # Tetragon prints refcnt 1 on the exit of a process that never exec'd, none otherwise
        body: Event = {"process": entry.to_dict(1 if entry.cloned else 0)}
        if parent is not None:
            body["parent"] = parent.to_dict()
        signal, status = exit_fields(rec.exit_code)
        if signal:
            body["signal"] = signal
        if status:
            body["status"] = status
        when = self.clock.rfc3339(rec.ktime)
        body["time"] = when
        if self.opts.enable_ancestors:
            ancestors = self._ancestors(entry)
            if ancestors:
                body["ancestors"] = ancestors
        return {"process_exit": body, "node_name": self.opts.node_name, "time": when}
