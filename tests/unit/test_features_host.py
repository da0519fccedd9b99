"""The feature probe on the host kernel, checked against facts the kernel states elsewhere.

Each expectation comes from a source other than loading the probe programs: the perf PMUs in
/sys/bus/event_source, tracefs, the BTF file, the active LSM list, the build config. On the
development host (6.18, kprobes compiled out, trampolines refused) these give tracepoint, tp_btf,
raw_tp, uprobe and signal true, and kprobe, kprobe_multi, fentry, lsm, override_return and fmodret
false; inside the qemu guest (tests/vm) they give kprobe, fentry, lsm and fmodret true.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tetragon.bpf import features as features_mod
from tetragon.bpf.features import FEATURES, PROBE_OBJECT, active_lsms, missing_feature_message, probe_features

PMUS = Path("/sys/bus/event_source/devices")
TRACEFS = Path("/sys/kernel/tracing")


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def measured() -> dict[str, bool]:
    if os.geteuid() != 0:
        _unavailable("loading BPF programs needs root")
    if not PROBE_OBJECT.exists():
        _unavailable(f"{PROBE_OBJECT.name} is not built (make -C bpf)")
    result = probe_features()
    if not any(result.values()):
        _unavailable("this kernel loads no BPF program at all")
    return result


def _kernel_config() -> dict[str, str] | None:
    release = os.uname().release
    candidates = [Path("/proc/config.gz"), Path(f"/boot/config-{release}")]
    # in the qemu guest: the config file of the kernel package that was booted (tests/vm/run_vm.py)
    if os.environ.get("TETRAGON_VM_KERNEL_RELEASE") == release:
        candidates.append(Path(os.environ.get("TETRAGON_VM_KERNEL_CONFIG", "")))
    for path in candidates:
        try:
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        except OSError:
            continue
        pairs = (line.split("=", 1) for line in raw.decode().splitlines() if line.startswith("CONFIG_"))
        return {key: value for key, value in pairs}
    return None


def _kernel_version() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def _ftrace_usable() -> bool:
    """BPF trampolines patch functions through ftrace: a kernel that hides ftrace's function list
    (lockdown or hardening) or lacks direct calls cannot attach fentry, fmod_ret or lsm."""
    try:
        with open(TRACEFS / "available_filter_functions", "rb") as f:
            f.read(1)
    except OSError:
        return False
    config = _kernel_config()
    return config is None or config.get("CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS") == "y"


def _lockdown() -> str | None:
    """The selected kernel lockdown mode ("none", "integrity", "confidentiality"), None without one."""
    try:
        text = (Path("/sys/kernel/security/lockdown")).read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def _expected() -> dict[str, bool | None]:
    """What the kernel's other interfaces say each probe must find; None where they say nothing."""
    config = _kernel_config()
    version = _kernel_version()
    kprobe = (PMUS / "kprobe").exists() or (TRACEFS / "kprobe_events").exists()
    trampolines = Path("/sys/kernel/btf/vmlinux").exists() and _ftrace_usable()
    return {
        "tracepoint": (PMUS / "tracepoint").exists()
        and (TRACEFS / "events/sched/sched_process_fork").is_dir(),
        "tp_btf": Path("/sys/kernel/btf/vmlinux").exists() and version >= (5, 5),
        "raw_tp": version >= (4, 17),
        "uprobe": (PMUS / "uprobe").exists(),
        "kprobe": kprobe,
        "kprobe_multi": None if config is None else kprobe and config.get("CONFIG_FPROBE") == "y",
        "fentry": trampolines,
        "lsm": trampolines and "bpf" in active_lsms(),
        "ima": trampolines and "bpf" in active_lsms() and Path("/sys/kernel/security/ima").is_dir(),
        "signal": version >= (5, 3),
        "override_return": None
        if config is None
        else kprobe and config.get("CONFIG_BPF_KPROBE_OVERRIDE") == "y",
        # fmod_ret is allowed on every security_* function, error injection or not
        "fmodret": trampolines and version >= (5, 7),
        # lockdown (integrity or confidentiality) removes bpf_probe_write_user from every program type
        "probe_write_user": _lockdown() in (None, "none"),
    }


def test_keys_are_the_documented_features_in_order(measured: dict[str, bool]) -> None:
    assert (
        tuple(measured)
        == FEATURES
        == (
            "tracepoint",
            "tp_btf",
            "raw_tp",
            "uprobe",
            "kprobe",
            "kprobe_multi",
            "fentry",
            "lsm",
            "ima",
            "signal",
            "override_return",
            "fmodret",
            "probe_write_user",
        )
    )


@pytest.mark.parametrize("feature", FEATURES)
def test_probe_agrees_with_the_kernel(measured: dict[str, bool], feature: str) -> None:
    expected = _expected()[feature]
    if expected is None:
        pytest.skip(f"no independent fact about {feature} on this kernel (no readable config)")
    assert measured[feature] is expected, missing_feature_message(feature)


def test_derived_features_imply_their_base(measured: dict[str, bool]) -> None:
    assert not measured["kprobe_multi"] or measured["kprobe"]
    assert not measured["override_return"] or measured["kprobe"]
    assert not measured["lsm"] or measured["fentry"]
    assert not measured["signal"] or measured["raw_tp"]


def test_probe_is_cached_and_returns_a_copy(measured: dict[str, bool]) -> None:
    first = probe_features()
    first["kprobe"] = not first["kprobe"]
    assert probe_features() == measured


def _bpf_fds() -> list[str]:
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("anon_inode:bpf"):
            fds.append(target)
    return fds


def test_probing_leaves_no_program_link_or_map_open(
    measured: dict[str, bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    # links live as long as their fd: no bpf fd left means nothing stays loaded or attached
    before = sorted(_bpf_fds())
    monkeypatch.setattr(features_mod, "_cache", None)
    assert probe_features() == measured
    assert sorted(_bpf_fds()) == before


def test_every_feature_has_a_one_line_message_with_an_alternative() -> None:
    for feature in FEATURES:
        message = missing_feature_message(feature)
        assert "\n" not in message
        assert "instead" in message or "use" in message, message
    assert (
        missing_feature_message("kprobe")
        == "this kernel has no kprobes (CONFIG_KPROBES); syscall hooks can use tracepoints instead"
    )
    assert "CONFIG_BPF_LSM" in missing_feature_message("lsm")
    assert "fmod_ret" in missing_feature_message("override_return")


def test_unknown_feature_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown BPF feature 'kretprobe'"):
        missing_feature_message("kretprobe")
