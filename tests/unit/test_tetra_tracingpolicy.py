"""`tetra tracingpolicy` (`tetra tp`) as a subprocess against the real GrpcServer and a fake manager."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.unit.test_grpc_policies import POLICY, FakeManager
from tests.unit.test_tetra_cli import run_tetra
from tetragon.api.server import GrpcServer
from tetragon.cli.tetra_tracingpolicy import humanize_bytes
from tetragon.events.bus import EventBus
from tetragon.policy.modeyaml import set_policy_mode
from tetragon.policy.status import PolicyStatus
from tetragon.policy.syscalls import all_syscalls

POLICY_WITH_OPTIONS = """\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: "fd"
spec:
  options:
  - name: policy-mode
    value: enforce
  - name: disable-kprobe-multi
    value: "1"
  kprobes:
  - call: "fd_install"
    syscall: false
    selectors:
    - matchArgs:
      - index: 0
        operator: "Equal"
        values: [0777, "2"]
"""


@pytest.fixture
def manager() -> FakeManager:
    return FakeManager()


@pytest.fixture
def address(bus: EventBus, manager: FakeManager) -> Iterator[str]:
    srv = GrpcServer(bus, "localhost:0", version="v0.0.0-test", policy_handler=manager)
    srv.start()
    yield f"localhost:{srv.port}"
    srv.stop(grace=0.5)


def tp(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_tetra("tracingpolicy", *args, "--server-address", address)


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_add_list_delete(address: str, manager: FakeManager, tmp_path: Path) -> None:
    file = write(tmp_path, POLICY.format(name="fd-install"))
    out = tp(address, "add", file)
    assert (out.returncode, out.stdout, out.stderr) == (0, f'tracing policy "{file}" added\n', "")
    out = run_tetra(
        "tp", "add", write(tmp_path, POLICY.format(name="other"), "b.yaml"), "--server-address", address
    )
    assert out.returncode == 0, out.stderr
    manager.policies[("", "other")].state = "TP_STATE_LOAD_ERROR"

    out = tp(address, "list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split() for line in lines] == [
        ["ID", "NAME", "STATE", "FILTERID", "NAMESPACE", "SENSORS", "KERNELMEMORY", "MODE"],
        ["1", "fd-install", "enabled", "0", "(global)", "generic_kprobe", "1.23", "MB", "enforce"],
        ["2", "other", "load_error", "0", "(global)", "generic_kprobe", "1.23", "MB", "enforce"],
    ]
    # tabwriter columns: every column starts at the same offset on every line, 3 spaces apart
    assert lines[0].index("NAME") == lines[1].index("fd-install") == len("ID") + 3
    assert (
        lines[0].index("STATE")
        == lines[2].index("load_error")
        == lines[0].index("NAME") + len("fd-install") + 3
    )
    assert lines[0].index("MODE") == lines[1].index("enforce")

    out = tp(address, "list", "-o", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["policies"][0] == {
        "id": "1",
        "name": "fd-install",
        "sensors": ["generic_kprobe"],
        "enabled": True,
        "state": "TP_STATE_ENABLED",
        "kernelMemoryBytes": "1234567",
        "mode": "TP_MODE_ENFORCE",
        "domain": "grpc",
    }

    out = tp(address, "delete", "fd-install")
    assert (out.returncode, out.stdout) == (0, 'tracing policy "fd-install" deleted\n')
    assert list(manager.policies) == [("", "other")]


def test_list_empty(address: str) -> None:
    out = tp(address, "list")
    assert (out.returncode, out.stdout) == (
        0,
        "ID   NAME   STATE   FILTERID   NAMESPACE   SENSORS   KERNELMEMORY   MODE\n",
    )
    out = tp(address, "list", "--output", "json")
    assert (out.returncode, out.stdout) == (0, "{}\n")


def test_list_namespaced_and_monitor(address: str, manager: FakeManager) -> None:
    manager.policies[("team", "p")] = PolicyStatus(
        id=9,
        name="p",
        namespace="team",
        sensors=["a", "b"],
        state="TP_STATE_DISABLED",
        mode="TP_MODE_MONITOR",
    )
    out = tp(address, "list")
    assert out.stdout.splitlines()[1].split() == [
        "9",
        "p",
        "disabled",
        "0",
        "team",
        "a,b",
        "0",
        "B",
        "monitor",
    ]


def test_enable_disable_set_mode(address: str, manager: FakeManager) -> None:
    manager.policies[("ns", "p")] = PolicyStatus(id=1, name="p", namespace="ns")
    out = tp(address, "disable", "p", "-n", "ns")
    assert (out.returncode, out.stdout) == (0, 'tracing policy "p" disabled\n')
    assert manager.calls[-1] == ("configure", "p", "ns", False, None)
    out = tp(address, "enable", "--namespace", "ns", "p")
    assert (out.returncode, out.stdout) == (0, 'tracing policy "p" enabled\n')
    assert manager.calls[-1] == ("configure", "p", "ns", True, None)
    out = tp(address, "set-mode", "p", "monitor", "-n", "ns")
    assert (out.returncode, out.stdout) == (0, 'tracing policy "p" set to mode "monitor"\n')
    assert manager.calls[-1] == ("configure", "p", "ns", None, "monitor")
    assert tp(address, "list").stdout.splitlines()[1].split()[-1] == "monitor"


def test_add_with_mode_rewrites_the_options(address: str, manager: FakeManager, tmp_path: Path) -> None:
    file = write(tmp_path, POLICY_WITH_OPTIONS)
    out = tp(address, "add", file, "--mode", "monitor")
    assert out.returncode == 0, out.stderr
    assert manager.calls[-1] == ("add", None, "grpc")  # the mode travels inside the YAML
    assert manager.policies[("", "fd")].mode == "TP_MODE_MONITOR"


def test_modify(tmp_path: Path) -> None:
    file = write(tmp_path, POLICY_WITH_OPTIONS)
    out = run_tetra("tp", "modify", file, "-m", "monitor")
    assert out.returncode == 0, out.stderr
    assert out.stdout == set_policy_mode(POLICY_WITH_OPTIONS, "monitor")
    doc = yaml.safe_load(out.stdout)
    assert doc["spec"]["options"] == [
        {"name": "disable-kprobe-multi", "value": "1"},
        {"name": "policy-mode", "value": "monitor"},
    ]
    assert doc["spec"]["kprobes"] == yaml.safe_load(POLICY_WITH_OPTIONS)["spec"]["kprobes"]
    assert 'values: [0777, "2"]' in out.stdout  # scalars keep their text and quoting
    out = run_tetra("tp", "modify", file)
    assert (out.returncode, out.stdout) == (0, POLICY_WITH_OPTIONS)


def test_set_policy_mode_edges() -> None:
    assert yaml.safe_load(set_policy_mode("kind: TracingPolicy\nspec:\n", "enforce"))["spec"] == {
        "options": [{"name": "policy-mode", "value": "enforce"}]
    }
    for text, message in (
        ("kind: TracingPolicy\n", "yaml does not include spec section"),
        ("", "empty policy"),
        ("- a\n", "not a YAML mapping"),
        ("spec: {options: 3}\n", "spec.options is not a list"),
        ("spec: [\n", "invalid YAML"),
    ):
        with pytest.raises(ValueError, match=message):
            set_policy_mode(text, "monitor")
    with pytest.raises(ValueError, match="invalid mode"):
        set_policy_mode("spec: {}\n", "audit")


def test_generate() -> None:
    out = run_tetra("tp", "generate", "empty")
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout) == {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "empty"},
        "spec": {},
    }
    known = {f"sys_{name}" for name in all_syscalls("x64")}

    out = run_tetra("tp", "generate", "all-syscalls", "--match-binary", "/usr/bin/cat")
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load(out.stdout)
    kprobes = doc["spec"]["kprobes"]
    assert len(kprobes) > 100 and {k["call"] for k in kprobes} <= known
    assert {"sys_read", "sys_openat", "sys_execve"} <= {k["call"] for k in kprobes}
    assert all(k["syscall"] is True for k in kprobes)
    assert kprobes[0]["selectors"] == [{"matchBinaries": [{"operator": "In", "values": ["/usr/bin/cat"]}]}]

    out = run_tetra("tp", "generate", "all-syscalls-list")
    assert out.returncode == 0, out.stderr
    spec = yaml.safe_load(out.stdout)["spec"]
    [lst] = spec["lists"]
    assert (lst["name"], lst["type"]) == ("syscalls", "syscalls")
    assert "sys_read" in lst["values"] and set(lst["values"]) <= known
    assert spec["kprobes"] == [{"call": "list:syscalls", "syscall": True}]


def test_errors(address: str, manager: FakeManager, tmp_path: Path) -> None:
    def fails(out: subprocess.CompletedProcess[str], message: str) -> None:
        assert (out.returncode, out.stdout) == (1, ""), out
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("Error: "), out.stderr
        assert message in out.stderr, out.stderr

    fails(
        tp(address, "delete", "nope"),
        "Error: failed to delete tracing policy: NOT_FOUND: policy nope not found",
    )
    fails(tp(address, "enable", "nope"), "failed to enable tracing policy: NOT_FOUND")
    fails(tp(address, "disable", "nope"), "failed to disable tracing policy: NOT_FOUND")
    fails(
        tp(address, "set-mode", "nope", "enforce"), 'failed set mode to "enforce" tracing policy: NOT_FOUND'
    )
    fails(tp(address, "set-mode", "nope", "audit"), 'invalid mode "audit"')
    fails(tp(address, "list", "-o", "yaml"), 'invalid value for "output" flag: yaml')
    fails(tp(address, "add", str(tmp_path / "missing.yaml")), "failed to read yaml file")
    bad = write(tmp_path, "metadata: [\n")
    fails(tp(address, "add", bad), "failed to add tracing policy: INVALID_ARGUMENT: invalid policy:")
    fails(
        tp(address, "add", bad, "-m", "monitor"),
        f'failed to apply mode "monitor" to yaml file {bad}: invalid YAML',
    )
    fails(
        tp(address, "add", write(tmp_path, POLICY.format(name="x")), "-m", "audit"), 'invalid mode: "audit"'
    )
    fails(
        tp(address, "add", write(tmp_path, POLICY.format(name="old-kernel"))),
        "FAILED_PRECONDITION: kprobe fd_install: this kernel lacks kprobe_multi",
    )
    fails(
        tp(address, "add", write(tmp_path, POLICY.format(name="boom"))), "INTERNAL: AddTracingPolicy failed"
    )
    good = write(tmp_path, POLICY.format(name="dup"))
    assert tp(address, "add", good).returncode == 0
    fails(tp(address, "add", good), "ALREADY_EXISTS: policy dup already exists")
    fails(
        run_tetra("tp", "list", "--server-address", "localhost:1", "--timeout", "2s", "--retries", "0"),
        "failed to list tracing policies: cannot connect to the server at localhost:1",
    )


def test_humanize_bytes() -> None:
    assert [humanize_bytes(n) for n in (0, 999, 1000, 4458824, 10**9, 12_345_678_901_234)] == [
        "0 B",
        "999 B",
        "1.00 kB",
        "4.46 MB",
        "1.00 GB",
        "12.35 TB",
    ]
