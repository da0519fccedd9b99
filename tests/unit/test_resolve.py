"""`resolve` (BTF field paths on hook arguments) compiled against this machine's kernel BTF
(/sys/kernel/btf/vmlinux): the steps resolve.h follows, the type the last field is read as, and the
one-line refusals naming the path. The layout of resolve.h is checked against its Python mirror."""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_cc
from tetragon.abi import resolve_h as R
from tetragon.policy.compile import compile_policy
from tetragon.policy.errors import PolicyError
from tetragon.policy.load import parse_policy

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "include" / "generic" / "resolve.h"
TRACEFS = Path(__file__).resolve().parents[1] / "data" / "tracefs"
FEATURES = {"tracepoint": True, "raw_tp": True, "kprobe": True, "lsm": True, "uprobe": True}


def _compile(spec: str):  # type: ignore[no-untyped-def]
    text = f"apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: r\nspec:\n{spec}"
    return compile_policy(parse_policy(text), 3, "enforce", FEATURES, tracefs=TRACEFS)


def _lsm(args: str) -> str:
    return f"""
  lsmhooks:
  - hook: bprm_check_security
    args: {args}
"""


def _rawtp(args: str) -> str:
    return f"""
  tracepoints:
  - subsystem: sched
    event: sched_process_exec
    raw: true
    args: {args}
"""


def _steps(plan, i: int = 0) -> tuple[list[tuple[int, int]], int, int]:  # type: ignore[no-untyped-def]
    cfg = R.ResolveArgs.from_buffer_copy(plan.hooks[0].rodata["resolve_args"])[i]
    return [(s.off, s.deref) for s in cfg.step[: cfg.nsteps]], cfg.last_size, cfg.last_signed


def test_lsm_track_grandparent_path() -> None:
    plan = _compile(_lsm('[{index: 0, type: string, resolve: "mm.owner.real_parent.real_parent.comm"}]'))
    steps, last_size, _ = _steps(plan)
    # bprm->mm, mm->owner, ->real_parent twice: pointers read; comm: the array's address, read as a string
    assert [d for _, d in steps] == [1, 1, 1, 1, 0]
    assert steps[2][0] == steps[3][0]  # real_parent, twice in the same struct
    assert last_size == 0
    assert plan.hooks[0].info.args[0].type == "string"
    arg = plan.hooks[0].cfg.args[0]
    assert (arg.size, arg.is_signed) == (8, 0)  # the root pointer, whole


def test_integers_pointers_and_types_named_by_btf() -> None:
    plan = _compile(
        _rawtp(
            "[{index: 0, type: int, resolve: real_parent.pid},"
            " {index: 0, type: int, resolve: real_parent.tgid},"
            " {index: 2, type: string, resolve: file}, {index: 0, type: auto, resolve: cred.uid.val},"
            " {index: 0, type: uint8, resolve: 'comm[3]'}]"
        )
    )
    pid, size, signed = _steps(plan, 0)
    tgid, _, _ = _steps(plan, 1)
    assert (size, signed) == (4, 1) and [d for _, d in pid] == [1, 0]
    assert tgid[1][0] == pid[1][0] + 4  # pid_t pid; pid_t tgid;
    # bprm->file is a struct file *: read as a file, whatever type the policy gave (Tetragon's rule)
    assert _steps(plan, 2) == ([(_steps(plan, 2)[0][0][0], 1)], 0, 0)
    types = [a.type for a in plan.hooks[0].info.args]
    assert types == ["int", "int", "file", "uint32", "uint8"]
    assert _steps(plan, 3)[1:] == (4, 0)
    comm3, size, _ = _steps(plan, 4)
    assert len(comm3) == 1 and comm3[0][1] == 0 and size == 1


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (
            _lsm("[{index: 0, type: string, resolve: mm.nosuch}]"),
            "spec.lsmhooks[0] (hook bprm_check_security).args[0].resolve 'mm.nosuch': mm (struct mm_struct) "
            "has no field 'nosuch'",
        ),
        (
            _lsm("[{index: 0, type: string, resolve: argc.x}]"),
            "args[0].resolve 'argc.x': argc is int, not a struct: it has no field 'x'",
        ),
        (
            _lsm("[{index: 0, type: string, resolve: 'buf[9999]'}]"),
            "'buf[9999]': buf has 256 elements, index 9999",
        ),
        (_lsm("[{index: 0, type: string, resolve: 'a..b'}]"), "'a..b' is not a field path"),
        # the type is named by BTF when a type of that name exists (int); unsigned long is not one
        (_lsm("[{index: 0, type: string, resolve: argc}]"), ""),
        (
            _lsm("[{index: 0, type: string, resolve: p}]"),
            "p is long unsigned int: an argument of type string",
        ),
        (_lsm("[{index: 0, type: int, resolve: mm}]"), ""),  # a pointer read as a number: allowed
        (
            _lsm("[{index: 0, type: int, resolve: pid, source: current_task}]"),
            "args[0].source: current_task as the root of a resolve path is not supported",
        ),
        (
            _lsm("[{index: 0, type: int, resolve: " + ".".join(["mm"] * 11) + "}]"),
            "args[0].resolve: deeper than 10 fields",
        ),
        (
            _rawtp("[{index: 1, type: int, resolve: x}]")
            .replace("raw: true", "raw: false")
            .replace("sched_process_exec", "sys_enter_openat")
            .replace("subsystem: sched", "subsystem: syscalls"),
            "a tracepoint's record has no BTF type (raw: true has)",
        ),
        (
            "\n  kprobes:\n  - call: sys_openat\n    syscall: true\n"
            "    args: [{index: 1, type: string, resolve: x}]\n",
            "sys_openat is a syscall, served by its tracepoint",
        ),
        (
            "\n  kprobes:\n  - call: no_such_function_here\n    syscall: false\n"
            "    args: [{index: 0, type: int, resolve: x}]\n",
            "no_such_function_here is not a function in the kernel's BTF",
        ),
        (
            "\n  kprobes:\n  - call: security_file_open\n    syscall: false\n"
            "    args: [{index: 0, type: int, resolve: f_mode}]\n",
            "",
        ),
        (
            "\n  kprobes:\n  - call: security_file_open\n    syscall: false\n"
            "    args: [{index: 3, type: int, resolve: f_mode}]\n",
            "security_file_open has no argument 3",
        ),
    ],
)
def test_refusals_name_the_path(spec: str, needle: str) -> None:
    if not needle:
        _compile(spec)
        return
    with pytest.raises(PolicyError) as err:
        _compile(spec)
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_header_matches_python_view(tmp_path: Path) -> None:
    src = tmp_path / "r.c"
    src.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n#define GEN_ARGS_MAX 5\n"
        f'#include "{HEADER}"\nint main(void) {{\n'
        'printf("sizeof %zu\\n", sizeof(struct resolve_cfg));\n'
        'printf("step %zu\\n", offsetof(struct resolve_cfg, step));\n'
        'printf("stepsize %zu\\n", sizeof(struct resolve_step));\n'
        'printf("steps %d\\n", RESOLVE_STEPS);\n'
        "return 0; }\n"
    )
    exe = tmp_path / "r"
    subprocess.run([require_cc(), str(src), "-o", str(exe)], check=True)
    out = dict(
        line.split()
        for line in subprocess.run([str(exe)], capture_output=True, text=True).stdout.splitlines()
    )
    assert int(out["sizeof"]) == ctypes.sizeof(R.ResolveCfg)
    assert int(out["step"]) == R.ResolveCfg.step.offset
    assert int(out["stepsize"]) == ctypes.sizeof(R.ResolveStep)
    assert int(out["steps"]) == R.RESOLVE_STEPS
