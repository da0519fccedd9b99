"""Shared fixtures and rules of the whole suite: a real agent process, real workloads, two tiers.

The project's own tests use only what the repository holds (`policies/`, `tests/data/`). The
**conformance tier** (marker `conformance`) checks the agent against Tetragon's own example policies
and recorded events, from the directory named by TETRAGON_EXAMPLES (`policies/`, `events/events.json`).
Unset, the tier skips with one line; set to a directory without them, or unset under CI=true, the run
stops with an error. Under CI=true no test may skip: a skip becomes a failure that gives its reason.
"""

from __future__ import annotations

import os
import shutil
import sys
import unittest
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
VENV_BIN = Path(sys.executable).parent
IN_CI = os.environ.get("CI", "").lower() == "true"

EXAMPLES_VAR = "TETRAGON_EXAMPLES"
CONFORMANCE_OFF = (
    f"conformance tier not run: set {EXAMPLES_VAR}=/path/to/tetragon-examples "
    "(holding policies/ and events/events.json) to run it"
)
_examples_value = os.environ.get(EXAMPLES_VAR, "")


def _directory_of(value: str) -> Path | None:
    return Path(value).resolve() if value else None


# Tetragon's examples, or None when the conformance tier is off (its tests skip before they run).
TETRAGON_EXAMPLES = _directory_of(_examples_value)


# Tetragon's Kubernetes interfaces (crds/ with its TracingPolicy CRDs): the CRD part of the tier, which
# checks the examples against Tetragon's own schema too. Unset, those tests skip with one line; unset
# under CI=true, or set to a directory without the CRDs, the run stops with an error.
K8S_REFERENCE_VAR = "TETRAGON_K8S_REFERENCE"
K8S_REFERENCE_OFF = (
    f"Tetragon CRD conformance not run: set {K8S_REFERENCE_VAR}=/path/to/tetragon-k8s to run it"
)
_k8s_reference_value = os.environ.get(K8S_REFERENCE_VAR, "")
TETRAGON_K8S_REFERENCE = _directory_of(_k8s_reference_value)
TETRAGON_CRD_FILES = ("crds/cilium.io_tracingpolicies.yaml", "crds/cilium.io_tracingpoliciesnamespaced.yaml")


def _k8s_reference_error() -> str | None:
    if TETRAGON_K8S_REFERENCE is None:
        return (
            f"CI=true needs {K8S_REFERENCE_VAR}=/path/to/tetragon-k8s: the CRD tier may not skip"
            if IN_CI
            else None
        )
    missing = [p for p in TETRAGON_CRD_FILES if not (TETRAGON_K8S_REFERENCE / p).exists()]
    if missing:
        return f"{K8S_REFERENCE_VAR}={_k8s_reference_value}: {' and '.join(missing)} not found there"
    return None


def tetragon_k8s_reference(*parts: str) -> Path:
    """A path inside Tetragon's Kubernetes interfaces; a test that runs without them skips here."""
    if TETRAGON_K8S_REFERENCE is None:
        pytest.skip(K8S_REFERENCE_OFF)
    assert TETRAGON_K8S_REFERENCE is not None
    return TETRAGON_K8S_REFERENCE.joinpath(*parts)


def _examples_error() -> str | None:
    """Why the run cannot go on with this TETRAGON_EXAMPLES, or None."""
    if TETRAGON_EXAMPLES is None:
        if IN_CI:
            return (
                f"CI=true needs {EXAMPLES_VAR}=/path/to/tetragon-examples: the conformance tier may not skip"
            )
        return None
    missing = [p for p in ("policies", "events/events.json") if not (TETRAGON_EXAMPLES / p).exists()]
    if missing:
        return f"{EXAMPLES_VAR}={_examples_value}: {' and '.join(missing)} not found there"
    return None


def _skip_conformance() -> None:
    pytest.skip(CONFORMANCE_OFF)  # one place, so that -ra reports the whole tier on one line


def tetragon_examples(*parts: str) -> Path:
    """A path inside Tetragon's examples; a conformance test that runs without them skips here."""
    if TETRAGON_EXAMPLES is None:
        _skip_conformance()
    assert TETRAGON_EXAMPLES is not None
    return TETRAGON_EXAMPLES.joinpath(*parts)


def conformance_params(values: Sequence[Any]) -> list[Any]:
    """Parameters of a conformance test: `values`, or one placeholder when the tier is off (the test
    is then skipped before it runs, rather than collected with an empty parameter set)."""
    if TETRAGON_EXAMPLES is None:
        return [pytest.param(None, id=f"{EXAMPLES_VAR}-unset")]
    return list(values)


def tetragon_event_lines() -> list[bytes]:
    """Tetragon's recorded events (events/events.json), one JSON line each; [] when the tier is off."""
    if TETRAGON_EXAMPLES is None:
        return []
    return json_lines(TETRAGON_EXAMPLES / "events/events.json")


def tetragon_policy_files() -> list[Path]:
    """Tetragon's example policies (policies/**/*.yaml), sorted; [] when the tier is off."""
    if TETRAGON_EXAMPLES is None:
        return []
    return sorted(p for p in (TETRAGON_EXAMPLES / "policies").rglob("*") if p.suffix in (".yaml", ".yml"))


def recorded_event_lines() -> list[bytes]:
    """Events recorded with this project's agent (tests/data/README.md says what and how)."""
    return json_lines(DATA / "events.json")


def json_lines(path: Path) -> list[bytes]:
    """The non-empty lines of a JSON-lines events file, as bytes."""
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def require_bpf() -> None:
    """In CI a test that needs BPF fails when it cannot run; elsewhere it skips."""
    reason = ""
    if os.geteuid() != 0:
        reason = "needs root to load BPF programs"
    elif not Path("/sys/kernel/btf/vmlinux").exists():
        reason = "kernel has no BTF"
    elif not (ROOT / "src/tetragon/_bpfobj/process.bpf.o").exists():
        reason = "BPF objects are not built (make -C bpf)"
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)


def require_cc() -> str:
    """A C compiler (gcc is one of the Makefile's APT_PKGS): missing, CI fails and elsewhere it skips."""
    cc = shutil.which("gcc") or shutil.which("cc") or shutil.which("clang-19")
    if cc is None:
        if IN_CI:
            pytest.fail("CI=true and no C compiler (gcc)")
        pytest.skip("no C compiler (gcc, cc or clang-19)")
    return cc


# --- hooks -----------------------------------------------------------------------------------------
def pytest_configure(config: pytest.Config) -> None:
    for error in (_examples_error(), _k8s_reference_error()):
        if error:
            raise pytest.UsageError(error)


_SKIPS = (pytest.skip.Exception, unittest.SkipTest)


def _no_skip_in_ci() -> Generator[None, Any, Any]:
    """Body of the run-phase wrappers: under CI=true a skip raised in the phase becomes a failure."""
    try:
        return (yield)
    except _SKIPS as skip:
        if not IN_CI:
            raise
        reason = str(skip)
    # raised outside the `except`, so that the report is the reason alone, not a chained traceback
    pytest.fail(f"CI=true and the test skipped: {reason}", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    if TETRAGON_EXAMPLES is None and item.get_closest_marker("conformance"):
        _skip_conformance()  # before any fixture: a conformance test without examples starts no agent
    return (yield from _no_skip_in_ci())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _no_skip_in_ci())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _no_skip_in_ci())


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, Any]:
    report = yield
    if IN_CI and report.skipped:
        where = report.longrepr if isinstance(report.longrepr, tuple) else ("", 0, str(report.longrepr))
        report.outcome = "failed"
        report.longrepr = f"{where[0]}:{where[1]}: CI=true and the collection skipped: {where[2]}"
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # the net under the wrappers above: whatever produced it, a skip under CI=true fails the run
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if IN_CI and skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    if IN_CI and skipped:
        terminalreporter.write_line(f"CI=true: {len(skipped)} skipped, and a skip fails the run", red=True)
