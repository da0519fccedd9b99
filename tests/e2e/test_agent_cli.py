"""The `tetragon` command: bad input gets one clear line and a non-zero exit; shutdown detaches all."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, require_bpf
from tests.e2e.agentproc import AgentProcess

TETRAGON = str(VENV_BIN / "tetragon")


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TETRAGON, *args], capture_output=True, text=True, timeout=timeout)


def _one_clear_line(res: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("tetragon:") or "error:" in line]
    assert len(errors) == 1, res.stderr
    return errors[0]


def test_unknown_flag() -> None:
    res = _run("--no-such-flag")
    assert res.returncode == 2
    assert "--no-such-flag" in _one_clear_line(res)


def test_bad_flag_value() -> None:
    res = _run("--export-file-max-size-mb", "ten")
    assert res.returncode == 2
    assert "ten" in _one_clear_line(res)


def test_kernel_without_btf(tmp_path: Path) -> None:
    res = _run("--btf", str(tmp_path / "no-vmlinux"), "--server-address", "")
    assert res.returncode == 1
    assert "BTF" in _one_clear_line(res)


def test_unprivileged_user_is_told_what_is_missing(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop privileges")
    res = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            TETRAGON,
            "--server-address",
            "",
            "--run-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1
    line = _one_clear_line(res)
    assert "needs root" in line and "CAP_BPF" in line


def test_unwritable_export_path(tmp_path: Path) -> None:
    require_bpf()
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = _run(
        "--export-filename",
        str(blocker / "sub" / "events.log"),
        "--server-address",
        "",
        "--run-dir",
        str(tmp_path),
    )
    assert res.returncode == 1
    assert str(blocker) in _one_clear_line(res)


def test_port_in_use(tmp_path: Path) -> None:
    require_bpf()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = _run("--server-address", f"127.0.0.1:{port}", "--run-dir", str(tmp_path))
    assert res.returncode == 1
    assert f"127.0.0.1:{port}" in _one_clear_line(res)


def _bpf_ids(pid: int) -> tuple[set[int], set[int]]:
    """prog and link ids held open by a process, from its fdinfo."""
    progs: set[int] = set()
    links: set[int] = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        if m := re.search(r"^link_id:\s+(\d+)", text, re.M):
            links.add(int(m.group(1)))
        elif m := re.search(r"^prog_id:\s+(\d+)", text, re.M):
            progs.add(int(m.group(1)))
    return progs, links


def _exists(kind: str, ident: int) -> bool:
    res = subprocess.run(["bpftool", kind, "show", "id", str(ident)], capture_output=True, text=True)
    return res.returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_detaches_everything(tmp_path: Path, sig: int) -> None:
    require_bpf()
    agent = AgentProcess(tmp_path)
    agent.wait_ready()
    progs, links = _bpf_ids(agent.proc.pid)
    assert len(links) == 3 and len(progs) >= 3, (progs, links)
    assert all(_exists("link", i) for i in links)
    assert agent.stop(sig) == 0, agent.stderr()
    assert not any(_exists("link", i) for i in links)
    assert not any(_exists("prog", i) for i in progs)
    assert "Traceback" not in agent.stderr()
