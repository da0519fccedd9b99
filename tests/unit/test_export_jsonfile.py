from __future__ import annotations

import errno
import gzip
import logging
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tetragon.export.jsonfile import (
    ExportError,
    JsonFileExporter,
    format_timestamp,
)
from tetragon.timefmt import parse_duration

MIB = 1024 * 1024
T0_NS = 1_704_164_645_678_000_000  # 2024-01-02T03:04:05.678Z


class FakeClock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall_ns = T0_NS

    def monotonic(self) -> float:
        return self.mono

    def time_ns(self) -> int:
        return self.wall_ns

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall_ns += int(seconds * 1e9)


def exec_event(i: int, pad: int = 0, namespace: str | None = None) -> dict[str, Any]:
    process: dict[str, Any] = {
        "exec_id": f"bm9kZToxOjE{i:06d}",
        "pid": 1000 + i,
        "uid": 0,
        "cwd": "/",
        "binary": "/usr/bin/true",
        "arguments": "x" * pad,
        "flags": "execve clone",
        "start_time": "2024-01-02T03:04:05.123456789Z",
        "auid": 4294967295,
    }
    if namespace is not None:
        process["pod"] = {"namespace": namespace, "name": "p"}
    return {"process_exec": {"process": process}, "node_name": "node-1", "time": "2024-01-02T03:04:05.123Z"}


def line(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event) + b"\n"


def make(path: Path, clock: FakeClock | None = None, **kwargs: Any) -> JsonFileExporter:
    clock = clock or FakeClock()
    return JsonFileExporter(str(path), clock=clock.monotonic, wall_clock_ns=clock.time_ns, **kwargs)


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_writes_buffered_lines_on_flush(tmp_path: Path) -> None:
    path = tmp_path / "tetragon.log"
    exp = make(path)
    events = [exec_event(i) for i in range(3)]
    assert all(exp.write(e) for e in events)
    assert path.read_bytes() == b""  # buffered until flush
    exp.flush()
    expected = b"".join(line(e) for e in events)
    assert path.read_bytes() == expected
    assert [orjson.loads(x) for x in path.read_bytes().splitlines()] == events
    assert exp.exported_events == 3
    assert exp.exported_bytes == len(expected)
    assert exp.last_exported_timestamp == 1704164645.0
    exp.close()


def test_creates_directories_and_applies_perm_despite_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        path = tmp_path / "a" / "b" / "tetragon.log"
        exp = make(path, perm=0o644)
        exp.close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        default = make(tmp_path / "default.log")
        default.close()
        assert stat.S_IMODE((tmp_path / "default.log").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_appends_to_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "tetragon.log"
    path.write_bytes(b'{"old":1}\n')
    with make(path) as exp:
        exp.write(exec_event(1))
    assert path.read_bytes() == b'{"old":1}\n' + line(exec_event(1))


@pytest.mark.parametrize("kind", ["directory", "parent-is-file", "unopenable"])
def test_unusable_path_raises_export_error(tmp_path: Path, kind: str) -> None:
    if kind == "directory":
        target, needle = tmp_path, "is a directory"
    elif kind == "parent-is-file":
        (tmp_path / "file").write_text("")
        target, needle = tmp_path / "file" / "tetragon.log", "cannot create directory"
    else:
        target, needle = Path("/proc/self/tetragon.log"), "cannot open export file"
    with pytest.raises(ExportError, match=needle) as info:
        make(target)
    assert str(target) in str(info.value)


def test_negative_rotation_interval_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="negative"):
        make(tmp_path / "x.log", rotation_interval=-1)


def test_size_rotation_exact_contents_and_backup_name(tmp_path: Path) -> None:
    path = tmp_path / "tetragon.log"
    exp = make(path, max_size_mb=1)
    events = [exec_event(i, pad=700) for i in range(2000)]
    lines = [line(e) for e in events]
    per_file = MIB // len(lines[0])
    assert len(set(map(len, lines))) == 1
    for e in events:
        exp.write(e)
    exp.flush()
    exp.close()
    backups = [n for n in files(tmp_path) if n != "tetragon.log"]
    assert re.fullmatch(r"tetragon-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}\.log", backups[0])
    assert backups[0] == "tetragon-2024-01-02T03-04-05.678.log"
    assert len(backups) == 2000 // per_file
    contents = [(tmp_path / b).read_bytes() for b in backups] + [path.read_bytes()]
    assert b"".join(contents) == b"".join(lines)
    for chunk in contents[:-1]:
        assert len(chunk) == per_file * len(lines[0]) <= MIB
    assert exp.exported_bytes == sum(map(len, lines))


def test_existing_full_file_is_rotated_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "tetragon.log"
    path.write_bytes(b"y" * MIB)
    with make(path, max_size_mb=1) as exp:
        exp.write(exec_event(0))
    assert path.read_bytes() == line(exec_event(0))
    assert (tmp_path / "tetragon-2024-01-02T03-04-05.678.log").read_bytes() == b"y" * MIB


def test_max_backups_keeps_newest(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "events.json"
    exp = make(path, clock, max_backups=2)
    for i in range(5):
        exp.write(exec_event(i))
        exp.rotate()
        exp.wait_background()
        clock.advance(1)
    exp.close()
    assert files(tmp_path) == [
        "events-2024-01-02T03-04-08.678.json",
        "events-2024-01-02T03-04-09.678.json",
        "events.json",
    ]
    assert (tmp_path / "events-2024-01-02T03-04-09.678.json").read_bytes() == line(exec_event(4))
    assert path.read_bytes() == b""


def test_same_millisecond_rotations_do_not_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "t.log"
    exp = make(path, max_backups=0)
    for i in range(3):
        exp.write(exec_event(i))
        exp.rotate()
    exp.close()
    assert files(tmp_path) == [
        "t-2024-01-02T03-04-05.678.log",
        "t-2024-01-02T03-04-05.679.log",
        "t-2024-01-02T03-04-05.680.log",
        "t.log",
    ]


def test_compress_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "tetragon.log"
    exp = make(path, compress=True, perm=0o640)
    events = [exec_event(i) for i in range(10)]
    for e in events:
        exp.write(e)
    exp.rotate()
    exp.wait_background()
    exp.write(exec_event(99))
    exp.close()
    assert files(tmp_path) == ["tetragon-2024-01-02T03-04-05.678.log.gz", "tetragon.log"]
    gz = tmp_path / "tetragon-2024-01-02T03-04-05.678.log.gz"
    assert gzip.decompress(gz.read_bytes()) == b"".join(line(e) for e in events)
    assert stat.S_IMODE(gz.stat().st_mode) == 0o640
    assert path.read_bytes() == line(exec_event(99))


def test_rotation_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "tetragon.log"
    exp = make(path, clock, rotation_interval=parse_duration("1m"))
    exp.write(exec_event(1))
    exp.flush()
    clock.advance(30)
    exp.flush()
    assert files(tmp_path) == ["tetragon.log"]
    exp.write(exec_event(2))
    clock.advance(31)
    exp.flush()  # due: the buffered event goes to the old file, then it is rotated
    assert files(tmp_path) == ["tetragon-2024-01-02T03-05-06.678.log", "tetragon.log"]
    assert (tmp_path / "tetragon-2024-01-02T03-05-06.678.log").read_bytes() == line(exec_event(1)) + line(
        exec_event(2)
    )
    exp.write(exec_event(3))
    exp.close()
    assert path.read_bytes() == line(exec_event(3))


def test_allow_deny_field_filters_and_redaction(tmp_path: Path) -> None:
    path = tmp_path / "tetragon.log"
    exp = make(
        path,
        allow=[{"event_set": ["PROCESS_EXEC"]}],
        deny=[{"namespace": ["kube-system"]}],
        field_filters=[{"fields": "process.pid,process.arguments", "action": "INCLUDE"}],
        redaction=[{"redact": [r"--token=(\S+)"]}],
    )
    secret = exec_event(1)
    secret["process_exec"]["process"]["arguments"] = "--token=abc -v"
    assert exp.write(secret) is True
    assert exp.write(exec_event(2, namespace="kube-system")) is False
    assert exp.write({"process_exit": {"process": {"pid": 1}}, "node_name": "n"}) is False
    exp.close()
    assert orjson.loads(path.read_bytes()) == {
        "process_exec": {"process": {"pid": 1001, "arguments": "--token=***** -v"}},
        "node_name": "node-1",
        "time": "2024-01-02T03:04:05.123Z",
    }
    assert secret["process_exec"]["process"]["arguments"] == "--token=abc -v"  # caller's event untouched
    assert exp.exported_events == 1


def test_rate_limit_drops_and_reports(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "tetragon.log"
    exp = make(path, clock, rate_limit=2, node_name="node-1")
    results = [exp.write(exec_event(i)) for i in range(5)]
    assert results == [True, True, False, False, False]
    assert exp.ratelimit_dropped == 3
    exp.flush()
    assert path.read_bytes().count(b"\n") == 2
    clock.advance(60)
    exp.flush()
    last = orjson.loads(path.read_bytes().splitlines()[-1])
    assert last == {
        "rate_limit_info": {"number_of_dropped_process_events": "3"},
        "node_name": "node-1",
        "time": format_timestamp(clock.wall_ns),
    }
    # The bucket refilled (2 per minute): two more pass; a window without drops writes no report.
    assert [exp.write(exec_event(i)) for i in range(2)] == [True, True]
    clock.advance(60)
    exp.close()
    assert path.read_bytes().count(b"rate_limit_info") == 1
    assert exp.exported_events == 4


def test_rate_limit_zero_disables_export(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "tetragon.log"
    exp = make(path, clock, rate_limit=0)
    assert not any(exp.write(exec_event(i)) for i in range(4))
    clock.advance(61)
    exp.close()
    only = orjson.loads(path.read_bytes())
    assert only["rate_limit_info"] == {"number_of_dropped_process_events": "4"}
    assert "node_name" not in only


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_keeps_events_and_recovers(tiny_tmpfs: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tiny_tmpfs / "tetragon.log"
    exp = make(path)
    events = [exec_event(i, pad=300) for i in range(400)]  # ~200 KiB, the fs holds 64 KiB
    expected = b"".join(line(e) for e in events)
    caplog.set_level(logging.WARNING, logger="tetragon.export.jsonfile")
    for e in events:
        assert exp.write(e)
    exp.flush()
    exp.flush()
    assert exp.write_errors >= 2
    assert 0 < path.stat().st_size < len(expected)
    assert exp.buffered_bytes == len(expected) - path.stat().st_size
    warnings = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(warnings) == 1  # one warning per error streak
    assert "No space left on device" in warnings[0].getMessage()

    subprocess.run(["mount", "-o", "remount,size=1m", str(tiny_tmpfs)], check=True)
    exp.flush()
    assert exp.buffered_bytes == 0
    assert path.read_bytes() == expected  # nothing lost, nothing duplicated
    assert exp.exported_bytes == len(expected)
    assert any("works again" in r.getMessage() for r in caplog.records)
    exp.close()


def test_buffer_is_bounded_while_failing(tiny_tmpfs: Path) -> None:
    path = tiny_tmpfs / "tetragon.log"
    exp = make(path, max_buffer_bytes=100_000)
    accepted = [exp.write(exec_event(i, pad=300)) for i in range(400)]
    exp.flush()
    assert accepted.count(True) * len(line(exec_event(0, pad=300))) <= 100_000
    assert exp.failed_events == accepted.count(False) > 0
    exp.close()


def test_partial_line_is_finished_in_the_same_file_before_rotating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tetragon.log"
    exp = make(path, max_size_mb=1)
    events = [exec_event(i, pad=900) for i in range(1200)]
    real_write = os.write
    calls = {"n": 0}

    def flaky_write(fd: int, data: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[: MIB - 500])  # stop inside a line, near the limit
        if calls["n"] == 2:
            raise OSError(errno.EIO, "Input/output error")
        return real_write(fd, data)

    monkeypatch.setattr("tetragon.export.rotation.os.write", flaky_write)
    for e in events:
        exp.write(e)
    exp.flush()
    assert exp.write_errors == 1
    exp.flush()
    exp.close()
    names = files(tmp_path)
    assert len(names) == 2
    backup = (tmp_path / names[0]).read_bytes()
    assert backup.endswith(b"\n") and len(backup) <= MIB
    assert backup + path.read_bytes() == b"".join(line(e) for e in events)
    assert all(orjson.loads(x) for x in path.read_bytes().splitlines())


def test_parse_helpers() -> None:
    assert parse_duration("0") == 0
    assert parse_duration("90s") == 90
    assert parse_duration("1h30m") == 5400
    assert parse_duration("1.5h") == 5400
    assert parse_duration("250ms") == pytest.approx(0.25)
    assert parse_duration("-2m") == -120
    for bad in ("", "10", "1x", "h", "--1s"):
        with pytest.raises(ValueError, match="invalid duration"):
            parse_duration(bad)
    assert format_timestamp(T0_NS) == "2024-01-02T03:04:05.678Z"
    assert format_timestamp(T0_NS - 678_000_000) == "2024-01-02T03:04:05Z"
    assert format_timestamp(T0_NS + 1) == "2024-01-02T03:04:05.678000001Z"
    assert format_timestamp(T0_NS + 1000) == "2024-01-02T03:04:05.678001Z"


def test_accepts_compiled_field_filters_and_redaction(tmp_path: Path) -> None:
    from tetragon.export.fieldfilters import compile_field_filters
    from tetragon.export.redaction import compile_redaction, parse_redaction_filter_lines

    path = tmp_path / "t.log"
    exp = make(
        path,
        field_filters=compile_field_filters([{"fields": "process.arguments"}]),
        redaction=compile_redaction(parse_redaction_filter_lines('{"redact":["(x+)"]}')),
    )
    exp.write(exec_event(1, pad=3))
    exp.close()
    assert orjson.loads(path.read_bytes())["process_exec"] == {"process": {"arguments": "*****"}}
