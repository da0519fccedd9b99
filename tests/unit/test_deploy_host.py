"""Deploying without Kubernetes: the container image recipe, the systemd unit and deploy/install.sh."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "tetragon.service"


def _unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def _makefile_apt_packages() -> set[str]:
    match = re.search(r"^APT_PKGS := (.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match
    return set(match.group(1).split())


def test_dockerfile_builds_bpf_objects_in_the_image() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?", text, re.MULTILINE)
    assert [name for _, name in stages] == ["build", ""]
    build_stage, runtime_stage = text.split("\nFROM ${PYTHON_IMAGE}\n")
    # the build stage installs the Makefile's BPF build tools and builds the objects and the package
    build_tools = {"clang-19", "llvm-19", "libbpf-dev", "bpftool", "libelf-dev", "make"}
    assert build_tools <= _makefile_apt_packages()
    assert all(re.search(rf"\s{re.escape(p)}\s", build_stage) for p in build_tools)
    assert "make -C bpf" in build_stage and "pip install --no-cache-dir ." in build_stage
    # the runtime stage has what the agent loads at run time, and the venv
    assert "libbpf1" in runtime_stage and "COPY --from=build /opt/tetragon /opt/tetragon" in runtime_stage
    assert 'ENTRYPOINT ["tetragon"]' in runtime_stage
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {".git", ".venv", "src/tetragon/_bpfobj"} <= set(ignored)


def test_systemd_unit() -> None:
    unit = _unit(UNIT.read_text())
    assert unit["Service"]["ExecStart"] == "/usr/local/bin/tetragon"
    assert unit["Service"]["Restart"] == "on-failure"
    assert unit["Service"]["User"] == "root"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert unit["Unit"]["After"] == "network.target local-fs.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_install_script_stages_a_working_host_install(tmp_path: Path) -> None:
    """deploy/install.sh into a staging root: venv with the BPF objects, commands, unit, drop-in."""
    root = tmp_path / "root"
    env = {**os.environ, "DESTDIR": str(root), "PYTHON": sys.executable, "PIP_ARGS": "--no-deps"}
    subprocess.run(["sh", str(DEPLOY / "install.sh")], env=env, check=True, capture_output=True, timeout=300)
    venv = root / "usr/local/lib/tetragon-py"
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert {p.name for p in (site / "tetragon/_bpfobj").glob("*.bpf.o")} >= {"process.bpf.o", "generic.bpf.o"}
    assert (site / "tetragon/k8s/gen/cri/api_pb2_grpc.py").is_file()
    assert os.readlink(root / "usr/local/bin/tetragon") == "/usr/local/lib/tetragon-py/bin/tetragon"
    assert (
        root / "etc/tetragon/tetragon.conf.d/export-filename"
    ).read_text() == "/var/log/tetragon/tetragon.log\n"
    installed = root / "etc/systemd/system/tetragon.service"
    assert installed.read_text() == UNIT.read_text()
    # systemd itself checks the unit; ExecStart must exist, so point it at the staged command
    staged = tmp_path / "tetragon.service"
    staged.write_text(installed.read_text().replace("/usr/local/bin/tetragon", str(venv / "bin/tetragon")))
    verify = subprocess.run(["systemd-analyze", "verify", str(staged)], capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
