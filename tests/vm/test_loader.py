"""Runs inside the qemu guest (tests/vm/run_vm.py): the hooks of issue 10 that this host's kernel cannot
serve and that no other guest file covers, through the real agent with one policy (one agent start for
the file, to keep the guest tier's time down):

* spec.loader (Tetragon's loader.yaml): a process that maps libc reports process_loader events with the
  library's path and its GNU build id, read here from the file's own note; each is checked field by
  field as Tetragon exports it (no `time`: Tetragon's loader events have none).
* a USDT hook's `Set` (Tetragon's usdt-set.yaml, on tests/data/usdt_probes.c built here): the guest's
  kernel is not locked down, so bpf_probe_write_user writes argValue over the probe's argument and the
  program reads the new value (on the host, in lockdown, the policy is refused:
  tests/e2e/test_policy_usdt.py).
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN
from tests.e2e.agentproc import AgentProcess, body, is_exit_of, kind
from tests.e2e.test_policy_lifecycle import compile_c
from tests.vm.guestagent import guest_agent
from tetragon.bpf.features import probe_features

pytestmark = pytest.mark.vm

POLICY = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: "loader"
spec:
  loader: true
  usdts:
  - path: "{prog}"
    provider: "tgtest"
    name: "setme"
    args:
    - index: 0
      type: "int32"
    selectors:
      - matchActions:
        - action: Set
          argIndex: 0
          argValue: 32
"""
SOURCE = Path(__file__).resolve().parents[1] / "data" / "usdt_probes.c"
LIBC = Path(os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6"))
TRUE = "/usr/bin/true"


def gnu_build_id(path: Path) -> bytes:
    """The NT_GNU_BUILD_ID note of an ELF file (64-bit little-endian), from its section headers."""
    data = path.read_bytes()
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    for i in range(shnum):
        _name, sh_type, _flags, _addr, off, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        if sh_type != 7:  # SHT_NOTE
            continue
        pos = off
        while pos + 12 <= off + size:
            namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
            name = data[pos + 12 : pos + 12 + namesz]
            desc_at = pos + 12 + ((namesz + 3) & ~3)
            if ntype == 3 and name == b"GNU\0":
                return data[desc_at : desc_at + descsz]
            pos = desc_at + ((descsz + 3) & ~3)
    raise AssertionError(f"{path} has no GNU build id")


@pytest.fixture(scope="module")
def prog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(SOURCE.read_text(), tmp_path_factory.mktemp("usdt") / "usdt_probes")


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, prog: Path) -> Iterator[AgentProcess]:
    with guest_agent(tmp_path_factory.mktemp("loader-agent"), POLICY.format(prog=prog)) as agent:
        yield agent


def test_loader_reports_libc_with_its_build_id(agent: AgentProcess) -> None:
    out = subprocess.run(["bpftool", "link", "show"], capture_output=True, text=True, check=True).stdout
    assert "perf_event_mmap_output" in out or "perf_event" in out, out
    child = subprocess.Popen([TRUE])
    assert child.wait(30) == 0
    agent.wait_for(is_exit_of(child.pid, TRUE), timeout=60)
    events = [
        e
        for e in agent.read_events()
        if kind(e) == "process_loader" and body(e)["process"]["pid"] == child.pid
    ]
    libc = [e for e in events if body(e)["path"] == str(LIBC)]
    assert libc, [body(e)["path"] for e in events]
    buildid = gnu_build_id(LIBC)
    for ev in libc:
        assert list(ev) == ["process_loader", "node_name"]  # Tetragon's loader events carry no time
        b = body(ev)
        assert list(b) == ["process", "path", "buildid", "parent"]
        assert b["buildid"] == base64.b64encode(buildid).decode()
        p = b["process"]
        assert (p["pid"], p["binary"]) == (child.pid, TRUE)
        assert b["parent"]["pid"] == os.getpid() and b["parent"]["exec_id"] == p["parent_exec_id"]
    # every event has a build id (mappings without one are not reported)
    assert all(body(e).get("buildid") for e in events)

    # the compact line: `🧬 loader  <node> <binary> <build id hex> <path>`
    line = subprocess.run(
        [str(VENV_BIN / "tetra"), "getevents", "-o", "compact"],
        input=json.dumps(libc[0]) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert line == f"🧬 loader  {libc[0]['node_name']} {TRUE} {buildid.hex()} {LIBC}\n"


def test_set_writes_the_probe_argument(agent: AgentProcess, prog: Path) -> None:
    assert probe_features()["probe_write_user"]
    child = subprocess.Popen([str(prog), "2"], stdout=subprocess.PIPE, text=True)
    out, _ = child.communicate(timeout=60)
    assert out.splitlines()[:2] == ["setme 32", "setme 32"]
    agent.wait_for(is_exit_of(child.pid, str(prog)), timeout=60)
    events = [
        e for e in agent.read_events() if kind(e) == "process_usdt" and body(e)["process"]["pid"] == child.pid
    ]
    # the event reports the value the probe passed, before Set wrote over it
    assert [(body(e)["args"], body(e)["action"]) for e in events] == [
        ([{"int_arg": 7}], "KPROBE_ACTION_SET"),
        ([{"int_arg": 8}], "KPROBE_ACTION_SET"),
    ]
    b = body(events[0])
    assert (b["path"], b["provider"], b["name"], b["policy_name"]) == (str(prog), "tgtest", "setme", "loader")
