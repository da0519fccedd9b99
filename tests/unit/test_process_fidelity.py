"""Process events field by field as Tetragon prints them (issue 14): key order, refcnt, in_init_tree,
flags of fork-only processes, the parent of an exec without a fork, procFS start-up events."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from tetragon.events.compact import format_compact
from tetragon.process import procfs
from tetragon.process.cache import ProcessCache
from tetragon.process.events import ProcessEvents, ProcessOptions
from tetragon.process.model import CloneRecord, ExecInfo, ExitRecord, exec_id

NODE = "n"


def _events() -> ProcessEvents:
    return ProcessEvents(ProcessCache(capacity=100), ProcessOptions(node_name=NODE))


def _info(pid: int, ppid: int, ktime: int, argv: list[str], flags: tuple[str, ...] = ("execve",)) -> ExecInfo:
    return ExecInfo(
        ktime=ktime, pid=pid, tid=pid, ppid=ppid, binary=argv[0], argv=argv, cwd="/", flags=set(flags)
    )


def _process(ev: ProcessEvents, pid: int) -> dict[str, object]:
    entry = ev.cache.get_by_pid(pid)
    assert entry is not None
    return entry.to_dict()


def test_exec_event_process_and_parent_exactly() -> None:
    ev = _events()
    ev.on_exec(_info(10, 1, 100, ["/bin/bash"], ("execve", "rootcwd")))
    ev.on_clone(CloneRecord(ktime=200, pid=11, tid=11, ppid=10, nspid=11))
    out = ev.on_exec(_info(11, 10, 250, ["/bin/sh", "-c", "echo hi"], ("execve", "rootcwd")))
    assert out == {
        "process_exec": {
            "process": {
                "exec_id": exec_id(NODE, 250, 11),
                "pid": 11,
                "uid": 0,
                "cwd": "/",
                "binary": "/bin/sh",
                "arguments": '-c "echo hi"',
                "flags": "execve rootcwd clone",
                "start_time": ev.clock.rfc3339(250),
                "auid": 4294967295,
                "parent_exec_id": exec_id(NODE, 100, 10),
                "tid": 11,
                "in_init_tree": False,  # a BoolValue: printed when false; no refcnt on exec events
            },
            "parent": {
                "exec_id": exec_id(NODE, 100, 10),
                "pid": 10,
                "uid": 0,
                "cwd": "/",
                "binary": "/bin/bash",
                "flags": "execve rootcwd",
                "start_time": ev.clock.rfc3339(100),
                "auid": 4294967295,
                "tid": 10,
                "in_init_tree": False,
            },
        },
        "node_name": NODE,
        "time": ev.clock.rfc3339(250),
    }
    # key order is the proto's: in_init_tree (20) after tid (16)
    assert list(out["process_exec"]["process"])[-2:] == ["tid", "in_init_tree"]
    exit_ev = ev.on_exit(ExitRecord(ktime=300, pid=11, tid=11, exit_code=0))
    assert exit_ev is not None
    body = exit_ev["process_exit"]
    assert "refcnt" not in body["process"] and "refcnt" not in body["parent"]
    assert body["process"]["in_init_tree"] is False and body["parent"]["in_init_tree"] is False


def test_leading_quoted_argument_in_exec_and_compact() -> None:
    ev = _events()
    out = ev.on_exec(_info(10, 1, 100, ["/bin/echo", "", "a b", "c"]))
    assert out["process_exec"]["process"]["arguments"] == ' "a b" c'
    assert format_compact(out) == '🚀 process n /bin/echo " \\"a b\\" c"'


def test_exec_without_fork_has_the_previous_image_as_parent() -> None:
    """`env X=1 /bin/true` from bash: env execs true in the same pid."""
    ev = _events()
    ev.on_exec(_info(10, 1, 100, ["/bin/bash"]))
    ev.on_clone(CloneRecord(ktime=200, pid=11, tid=11, ppid=10, nspid=11))
    ev.on_exec(_info(11, 10, 210, ["/usr/bin/env", "X=1", "/bin/true"]))
    out = ev.on_exec(_info(11, 10, 220, ["/bin/true"]))
    env_id = exec_id(NODE, 210, 11)
    assert out["process_exec"]["process"]["flags"] == "execve"
    assert out["process_exec"]["process"]["parent_exec_id"] == env_id
    assert out["process_exec"]["parent"]["exec_id"] == env_id
    assert out["process_exec"]["parent"]["binary"] == "/usr/bin/env"
    exit_ev = ev.on_exit(ExitRecord(ktime=300, pid=11, tid=11, exit_code=0))
    assert exit_ev is not None
    assert exit_ev["process_exit"]["process"]["binary"] == "/bin/true"
    assert exit_ev["process_exit"]["parent"]["exec_id"] == env_id


def test_fork_only_process_flags_and_refcnt() -> None:
    ev = _events()
    ev.on_exec(_info(10, 1, 100, ["/bin/bash"], ("execve", "rootcwd")))
    ev.on_clone(CloneRecord(ktime=200, pid=11, tid=11, ppid=10, nspid=11))
    out = ev.on_exit(ExitRecord(ktime=300, pid=11, tid=11, exit_code=0))
    assert out is not None
    process = out["process_exit"]["process"]
    assert process["flags"] == "execve"
    assert process["refcnt"] == 1
    keys = list(process)
    assert keys.index("parent_exec_id") + 1 == keys.index("refcnt")  # field 13 after field 12
    assert "refcnt" not in out["process_exit"]["parent"]


def test_policy_event_process_has_the_live_refcnt() -> None:
    ev = _events()
    ev.on_exec(_info(10, 1, 100, ["/bin/bash"]))
    ev.on_clone(CloneRecord(ktime=200, pid=11, tid=11, ppid=10, nspid=11))
    ev.on_exec(_info(11, 10, 210, ["/bin/sleep", "1"], ("execve", "clone")))
    bash = ev.cache.get_by_pid(10)
    assert bash is not None
    assert orjson.loads(bash.json_with_tid(10))["refcnt"] == 2  # itself and its child
    assert "refcnt" not in orjson.loads(bash.json())  # as a parent


def _fake_proc(root: Path, pid: int, ppid: int, comm: str, *, cwd: str | None, kthread: bool = False) -> None:
    d = root / str(pid)
    (d / "ns").mkdir(parents=True)
    flags = 0x00200000 if kthread else 0x00400000
    # pid (comm) state ppid pgrp session tty tpgid flags ... starttime is field 22
    fields = ["S", str(ppid), "0", "0", "0", "0", str(flags)] + ["0"] * 12 + [str(pid * 10)]
    (d / "stat").write_bytes(f"{pid} ({comm}) ".encode() + " ".join(fields).encode())
    (d / "status").write_text(f"Name:\t{comm}\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nNSpid:\t{pid}\n")
    (d / "cmdline").write_bytes(b"" if kthread else f"/bin/{comm}\0-x\0".encode())
    if not kthread:
        os.symlink(f"/bin/{comm}", d / "exe")
    if cwd is not None:
        os.symlink(cwd, d / "cwd")


def test_procfs_cwd_flags(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 1, 0, "init", cwd="/")
    _fake_proc(tmp_path, 5, 1, "sh", cwd=None)
    _fake_proc(tmp_path, 6, 1, "vi", cwd="/home")
    infos = {i.pid: i for i in procfs.scan(str(tmp_path))}
    assert infos[1].flags == {"procFS", "rootcwd"}
    assert infos[5].flags == {"procFS", "rootcwd", "errorCWD"}
    assert infos[6].flags == {"procFS"}


def test_procfs_startup_events(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 1, 0, "init", cwd="/")
    _fake_proc(tmp_path, 2, 0, "kthreadd", cwd="/", kthread=True)
    _fake_proc(tmp_path, 3, 2, "kworker", cwd="/", kthread=True)
    _fake_proc(tmp_path, 7, 1, "sh", cwd=None)
    ev = _events()
    events = ev.seed_procfs(procfs.scan(str(tmp_path)))
    kernel_id = exec_id(NODE, 1, 0)
    # `<kernel>` first, then every process but kernel threads
    assert [e["process_exec"]["process"]["pid"] for e in events] == [0, 1, 7]
    kernel = events[0]["process_exec"]
    assert kernel["process"] == {
        "exec_id": kernel_id,
        "pid": 0,
        "uid": 0,
        "binary": "<kernel>",
        "flags": "procFS",
        "start_time": ev.clock.rfc3339(1),
        "auid": 4294967295,
        "parent_exec_id": kernel_id,
        "in_init_tree": False,
    }
    assert kernel["parent"]["exec_id"] == kernel_id
    init = events[1]["process_exec"]
    assert init["process"]["flags"] == "procFS rootcwd"
    assert init["process"]["arguments"] == "-x"
    assert init["process"]["parent_exec_id"] == kernel_id and init["parent"]["binary"] == "<kernel>"
    assert events[2]["process_exec"]["process"]["flags"] == "procFS rootcwd errorCWD"
    assert "refcnt" not in init["process"] and "refcnt" not in init["parent"]
    # kernel threads are cached: their events name them
    kworker = ev.cache.get_by_pid(3)
    assert kworker is not None and kworker.parent_exec_id == ev.cache.get_by_pid(2).exec_id  # type: ignore[union-attr]


def test_event_time_versus_start_time(tmp_path: Path) -> None:
    """Tetragon's top-level `time` is the event's own ktime: for a process_exec the same kernel time as
    start_time (its exec program sets msg_common.ktime = process.ktime), for a process_exit the exit's.
    It reads that ktime as CLOCK_MONOTONIC, so on a machine that was suspended (boot time ahead of
    monotonic by the time asleep) the /proc scan's events, whose ktime is the boot-based starttime,
    have a `time` after their start_time by exactly that."""
    asleep = 3_600_000_000_000  # one hour suspended
    ev = _events()
    ev.clock.offset = 1_700_000_000_000_000_000
    ev.clock.monotonic_offset = ev.clock.offset + asleep
    _fake_proc(tmp_path, 1, 0, "init", cwd="/")
    kernel, init = ev.seed_procfs(procfs.scan(str(tmp_path)))
    starttime = ev.cache.get_by_pid(1).ktime  # type: ignore[union-attr]
    assert kernel["process_exec"]["process"]["start_time"] == "2023-11-14T22:13:20.000000001Z"
    assert kernel["time"] == "2023-11-14T23:13:20.000000001Z"
    assert init["process_exec"]["process"]["start_time"] == ev.clock.rfc3339(starttime)
    assert init["time"] == ev.clock.rfc3339(starttime + asleep)
    # kernel-seen events: one boot-based ktime, the same wall time for time and start_time
    ev.on_clone(CloneRecord(ktime=5_000, pid=20, tid=20, ppid=1, nspid=20))
    out = ev.on_exec(_info(20, 1, 900_000_000, ["/bin/true"]))
    assert out["time"] == out["process_exec"]["process"]["start_time"] == "2023-11-14T22:13:20.900Z"
    exit_event = ev.on_exit(ExitRecord(ktime=1_250_000_000, pid=20, tid=20, exit_code=0))
    assert exit_event is not None
    assert exit_event["time"] == exit_event["process_exit"]["time"] == "2023-11-14T22:13:21.250Z"
    assert exit_event["process_exit"]["process"]["start_time"] == out["time"]


def test_refcnt_ops_count_each_reference_change() -> None:
    """The process-cache dump's refcnt_ops, as Tetragon keys them: process++ at the entry's making,
    process-- at its exit (or a new exec of its pid), parent++/parent-- per child."""
    ev = _events()
    ev.on_exec(_info(10, 1, 100, ["/bin/bash"]))
    for child, ktime in ((11, 200), (12, 300)):
        ev.on_clone(CloneRecord(ktime=ktime, pid=child, tid=child, ppid=10, nspid=child))
        ev.on_exec(_info(child, 10, ktime + 10, ["/bin/true"]))
    ev.on_exit(ExitRecord(ktime=400, pid=11, tid=11, exit_code=0))
    bash = ev.cache.get_by_pid(10)
    assert bash is not None
    assert bash.refcnt_ops() == {"process++": 1, "parent++": 2, "parent--": 1}
    assert bash.refcnt == 1 + 2 - 1
    env = ev.cache.get_by_pid(12)
    assert env is not None
    ev.on_exec(_info(12, 10, 500, ["/bin/echo"]))  # an exec without a fork replaces the image
    # the old image releases itself and its reference on bash; the new one's parent is the old one
    assert env.refcnt_ops() == {"process++": 1, "process--": 1, "parent++": 1}
    assert bash.refcnt_ops() == {"process++": 1, "parent++": 2, "parent--": 2}
    exited = ev.cache.get(exec_id(NODE, 210, 11))
    assert exited is not None and exited.refcnt_ops() == {"process++": 1, "process--": 1}
