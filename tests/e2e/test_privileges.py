"""binary_properties: setuid, setgid and file-capability raises, and files with no name left (fileless)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agentproc import AgentProcess, body, is_exec_of, running_agent

NOBODY = 65534


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory, "agent-priv", "--enable-process-cred")


@pytest.fixture(scope="module")
def bindir() -> Iterator[Path]:
    """A directory the nobody user can traverse (pytest's tmp dirs are root-only)."""
    d = Path(tempfile.mkdtemp(prefix="tg-priv-", dir="/var/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d)


def _copy(src: str, dst: Path, mode: int) -> Path:
    shutil.copy(src, dst)
    os.chown(dst, 0, 0)
    dst.chmod(mode)
    return dst


def _run_as_nobody(path: Path) -> int:
    """Runs `path` as uid/gid nobody; returns its pid."""
    proc = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all", str(path)]
    )
    assert proc.wait(30) == 0
    return proc.pid  # setpriv execs the target in place: same pid


def _props(agent: AgentProcess, pid: int, binary: Path) -> dict:
    return body(agent.wait_for(is_exec_of(pid, str(binary))))["process"]


def test_setuid_root_binary_run_by_nobody(agent: AgentProcess, bindir: Path) -> None:
    binary = _copy("/usr/bin/id", bindir / "id-setuid", 0o4755)
    p = _props(agent, _run_as_nobody(binary), binary)
    assert p["binary_properties"] == {
        "setuid": 0,
        "privileges_changed": ["PRIVILEGES_RAISED_EXEC_FILE_SETUID"],
    }
    assert p["uid"] == 0  # effective uid
    assert p["process_credentials"]["uid"] == NOBODY and p["process_credentials"]["euid"] == 0


def test_setgid_root_binary_run_by_nobody(agent: AgentProcess, bindir: Path) -> None:
    binary = _copy("/usr/bin/id", bindir / "id-setgid", 0o2755)
    p = _props(agent, _run_as_nobody(binary), binary)
    assert p["binary_properties"] == {
        "setgid": 0,
        "privileges_changed": ["PRIVILEGES_RAISED_EXEC_FILE_SETGID"],
    }
    assert p["process_credentials"]["gid"] == NOBODY and p["process_credentials"]["egid"] == 0


def test_file_capabilities_run_by_nobody(agent: AgentProcess, bindir: Path) -> None:
    if shutil.which("setcap") is None:
        pytest.fail("setcap (libcap2-bin) is needed; `make test` installs it")
    binary = _copy("/usr/bin/id", bindir / "id-fcap", 0o755)
    subprocess.run(["setcap", "cap_net_raw+ep", str(binary)], check=True)
    p = _props(agent, _run_as_nobody(binary), binary)
    assert p["binary_properties"] == {"privileges_changed": ["PRIVILEGES_RAISED_EXEC_FILE_CAP"]}
    assert p["cap"]["effective"] == ["CAP_NET_RAW"]
    assert p["uid"] == NOBODY


def test_no_raise_when_root_runs_setuid_root(agent: AgentProcess, bindir: Path) -> None:
    binary = _copy("/usr/bin/id", bindir / "id-setuid-root", 0o4755)
    proc = subprocess.run([str(binary)], capture_output=True, check=True)
    assert proc.returncode == 0
    ev = agent.wait_for(lambda e: "process_exec" in e and body(e)["process"].get("binary") == str(binary))
    assert "binary_properties" not in body(ev)["process"]


def _exec_fd(fd: int) -> int:
    """Runs /proc/self/fd/<fd> (fexecve-style); returns its pid."""
    code = f"import os; os.execv('/proc/self/fd/{fd}', ['fileless'])"
    proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(fd,))
    assert proc.wait(30) == 0
    return proc.pid


def test_fileless_exec_from_memfd(agent: AgentProcess) -> None:
    fd = os.memfd_create("tg-fileless", 0)
    try:
        os.write(fd, Path("/usr/bin/true").read_bytes())
        ino = os.fstat(fd).st_ino
        pid = _exec_fd(fd)
    finally:
        os.close(fd)
    p = _props(agent, pid, Path(f"/proc/self/fd/{fd}"))
    assert p["binary_properties"] == {
        "file": {"inode": {"number": str(ino), "links": 0}, "path": "/memfd:tg-fileless (deleted)"}
    }


def test_exec_of_a_deleted_file(agent: AgentProcess, bindir: Path) -> None:
    binary = _copy("/usr/bin/true", bindir / "true-deleted", 0o755)
    fd = os.open(binary, os.O_RDONLY)
    try:
        ino = os.fstat(fd).st_ino
        binary.unlink()
        pid = _exec_fd(fd)
    finally:
        os.close(fd)
    p = _props(agent, pid, Path(f"/proc/self/fd/{fd}"))
    assert p["binary_properties"] == {
        "file": {"inode": {"number": str(ino), "links": 0}, "path": f"{binary} (deleted)"}
    }


def test_no_file_property_for_a_linked_binary(agent: AgentProcess, bindir: Path) -> None:
    binary = _copy("/usr/bin/true", bindir / "true-linked", 0o755)
    proc = subprocess.Popen([str(binary)])
    assert proc.wait(30) == 0
    assert "binary_properties" not in _props(agent, proc.pid, binary)
