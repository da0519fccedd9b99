"""Peer benchmark: this agent against Linux auditd and bpftrace on the same two workloads.

Workloads (the harness of exec_storm.py and syscall_filter.py): an exec storm (bench/storm.c, N x
fork+exec of a private copy of /bin/true) and an openat loop (bench/openclose.c, N x openat+close of
one file in a private directory). Conditions, interleaved (the order rotates every repetition),
every tracer started fresh for each run:

  base      nothing traces
  agent     `tetragon` with JSON export to a file; exec storm: its exec/exit events, no policy;
            openat: a sys_openat kprobe with a Prefix selector on the workload's directory
  auditd    Debian's auditd (a private daemon with its own log file), exec storm: an execve rule
            (`-S execve`, every exec); openat: an openat rule (`-S openat -F dir=<workload dir>`)
  bpftrace  Debian's bpftrace printing the same events to a file: sched_process_exec/exit; an
            openat tracepoint filtered on the directory prefix in the kernel

Events expected per run: exec storm 2N for the agent and bpftrace (exec and exit), N for auditd (its
execve rule has no exit record); openat loop N for each.

Reported per tool and workload: median wall and its ratio to the no-tracer median (paired ratios in
the JSON), events delivered against expected, events lost (the agent's ring-buffer count, auditd's
kernel `lost` counter, bpftrace's "Lost N events"), tracer CPU per delivered event (the agent, the
auditd daemon plus the kauditd kernel thread, bpftrace) and peak RSS. Writes
bench/results/peers.json and bench/results/peers.png.

auditd and bpftrace are installed with apt when missing; the kernel's audit state (enabled flag,
backlog limit) is restored afterwards and only this script's rules are removed. A running audit
daemon is left alone: the script refuses to run beside one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from exec_storm import agent_run, build_storm, cpu_seconds, peak_rss_mb, run_storm  # noqa: E402
from syscall_filter import POLICY, build, run_agent, run_workload, settle  # noqa: E402

TOOLS = ("base", "agent", "auditd", "bpftrace")
WORKLOADS = ("exec", "openat")
AUDIT_KEY = "tg-peers"
APT_PACKAGES = {"auditd": "auditd", "bpftrace": "bpftrace"}  # command -> Debian package
Run = dict[str, Any]
Work = Callable[[int], float]  # runs the workload (given the tracer's pid, -1 for none); its wall time


def ensure_installed() -> None:
    missing = [pkg for cmd, pkg in APT_PACKAGES.items() if shutil.which(cmd) is None]
    if missing:
        print(f"installing {' '.join(missing)} (apt)", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env)


def wait_until(done: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def stable_count(count: Callable[[], int], expected: int, timeout: float) -> int:
    """Poll `count` until it reaches `expected` or stops growing for a second."""
    last, since = -1, time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = count()
        if now >= expected:
            return now
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 1.0:
            return now
        time.sleep(0.2)
    return count()


def stop(proc: subprocess.Popen[bytes], sig: int) -> None:
    """End a tracer this script started: `sig`, then SIGKILL after 15 s."""
    proc.send_signal(sig)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- auditd ----------------------------------------------------------------------------------------------
def audit_status() -> dict[str, int]:
    out = subprocess.run(["auditctl", "-s"], capture_output=True, text=True, check=True).stdout
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+) (\d+)", out, re.M)}


def kauditd_pid() -> int:
    for stat in Path("/proc").glob("[0-9]*/comm"):
        try:
            if stat.read_text().strip() == "kauditd":
                return int(stat.parent.name)
        except OSError:
            continue
    return 0


@contextmanager
def audit_state() -> Iterator[None]:
    """The kernel's audit settings as found, restored on the way out; our rules always removed."""
    before = audit_status()
    if before.get("pid", 0):
        raise SystemExit(f"peers: an audit daemon is running (pid {before['pid']}); stop it first")
    try:
        yield
    finally:
        subprocess.run(["auditctl", "-D", "-k", AUDIT_KEY], capture_output=True, check=False)
        subprocess.run(["auditctl", "-b", str(before.get("backlog_limit", 64))], capture_output=True)
        subprocess.run(["auditctl", "-e", str(before.get("enabled", 0))], capture_output=True)


def audit_rule(workload: str, target_dir: Path) -> list[str]:
    if workload == "exec":
        return ["always,exit", "-F", "arch=b64", "-S", "execve", "-k", AUDIT_KEY]
    return ["always,exit", "-F", "arch=b64", "-S", "openat", "-F", f"dir={target_dir}", "-k", AUDIT_KEY]


def audit_records(log: Path, marker: str) -> int:
    """SYSCALL records of our rule whose line holds `marker` (the workload's exe)."""
    if not log.exists():
        return 0
    with open(log, "rb") as f:
        return sum(
            1
            for line in f
            if line.startswith(b"type=SYSCALL")
            and f'key="{AUDIT_KEY}"'.encode() in line
            and marker.encode() in line
        )


def auditd_run(workload: str, work: Work, n: int, marker: str, tmp: Path, target_dir: Path) -> Run:
    conf = tmp / "auditd"
    conf.mkdir(parents=True, exist_ok=True)
    log = conf / "audit.log"
    text = Path("/etc/audit/auditd.conf").read_text()
    for key, value in (("log_file", str(log)), ("max_log_file_action", "IGNORE"), ("max_log_file", "100000")):
        text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
    (conf / "auditd.conf").write_text(text)
    os.chmod(conf / "auditd.conf", 0o640)
    daemon = subprocess.Popen(
        ["auditd", "-n", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        if not wait_until(lambda: audit_status().get("pid") == daemon.pid, 15):
            raise RuntimeError(
                f"auditd did not register: {daemon.stderr.read().decode() if daemon.stderr else ''}"
            )
        subprocess.run(["auditctl", "-b", "8192"], check=True, capture_output=True)  # Debian's audit.rules
        subprocess.run(["auditctl", "-a", *audit_rule(workload, target_dir)], check=True, capture_output=True)
        time.sleep(0.5)
        lost0, kthread = audit_status().get("lost", 0), kauditd_pid()
        cpu0, kcpu0 = cpu_seconds(daemon.pid), cpu_seconds(kthread) if kthread else 0.0
        wall = work(daemon.pid)
        expected = n
        delivered = stable_count(lambda: audit_records(log, marker), expected, 60)
        r: Run = {
            "wall": wall,
            "delivered": delivered,
            "expected": expected,
            "lost": audit_status().get("lost", 0) - lost0,
            "tracer_cpu_s": cpu_seconds(daemon.pid) - cpu0,
            "kauditd_cpu_s": (cpu_seconds(kthread) - kcpu0) if kthread else 0.0,
            "peak_rss_mb": peak_rss_mb(daemon.pid),
        }
        r["cpu_s_for_events"] = r["tracer_cpu_s"] + r["kauditd_cpu_s"]
    finally:
        subprocess.run(["auditctl", "-d", *audit_rule(workload, target_dir)], capture_output=True)
        stop(daemon, signal.SIGTERM)
    return r


# --- bpftrace --------------------------------------------------------------------------------------------
def bpftrace_script(workload: str, target_dir: Path) -> str:
    if workload == "exec":
        return (
            'tracepoint:sched:sched_process_exec { printf("exec %d %s\\n", pid, str(args->filename)); }\n'
            'tracepoint:sched:sched_process_exit { printf("exit %d %s\\n", pid, comm); }\n'
        )
    prefix = f"{target_dir}/"
    return (
        "tracepoint:syscalls:sys_enter_openat "
        f'/strncmp(str(args->filename), "{prefix}", {len(prefix)}) == 0/ '
        '{ printf("openat %d %s\\n", pid, str(args->filename)); }\n'
    )


def bpftrace_run(
    workload: str, work: Work, expected: int, line: re.Pattern[bytes], tmp: Path, target_dir: Path
) -> Run:
    tmp.mkdir(parents=True, exist_ok=True)
    out, script = tmp / "bpftrace.out", tmp / "peers.bt"
    script.write_text(bpftrace_script(workload, target_dir))
    proc = subprocess.Popen(
        ["bpftrace", "-o", str(out), str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )

    def lines() -> int:
        with open(out, "rb") as f:
            return sum(1 for text in f if line.match(text))

    try:
        if not wait_until(lambda: out.exists() and b"Attaching" in out.read_bytes()[:200], 60):
            raise RuntimeError("bpftrace did not attach")
        time.sleep(0.5)
        cpu0 = cpu_seconds(proc.pid)
        wall = work(proc.pid)
        stable_count(lines, expected, 60)  # its output is buffered: the count is final once it exited
        cpu = cpu_seconds(proc.pid) - cpu0
        rss = peak_rss_mb(proc.pid)
    finally:
        stop(proc, signal.SIGINT)  # bpftrace prints its lost-event count as it exits
    delivered = lines()
    text = out.read_text(errors="replace") + (
        proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    )
    out.unlink(missing_ok=True)
    lost = sum(int(m) for m in re.findall(r"Lost (\d+) events", text))
    return {
        "wall": wall,
        "delivered": delivered,
        "expected": expected,
        "lost": lost,
        "tracer_cpu_s": cpu,
        "cpu_s_for_events": cpu,
        "peak_rss_mb": rss,
    }


# --- one run of one condition ----------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.storm = build_storm()
        self.openclose, _ = build()
        self.target_dir = tmp / "w"
        self.target_dir.mkdir()
        self.target = self.target_dir / "f"
        self.target.write_text("x")
        # the storm's binary, a private copy of true: counts of its events are this run's alone
        self.true = self.target_dir / "tg-peers-true"
        shutil.copy("/bin/true", self.true)
        self.policy = tmp / "peers-openat.yaml"
        self.policy.write_text(POLICY.format(name="peers-openat", op="Prefix", value=f"{self.target_dir}/"))
        self.runs = 0

    def n(self, workload: str) -> int:
        return int(self.args.exec_n if workload == "exec" else self.args.open_n)

    def work(self, workload: str) -> Work:
        n = self.n(workload)
        if workload == "exec":
            return lambda tracer: run_storm(self.storm, n, str(self.true))  # waits for a quiet machine first

        def openat(tracer: int) -> float:
            settle(tracer)  # and for no syscall tracepoint but the tracer's
            return run_workload(self.openclose, n, self.target)[0]

        return openat

    def run(self, workload: str, tool: str) -> Run:
        self.runs += 1
        tmp = self.tmp / f"run{self.runs}"
        n, work = self.n(workload), self.work(workload)
        if tool == "base":
            return {"wall": work(-1)}
        if tool == "agent":
            if workload == "exec":
                r = agent_run(self.storm, n, str(self.true), tmp)
                delivered, lost = r["execs"] + r["exits"], r["lost"]
            else:
                r = run_agent("match", self.openclose, n, self.target, tmp, self.policy, False, 60)
                delivered, lost = r["delivered"], r["kernel"]["lost"]
                r["peak_rss_mb"] = r.pop("agent_peak_rss_mb")
            r.update(delivered=delivered, lost=lost, expected=2 * n if workload == "exec" else n)
            r["tracer_cpu_s"] = r["cpu_s_for_events"] = r.pop("agent_cpu_s")
            return r
        if tool == "auditd":
            exe = os.path.realpath(self.true if workload == "exec" else self.openclose)
            return auditd_run(workload, work, n, f'exe="{exe}"', tmp, self.target_dir)
        if workload == "exec":
            true = re.escape(str(self.true).encode())
            pattern = re.compile(rb"^(?:exec \d+ " + true + rb"|exit \d+ tg-peers-true)$")
            return bpftrace_run(workload, work, 2 * n, pattern, tmp, self.target_dir)
        pattern = re.compile(rb"^openat \d+ " + re.escape(str(self.target).encode()) + rb"$")
        return bpftrace_run(workload, work, n, pattern, tmp, self.target_dir)


# --- summary, table, chart -------------------------------------------------------------------------------
def summarize(results: dict[str, dict[str, list[Run]]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for workload, by_tool in results.items():
        base = [r["wall"] for r in by_tool["base"]]
        base_med = statistics.median(base)
        rows: dict[str, Any] = {"base": {"median_wall_s": base_med, "walls_s": base}}
        for tool, runs in by_tool.items():
            if tool == "base" or not runs:
                continue
            walls = [r["wall"] for r in runs]
            rows[tool] = {
                "median_wall_s": statistics.median(walls),
                "ratio": statistics.median(walls) / base_med,
                "paired_ratios": [w / b for w, b in zip(walls, base, strict=False)],
                "walls_s": walls,
                "expected_per_run": runs[0]["expected"],
                "delivered_per_run": [r["delivered"] for r in runs],
                "lost_per_run": [r["lost"] for r in runs],
                "cpu_us_per_event": statistics.median(
                    1e6 * r["cpu_s_for_events"] / max(1, r["delivered"]) for r in runs
                ),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                "runs": runs,
            }
        out[workload] = rows
    return out


def table(summary: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| workload | tool | ratio (paired) | delivered / expected | lost | CPU µs/event | peak RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for workload, rows in summary.items():
        for tool, row in rows.items():
            if tool == "base":
                lines.append(f"| {workload} | none | 1 ({row['median_wall_s']:.3f} s) | | | | |")
                continue
            paired = statistics.median(row["paired_ratios"])
            lines.append(
                f"| {workload} | {tool} | {row['ratio']:.3f} ({paired:.3f}) | {min(row['delivered_per_run'])}"
                f" / {row['expected_per_run']} | {max(row['lost_per_run'])} | {row['cpu_us_per_event']:.1f}"
                f" | {row['peak_rss_mb']:.1f} |"
            )
    return lines


def chart(summary: dict[str, dict[str, Any]], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tools = [t for t in TOOLS[1:] if any(t in rows for rows in summary.values())]
    colors = {"agent": "#2e7d32", "auditd": "#c62828", "bpftrace": "#1565c0"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / max(1, len(tools))
    for i, tool in enumerate(tools):
        xs = [w + (i - (len(tools) - 1) / 2) * width for w in range(len(summary))]
        rows = [summary[w].get(tool) for w in summary]
        ratios = [r["ratio"] if r else 0 for r in rows]
        cpu = [r["cpu_us_per_event"] if r else 0 for r in rows]
        left.bar(xs, ratios, width, label=tool, color=colors[tool])
        right.bar(xs, cpu, width, label=tool, color=colors[tool])
        for x, y, r in zip(xs, ratios, rows, strict=True):
            if r:
                share = min(r["delivered_per_run"]) / r["expected_per_run"]
                left.annotate(f"{share:.0%}", (x, y), ha="center", va="bottom", fontsize=8)
    for ax in (left, right):
        ax.set_xticks(range(len(summary)), [f"{w} (n={summary[w]['base']['n']})" for w in summary])
    left.axhline(1.0, color="black", linewidth=0.8)
    left.set_ylabel("median wall / no tracer (label: events delivered)")
    right.set_ylabel("tracer CPU per delivered event (µs, log)")
    right.set_yscale("log")
    left.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def fmt(workload: str, tool: str, r: Run) -> str:
    s = f"{workload:6s} {tool:8s} {r['wall']:.3f}s"
    if "delivered" in r:
        s += (
            f" delivered {r['delivered']}/{r['expected']} lost {r['lost']} cpu {r['cpu_s_for_events']:.2f}s"
            f" rss {r['peak_rss_mb']:.1f}MB"
        )
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exec-n", type=int, default=5000, help="fork+exec per exec-storm run")
    ap.add_argument("--open-n", type=int, default=100000, help="openat+close per openat run")
    ap.add_argument("--reps", type=int, default=5, help="runs per condition (median taken)")
    ap.add_argument("--tools", default=",".join(TOOLS[1:]), help="tracers to compare (comma-separated)")
    ap.add_argument("--out", default=str(BENCH / "results" / "peers.json"))
    ap.add_argument("--png", default=str(BENCH / "results" / "peers.png"))
    ap.add_argument(
        "--smoke", action="store_true", help="1 rep, 300 execs, 20k openat; results to a temp dir"
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("peers: needs root", file=sys.stderr)
        return 1
    tools = ["base", *[t for t in args.tools.split(",") if t]]
    if args.smoke:
        args.reps, args.exec_n, args.open_n = 1, 300, 20000
        smoke_dir = Path(tempfile.mkdtemp(prefix="tg-peers-smoke-"))
        args.out, args.png = str(smoke_dir / "peers.json"), str(smoke_dir / "peers.png")
    ensure_installed()
    started = time.monotonic()
    results: dict[str, dict[str, list[Run]]] = {w: {t: [] for t in tools} for w in WORKLOADS}
    with audit_state(), tempfile.TemporaryDirectory(prefix="tg-peers-") as tmpdir:
        bench = Bench(args, Path(tmpdir))
        run_storm(bench.storm, min(args.exec_n, 500), str(bench.true))  # warm caches
        run_workload(bench.openclose, min(args.open_n, 50000), bench.target)
        for rep in range(args.reps):
            for workload in WORKLOADS:
                shift = rep % len(tools)
                for tool in tools[shift:] + tools[:shift]:  # the order rotates so drift hits all alike
                    r = bench.run(workload, tool)
                    results[workload][tool].append(r)
                    print(f"rep {rep} {fmt(workload, tool, r)}", flush=True)
    summary = summarize(results)
    for workload in WORKLOADS:
        summary[workload]["base"]["n"] = args.exec_n if workload == "exec" else args.open_n
    result: dict[str, Any] = {"benchmark": "peers", "kernel": platform.release(), "versions": tool_versions()}
    result.update(
        date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), elapsed_s=time.monotonic() - started
    )
    result.update(reps=args.reps, exec_n=args.exec_n, open_n=args.open_n, workloads=summary)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    chart(
        summary, Path(args.png), f"tetragon-py vs auditd vs bpftrace, {args.reps} reps, {platform.release()}"
    )
    print("\n".join(table(summary)))
    print(f"wrote {args.out} and {args.png} in {result['elapsed_s']:.0f}s")
    return 0


def tool_versions() -> dict[str, str]:
    out = {}
    for cmd, flag in (("auditctl", "-v"), ("bpftrace", "--version")):
        res = subprocess.run([cmd, flag], capture_output=True, text=True, check=False)
        out[cmd] = (res.stdout or res.stderr).strip()
    return out


if __name__ == "__main__":
    sys.exit(main())
