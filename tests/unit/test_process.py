"""Pure pieces of the process model and the process cache."""

from __future__ import annotations

import sys

from tetragon.process.cache import ProcessCache, ProcessEntry
from tetragon.process.events import ProcessEvents
from tetragon.process.model import (
    CloneRecord,
    ExecInfo,
    ExitRecord,
    cap_names,
    container_id,
    exec_id,
    exit_fields,
    format_flags,
    format_timestamp,
    quote_arguments,
    securebit_names,
)


def test_exec_id_matches_tetragon() -> None:
    # from Tetragon's testdata/events.json: decodes to gke-...-l8zr:13665822624856:68790
    assert (
        exec_id("gke-michi-22038-default-pool-43730fab-l8zr", 13665822624856, 68790)
        == "Z2tlLW1pY2hpLTIyMDM4LWRlZmF1bHQtcG9vbC00MzczMGZhYi1sOHpyOjEzNjY1ODIyNjI0ODU2OjY4Nzkw"
    )


def test_exit_fields() -> None:
    assert exit_fields(3 << 8) == ("", 3)
    assert exit_fields(0) == ("", 0)
    assert exit_fields(9) == ("SIGKILL", 0)
    assert exit_fields(0x80 | 11) == ("SIGSEGV", 0)  # core dumped
    assert exit_fields(15) == ("SIGTERM", 0)


def test_arguments_quoting() -> None:
    # Tetragon's ArgsDecoder: a quoted argument always brings its leading space, empty leading
    # arguments vanish, later empty ones leave a double space
    assert quote_arguments(["-c", "curl https://x"]) == '-c "curl https://x"'
    assert quote_arguments(["it's", 'q"d']) == "it's q\"d"
    assert quote_arguments([]) == ""
    assert quote_arguments(["a b", "c"]) == ' "a b" c'
    assert quote_arguments(["", "", "x", "y"]) == "x y"
    assert quote_arguments(["", "a b"]) == ' "a b"'
    assert quote_arguments(["x", "", "y"]) == "x  y"
    assert quote_arguments(["a b", ""]) == ' "a b" '
    assert quote_arguments([""]) == ""


def test_flags_order() -> None:
    assert format_flags({"clone", "rootcwd", "execve"}) == "execve rootcwd clone"
    assert format_flags({"truncArgs", "procFS"}) == "procFS truncArgs"


def test_caps_and_securebits() -> None:
    assert cap_names(0b11) == ["CAP_CHOWN", "DAC_OVERRIDE"]
    assert cap_names(1 << 21) == ["CAP_SYS_ADMIN"]
    assert cap_names(1 << 40) == ["CAP_CHECKPOINT_RESTORE"]
    assert securebit_names(1 | 16) == ["SecBitNoRoot", "SecBitKeepCaps"]


def test_container_id_from_cgroup_names() -> None:
    cid = "19a02291e106ce6227b684197be232ea57c4e1a5ab2604a12608c325d701c7f4"
    assert container_id(f"cri-containerd-{cid}.scope") == cid
    assert container_id(f"docker-{cid}.scope") == cid
    assert container_id(cid) == cid
    assert container_id("session-3.scope") == ""
    assert container_id("") == ""


def test_timestamps() -> None:
    assert format_timestamp(1666062978273546829) == "2022-10-18T03:16:18.273546829Z"
    assert format_timestamp(1666062978000000000) == "2022-10-18T03:16:18Z"
    assert format_timestamp(1666062978100000000) == "2022-10-18T03:16:18.100Z"
    assert format_timestamp(1666062978000001000) == "2022-10-18T03:16:18.000001Z"


def _entry(eid: str, pid: int, parent: str = "") -> ProcessEntry:
    return ProcessEntry(
        exec_id=eid, pid=pid, ktime=pid, parent_exec_id=parent, head={"exec_id": eid, "pid": pid}
    )


def test_cache_refcounts_follow_children() -> None:
    c = ProcessCache(capacity=100, gc_interval=0.0)
    c.add(_entry("init", 1))
    c.add(_entry("sh", 10, "init"))
    c.add(_entry("ls", 11, "sh"))
    assert [c.get(x).refcnt for x in ("init", "sh", "ls")] == [2, 2, 1]
    assert c.by_pid(11).exec_id == "ls"
    assert c.exit(11).exec_id == "ls"
    assert c.get("ls").refcnt == 0 and c.get("sh").refcnt == 1
    assert c.exit(11) is None  # twice: a miss
    assert c.misses_remove == 1
    # the parent stays resolvable until gc; gc drops only zero-refcount entries
    assert c.gc(now=1e12) == 1
    assert c.get("ls") is None and c.get("sh") is not None


def test_cache_exec_replaces_clone() -> None:
    c = ProcessCache(capacity=100)
    c.add(_entry("sh", 10))
    c.add(_entry("clone", 12, "sh"))
    assert c.get("sh").refcnt == 2
    c.add(_entry("exec", 12, "sh"), replaces=c.by_pid(12))
    assert c.by_pid(12).exec_id == "exec"
    assert c.get("clone") is None  # replaced and unreferenced: dropped at once
    assert c.get("sh").refcnt == 2  # held by the exec, no longer by the clone


def test_cache_exec_keeps_a_replaced_image_its_children_still_name() -> None:
    c = ProcessCache(capacity=100)
    c.add(_entry("sh", 10))
    c.add(_entry("clone", 12, "sh"))
    c.add(_entry("grandchild", 13, "clone"))  # forked by the clone before it exec'd
    c.add(_entry("exec", 12, "sh"), replaces=c.by_pid(12))
    assert c.get("clone") is not None and c.get("clone").exited and c.get("clone").refcnt == 1


def test_cache_ancestors_end_at_init_as_in_tetragon() -> None:
    c = ProcessCache(capacity=100)
    c.add(_entry("kernel", 0, "kernel"))
    c.add(_entry("init", 1, "kernel"))
    c.add(_entry("sshd", 500, "init"))
    c.add(_entry("bash", 600, "sshd"))
    c.add(_entry("ls", 700, "bash"))
    assert [e.exec_id for e in c.ancestors(c.get("ls"))] == ["sshd", "init"]
    assert c.ancestors(c.get("sshd")) == []  # the parent is init: no ancestors beyond it


def test_cache_ancestors_and_capacity() -> None:
    c = ProcessCache(capacity=4)
    c.add(_entry("a", 11))
    c.add(_entry("b", 12, "a"))
    c.add(_entry("c", 13, "b"))
    c.add(_entry("d", 14, "c"))
    assert [e.exec_id for e in c.ancestors(c.get("d"))] == ["b", "a"]
    c.exit(14)
    c.add(_entry("e", 15, "c"))  # over capacity: the exited entry goes first
    assert len(c) <= 4 and c.get("d") is None and c.evictions >= 1


def test_cache_tables_shrink_after_a_burst_is_collected() -> None:
    c = ProcessCache(capacity=1 << 20, gc_interval=0.0)
    c.add(_entry("init", 1))
    burst = 20_000
    for pid in range(100, 100 + burst):
        c.add(_entry(f"p{pid}", pid, "init"))
        c.exit(pid)
    full = sys.getsizeof(c._by_exec) + sys.getsizeof(c._by_pid)
    assert c.gc(now=1e12) == burst
    assert len(c) == 1 and c.get("init").refcnt == 1 and c.by_pid(1) is c.get("init")
    # a dict keeps its largest table when entries leave: the collection rebuilt both
    assert sys.getsizeof(c._by_exec) + sys.getsizeof(c._by_pid) < full // 100
    c.add(_entry("sh", 10, "init"))  # the rebuilt tables are the live ones
    assert c.by_pid(10).exec_id == "sh" and c.get("init").refcnt == 2


def _events() -> ProcessEvents:
    from tetragon.process.events import ProcessOptions

    return ProcessEvents(ProcessCache(capacity=100), ProcessOptions(node_name="n"))


def _exec_info(pid: int, ppid: int, ktime: int, binary: str) -> ExecInfo:
    return ExecInfo(
        ktime=ktime, pid=pid, tid=pid, ppid=ppid, binary=binary, argv=[binary, "x"], cwd="/", flags={"execve"}
    )


def test_fork_without_exec_exits_as_a_copy_of_its_parent() -> None:
    ev = _events()
    ev.on_exec(_exec_info(10, 1, 100, "/bin/sh"))
    ev.on_clone(CloneRecord(ktime=200, pid=11, tid=11, ppid=10, nspid=11))
    ev.on_clone(CloneRecord(ktime=300, pid=12, tid=12, ppid=11, nspid=12))  # a fork of the fork
    out = ev.on_exit(ExitRecord(ktime=400, pid=12, tid=12, exit_code=3 << 8))
    assert out is not None
    body = out["process_exit"]
    assert body["process"]["pid"] == 12 and body["process"]["binary"] == "/bin/sh"
    # Tetragon: flags `execve` (fork's common flag 0x01 read with the process flag table), refcnt 1,
    # and no refcnt on the parent
    assert body["process"]["flags"] == "execve"
    assert body["process"]["refcnt"] == 1
    assert body["process"]["exec_id"] == exec_id("n", 300, 12)
    assert body["parent"]["pid"] == 11 and body["parent"]["exec_id"] == exec_id("n", 200, 11)
    assert "refcnt" not in body["parent"]
    assert body["status"] == 3


def test_exec_after_fork_is_flagged_clone_and_parented() -> None:
    ev = _events()
    ev.on_exec(_exec_info(10, 1, 100, "/bin/sh"))
    ev.on_clone(CloneRecord(ktime=200, pid=11, tid=11, ppid=10, nspid=11))
    out = ev.on_exec(_exec_info(11, 10, 250, "/bin/ls"))
    p = out["process_exec"]["process"]
    assert p["flags"] == "execve clone"
    assert p["parent_exec_id"] == exec_id("n", 100, 10)
    assert out["process_exec"]["parent"]["binary"] == "/bin/sh"
    again = ev.on_exec(_exec_info(11, 10, 260, "/bin/cat"))  # exec of an exec: no clone flag
    assert again["process_exec"]["process"]["flags"] == "execve"
    # no fork: Tetragon's parent is the pid's previous image
    assert again["process_exec"]["parent"]["binary"] == "/bin/ls"
    assert again["process_exec"]["process"]["parent_exec_id"] == exec_id("n", 250, 11)


def test_a_second_exit_record_of_the_same_group_is_ignored() -> None:
    ev = _events()
    ev.on_exec(_exec_info(10, 1, 100, "/bin/sh"))
    assert ev.on_exit(ExitRecord(ktime=200, pid=10, tid=11, exit_code=5 << 8)) is not None
    missing = ev.missing_process_info
    assert ev.on_exit(ExitRecord(ktime=201, pid=10, tid=10, exit_code=5 << 8)) is None
    assert ev.missing_process_info == missing  # a duplicate, not a process we do not know


def test_wall_stamps_equal_format_timestamp() -> None:
    from tetragon.timefmt import WallStamps, format_timestamp

    base = 1_700_000_000 * 10**9
    walls = [base + d for d in (459_142_916, 459_142_917, 0, 7, 123_000, 5_000_000, 999_999_999)]
    walls += [base - 1, base + 10**9 + 1, base + 10**9, base + 3]  # back a second, on, back again
    stamps = WallStamps()
    for wall in walls:
        assert stamps.stamp(wall) == format_timestamp(wall).encode(), wall
        assert stamps.seconds == float(wall // 10**9)
