"""A kprobe on a kernel function this kernel cannot attach is refused before load, with one line naming
the function and why: not a function here (in neither kallsyms nor available_filter_functions), or not
traceable by ftrace (which kprobes need too). tracefs and kallsyms are files made here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tetragon.policy.compile import compile_policy, traceable
from tetragon.policy.errors import PolicyError
from tetragon.policy.load import parse_policy

KALLSYMS = """ffffffff81000000 T _stext
ffffffff81100000 T __dev_queue_xmit
ffffffff81100100 t notrace_helper
ffffffff81100200 T security_file_open
ffffffff81100300 D some_data_object
"""
FTRACE = "__dev_queue_xmit\nsecurity_file_open\nmod_function [some_mod]\n"


@pytest.fixture
def tracefs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "available_filter_functions").write_text(FTRACE)
    (tmp_path / "kallsyms").write_text(KALLSYMS)
    monkeypatch.setattr(traceable, "KALLSYMS", tmp_path / "kallsyms")
    return tmp_path


def _kprobe(call: str, features: dict[str, bool], tracefs: Path) -> None:
    text = (
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: t\nspec:\n  kprobes:\n"
        f"  - call: {call}\n    syscall: false\n    args: [{{index: 0, type: int}}]\n"
    )
    compile_policy(parse_policy(text), 1, "enforce", features, tracefs=tracefs)


@pytest.mark.parametrize("multi", [True, False])
def test_inlined_function_is_refused_naming_it(tracefs: Path, multi: bool) -> None:
    with pytest.raises(PolicyError) as err:
        _kprobe("dev_queue_xmit", {"kprobe": True, "kprobe_multi": multi}, tracefs)
    assert str(err.value) == (
        "spec.kprobes[0] (dev_queue_xmit): kernel function dev_queue_xmit cannot be attached on this "
        "kernel: it is not a function of this kernel (in neither /proc/kallsyms nor "
        "available_filter_functions: inlined into its callers, or not built in)"
    )
    assert err.value.kind == "unsupported"


@pytest.mark.parametrize("multi", [True, False])
def test_notrace_function_is_refused_naming_it(tracefs: Path, multi: bool) -> None:
    """An inline function's out-of-line copy (Debian 6.1's dev_queue_xmit): in kallsyms, not in ftrace,
    which a kprobe event needs as much as kprobe.multi."""
    with pytest.raises(PolicyError) as err:
        _kprobe("notrace_helper", {"kprobe": True, "kprobe_multi": multi}, tracefs)
    assert str(err.value).endswith(
        "kernel function notrace_helper cannot be attached on this kernel: it is not in "
        "available_filter_functions (notrace: an inline function's out-of-line copy, or marked notrace), "
        "and kprobes attach only where ftrace can (a kprobe event refuses notrace functions without "
        "CONFIG_KPROBE_EVENTS_ON_NOTRACE)"
    )


def test_traceable_functions_and_unreadable_tracefs_pass(tracefs: Path, tmp_path: Path) -> None:
    for call in ("__dev_queue_xmit", "security_file_open"):
        _kprobe(call, {"kprobe": True, "kprobe_multi": True}, tracefs)
    # without tracefs nothing can be told: the attach decides
    _kprobe("dev_queue_xmit", {"kprobe": True, "kprobe_multi": True}, tmp_path / "none")


def test_a_list_names_its_untraceable_member(tracefs: Path) -> None:
    text = (
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: t\nspec:\n"
        "  lists:\n  - name: fns\n    values: [security_file_open, dev_queue_xmit]\n"
        "  kprobes:\n  - call: list:fns\n    syscall: false\n"
    )
    with pytest.raises(PolicyError, match="kernel function dev_queue_xmit cannot be attached"):
        compile_policy(
            parse_policy(text), 1, "enforce", {"kprobe": True, "kprobe_multi": True}, tracefs=tracefs
        )
