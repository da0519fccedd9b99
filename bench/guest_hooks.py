"""Hook mechanisms compared inside one qemu guest boot, on the openat path, as ratios to no agent.

Run on the host (root): `bench/guest_hooks.py --kernel 6.12` boots the guest with tests/vm/run_vm.py,
runs itself there (`--in-guest`), and writes the guest's JSON to bench/results/guest_hooks.json.

Workload: bench/openclose.c, N x (openat + close) of one file, timed by itself. Conditions, interleaved
(the order rotates every repetition):

  base                 no agent, nothing attached (measured before and after the agent's phase)
  empty_<mech>         bench/empty_hooks.bpf.c, loaded here: a program that only returns 0, on
                       syscalls/sys_enter_openat (tp) or on do_sys_openat2 (kprobe, kprobe_multi, fentry)
  nomatch_<mech>       the agent with a policy on that hook whose matchArgs (filename Equal to a path
                       nobody opens) never match: everything is dropped in the kernel
  match_<mech>         the same hook, Prefix-matching the workload's file: every call is an event in
                       the JSON export file

tp is the agent's `syscall: true` sys_openat (the syscall's tracepoint); kprobe / kprobe_multi are a
`syscall: false` kprobe on do_sys_openat2 with and without the policy option disable-kprobe-multi. The
agent cannot serve a kprobe policy with fentry, so fentry has only its empty program. Also measured:
the agent's CPU seconds per condition (from idle before the N calls to idle after them), and the time
to attach a generated_ftrace list of 100 functions (the empty kprobe.multi program alone, and `tetra
tracingpolicy add` of such a policy with kprobe.multi and with one kprobe per function).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from exec_storm import cpu_seconds  # noqa: E402

from tests.e2e.agentproc import AgentProcess  # noqa: E402
from tetragon.bpf.features import probe_features  # noqa: E402
from tetragon.bpf.libbpf import BpfObject  # noqa: E402
from tetragon.cli import tetra  # noqa: E402

FUNCTION = "do_sys_openat2"
RESULT_MARK = "GUEST_HOOKS_RESULT "
NEVER_OPENED = "/nonexistent/tg-bench-never-opened"
FILTER_FUNCTIONS = Path("/sys/kernel/tracing/available_filter_functions")

SYSCALL_HOOK = """  kprobes:
  - call: sys_openat
    syscall: true
    args: [{index: 0, type: int}, {index: 1, type: string}, {index: 2, type: int}]
"""
FUNCTION_HOOK = f"""  kprobes:
  - call: {FUNCTION}
    syscall: false
    args: [{{index: 0, type: int}}, {{index: 1, type: string}}]
"""
SELECTOR = """    selectors:
    - matchArgs: [{{index: 1, operator: {op}, values: ["{value}"]}}]
"""
NO_MULTI = """  options:
  - name: disable-kprobe-multi
    value: "true"
"""


def policy_yaml(name: str, mech: str, op: str, value: str) -> str:
    head = f"apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: {name}\nspec:\n"
    hook = SYSCALL_HOOK if mech == "tp" else FUNCTION_HOOK
    return head + (NO_MULTI if mech == "kprobe" else "") + hook + SELECTOR.format(op=op, value=value)


def list_policy_yaml(name: str, functions: list[str], multi: bool) -> str:
    pattern = "^(" + "|".join(re.escape(f) for f in functions) + ")$"
    return (
        f"apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: {name}\nspec:\n"
        + ("" if multi else NO_MULTI)
        + f"  lists:\n  - name: fns\n    type: generated_ftrace\n    pattern: '{pattern}'\n"
        + '  kprobes:\n  - call: "list:fns"\n    syscall: false\n    selectors:\n'
        + '    - matchBinaries: [{operator: In, values: ["/nonexistent/tg-bench"]}]\n'
    )


# --- in the guest ------------------------------------------------------------------------------
def build(out: Path) -> tuple[Path, Path]:
    prog, obj = out / "openclose", out / "empty_hooks.bpf.o"
    subprocess.run(["gcc", "-O2", "-o", str(prog), str(BENCH / "openclose.c")], check=True)
    clang = shutil.which("clang-19") or "clang"
    src = str(BENCH / "empty_hooks.bpf.c")
    subprocess.run([clang, "-O2", "-target", "bpf", "-c", src, "-o", str(obj)], check=True)
    return prog, obj


def run_workload(prog: Path, n: int, target: Path) -> float:
    out = subprocess.run([str(prog), str(n), str(target)], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[0])


@contextlib.contextmanager
def empty_program(obj_path: Path, mech: str) -> Iterator[None]:
    obj = BpfObject(obj_path)
    try:
        obj.only_programs({f"empty_{mech}"})
        if mech == "fentry":
            obj.set_attach_target("empty_fentry", FUNCTION)
        obj.load()
        if mech == "tp":
            obj.attach_tracepoint("empty_tp", "syscalls", "sys_enter_openat")
        elif mech == "kprobe":
            obj.attach_kprobe("empty_kprobe", FUNCTION)
        elif mech == "kprobe_multi":
            obj.attach_kprobe_multi("empty_kprobe_multi", [FUNCTION])
        else:
            obj.attach("empty_fentry")
        yield
    finally:
        obj.close()


def run_tetra(agent: AgentProcess, *args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = tetra.main(["--server-address", agent.server, "--timeout", "300s", *args])  # TCG, a busy host
    if rc:
        raise RuntimeError(f"tetra {' '.join(args)}: {err.getvalue()}")
    return out.getvalue()


@contextlib.contextmanager
def agent_policy(agent: AgentProcess, tmp: Path, name: str, text: str) -> Iterator[float]:
    path = tmp / f"{name}.yaml"
    path.write_text(text)
    t0 = time.monotonic()
    run_tetra(agent, "tracingpolicy", "add", str(path))
    added = time.monotonic() - t0
    try:
        yield added
    finally:
        run_tetra(agent, "tracingpolicy", "delete", name)


def quiet_cpu(pid: int, idle: float = 0.05, step: float = 0.5, timeout: float = 120.0) -> float:
    """The agent's CPU seconds once it has gone idle (less than `idle` s of CPU in `step` s): what it
    had to do (drain the ring, write the export file) is done."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(step)
        now = cpu_seconds(pid)
        if now - last < idle:
            return now
        last = now
    raise RuntimeError(f"the agent did not go idle in {timeout:.0f} s")


def interleaved(conditions: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    walls: dict[str, list[float]] = {c: [] for c in conditions}
    names = list(conditions)
    for rep in range(reps):
        for c in names[rep % len(names) :] + names[: rep % len(names)]:
            walls[c].append(conditions[c]())
    return walls


def hundred_functions() -> list[str]:
    """100 security_* functions ftrace can hook (no module functions, no duplicates)."""
    seen: list[str] = []
    for line in FILTER_FUNCTIONS.read_text().splitlines():
        name = line.split()[0]
        # no module functions, no compiler clones (name.isra.0, name.cold)
        if name.startswith("security_") and "[" not in line and "." not in name and name not in seen:
            seen.append(name)
    return sorted(seen)[:100]


def guest_main(n: int, reps: int) -> dict[str, Any]:
    feats = probe_features()
    tmp = Path(tempfile.mkdtemp(prefix="guest-hooks-"))
    prog, obj = build(tmp)
    target = tmp / "openclose.dat"
    target.write_text("x")
    mechs = [
        m for m in ("tp", "kprobe", "kprobe_multi", "fentry") if feats.get(m if m != "tp" else "tracepoint")
    ]

    def with_empty(mech: str) -> Callable[[], float]:
        def run() -> float:
            with empty_program(obj, mech):
                return run_workload(prog, n, target)

        return run

    phase1 = {"base": lambda: run_workload(prog, n, target)} | {f"empty_{m}": with_empty(m) for m in mechs}
    walls = interleaved(phase1, reps)

    agent = AgentProcess(tmp / "agent", server=f"unix://{tmp}/tetragon.sock")
    agent_cpu: dict[str, list[float]] = {}
    attach: dict[str, float] = {}
    try:
        agent.wait_ready(timeout=240)
        pid = agent.proc.pid

        def with_policy(kind: str, mech: str) -> Callable[[], float]:
            op, value = ("Equal", NEVER_OPENED) if kind == "nomatch" else ("Prefix", str(tmp))
            name = f"{kind}-{mech.replace('_', '-')}"

            def run() -> float:
                with agent_policy(agent, tmp, name, policy_yaml(name, mech, op, value)):
                    # the agent idle first: a match condition's 100k events take it seconds to drain
                    # under TCG, and that work must neither slow this workload nor count as its CPU
                    cpu0 = quiet_cpu(pid)
                    wall = run_workload(prog, n, target)
                    agent_cpu.setdefault(name, []).append(quiet_cpu(pid) - cpu0)
                return wall

            return run

        served = [m for m in ("tp", "kprobe", "kprobe_multi") if m == "tp" or feats.get(m)]
        phase2 = {f"{k}_{m}": with_policy(k, m) for k in ("nomatch", "match") for m in served}
        walls |= interleaved(phase2, reps)
        fns = hundred_functions()
        for multi in (True, False) if feats.get("kprobe_multi") else (False,):
            label = "policy_kprobe_multi" if multi else "policy_kprobes"
            name = label.replace("_", "-")
            with agent_policy(agent, tmp, name, list_policy_yaml(name, fns, multi)) as t:
                attach[label] = round(t, 3)
    finally:
        agent.stop(timeout=120)
    walls["base"] += interleaved({"base": lambda: run_workload(prog, n, target)}, reps)["base"]
    if feats.get("kprobe_multi"):
        bo = BpfObject(obj)
        try:
            bo.only_programs({"empty_kprobe_multi"})
            bo.load()
            t0 = time.monotonic()
            bo.attach_kprobe_multi("empty_kprobe_multi", fns)
            attach["empty_kprobe_multi"] = round(time.monotonic() - t0, 3)
        finally:
            bo.close()
    base = statistics.median(walls["base"])
    med = {c: statistics.median(w) for c, w in walls.items()}
    return {
        "kernel": os.uname().release,
        "function": FUNCTION,
        "n": n,
        "reps": reps,
        "median_wall_s": {c: round(v, 4) for c, v in med.items()},
        "ratio_to_base": {c: round(v / base, 3) for c, v in med.items()},
        "nomatch_over_empty": {
            m: round(med[f"nomatch_{m}"] / med[f"empty_{m}"], 3)
            for m in ("tp", "kprobe", "kprobe_multi")
            if f"nomatch_{m}" in med and f"empty_{m}" in med
        },
        "agent_cpu_s_median": {c: round(statistics.median(v), 3) for c, v in agent_cpu.items()},
        "attach_100_functions_s": attach,
        "attach_functions": len(fns),
    }


# --- on the host -------------------------------------------------------------------------------
def host_main(args: argparse.Namespace) -> int:
    cmd = [
        sys.executable,
        str(ROOT / "tests/vm/run_vm.py"),
        "--kernel",
        args.kernel,
        "--timeout",
        str(args.timeout),
    ]
    cmd += ["--", ".venv/bin/python", "bench/guest_hooks.py", "--in-guest", "--n", str(args.n)]
    cmd += ["--reps", str(args.reps)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    result = None
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK) :])
    if proc.wait() != 0 or result is None:
        print(f"guest run failed ({proc.returncode})", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="6.12")
    ap.add_argument("--n", type=int, default=100_000, help="openat+close calls per timed run")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=int, default=900, help="the guest boot's limit (s)")
    ap.add_argument("--out", default=str(BENCH / "results" / "guest_hooks.json"))
    ap.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.in_guest:
        return host_main(args)
    print(RESULT_MARK + json.dumps(guest_main(args.n, args.reps)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
