"""Idle cost: what the agent costs when nothing it is asked about happens.

Two conditions, one agent each (the real `tetragon` command, JSON export to a file, gRPC on):

  default  no tracing policy (the base sensor only: exec, exit, clone)
  nomatch  plus a `syscall: true` sys_openat kprobe whose selector never matches (bench/syscall_filter.py)

For each: wait for the agent to be ready and settle, then sample every thread of the agent for
`--seconds` (CPU ticks = utime + stime from /proc/<pid>/task/*/stat, wake-ups = voluntary +
nonvoluntary context switches from /proc/<pid>/task/*/status) and its RSS; run a burst of `--burst`
fork+exec of /bin/true (bench/storm.c), wait for the agent to drain it, and sample the same again:
does the agent go back to rest, and does its memory come back to within 10 % of the start?

These counts are the agent's own, so a busy machine changes them little, but the base sensor sees
every exec on the machine: the export lines written during each window and the load average are
recorded with the results. `--smoke` (10 s windows, 5,000 execs) is short enough for CI.
Writes bench/results/idle.json (or `--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from exec_storm import build_storm, peak_rss_mb  # noqa: E402
from syscall_filter import NEVER_OPENED, POLICY  # noqa: E402

from tests.e2e.agentproc import AgentProcess, free_port  # noqa: E402

CONDITIONS = ("default", "nomatch")
RSS_RETURN = 1.10  # memory after the burst, at rest, within 10 % of the start


def thread_counters(pid: int) -> dict[int, tuple[str, int, int]]:
    """tid -> (comm, CPU ticks, context switches) for every thread of `pid`."""
    out: dict[int, tuple[str, int, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            status = (task / "status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended between the listing and the read
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        switches = sum(int(line.split(":")[1]) for line in status.splitlines() if "ctxt_switches:" in line)
        out[int(task.name)] = (comm, ticks, switches)
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def export_lines(agent: AgentProcess) -> int:
    assert agent.export is not None
    return sum(p.read_bytes().count(b"\n") for p in agent.tmp.glob(f"{agent.export.stem}*"))


def rest_window(agent: AgentProcess, seconds: float) -> dict[str, Any]:
    """Per-thread ticks and wake-ups of the agent over `seconds` of (its) rest."""
    pid = agent.proc.pid
    lines0 = export_lines(agent)
    load0 = os.getloadavg()
    before = thread_counters(pid)
    t0 = time.monotonic()
    time.sleep(seconds)
    after = thread_counters(pid)
    elapsed = time.monotonic() - t0
    threads = []
    for tid, (comm, ticks, switches) in sorted(after.items()):
        _, ticks0, switches0 = before.get(tid, (comm, 0, 0))
        threads.append({"tid": tid, "comm": comm, "ticks": ticks - ticks0, "wakeups": switches - switches0})
    total_ticks = sum(t["ticks"] for t in threads)
    total_wakeups = sum(t["wakeups"] for t in threads)
    return {
        "seconds": round(elapsed, 2),
        "ticks": total_ticks,
        "ticks_per_20s": round(total_ticks * 20 / elapsed, 2),
        "wakeups": total_wakeups,
        "wakeups_per_s": round(total_wakeups / elapsed, 2),
        "rss_mb": round(rss_mb(pid), 1),
        "export_lines": export_lines(agent) - lines0,
        "loadavg": [round(x, 2) for x in (*load0, *os.getloadavg())],
        "threads": threads,
    }


def burst(agent: AgentProcess, storm: Path, n: int) -> dict[str, Any]:
    """n fork+exec of /bin/true, then wait until the export file stops growing (drained)."""
    t0 = time.monotonic()
    subprocess.run([str(storm), str(n), "/bin/true"], check=True, capture_output=True)
    wall = time.monotonic() - t0
    last, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 3.0 and time.monotonic() - t0 < 120:
        time.sleep(0.5)
        now = export_lines(agent)
        if now != last:
            last, stable_since = now, time.monotonic()
    return {"execs": n, "wall_s": round(wall, 2), "peak_rss_mb": round(peak_rss_mb(agent.proc.pid), 1)}


def run_condition(cond: str, tmp: Path, storm: Path, seconds: float, n: int) -> dict[str, Any]:
    extra: list[str] = []
    if cond == "nomatch":
        policy = tmp / "nomatch.yaml"
        policy.write_text(POLICY.format(name="bench-idle-nomatch", op="Equal", value=NEVER_OPENED))
        extra = ["--tracing-policy", str(policy)]
    # the health server on, as the agent's default `:6789` has it (on a free port)
    agent = AgentProcess(tmp / cond, *extra, "--health-server-address", f"127.0.0.1:{free_port()}")
    try:
        agent.wait_ready(60)
        time.sleep(3.0)  # the /proc scan and start-up aftermath
        rest = rest_window(agent, seconds)
        b = burst(agent, storm, n)
        after = rest_window(agent, seconds)
    finally:
        rc = agent.stop()
    if rc != 0:
        raise RuntimeError(f"agent exited with {rc}:\n{agent.stderr()[-2000:]}")
    ratio = after["rss_mb"] / rest["rss_mb"]
    return {
        "rest": rest,
        "burst": b,
        "after_burst": after,
        "rss_after_over_start": round(ratio, 3),
        "rss_returned": ratio <= RSS_RETURN,
    }


def summary(cond: str, r: dict[str, Any]) -> str:
    def one(w: dict[str, Any]) -> str:
        busiest = sorted(w["threads"], key=lambda t: -t["wakeups"])[:3]
        top = ", ".join(f"{t['comm']} {t['wakeups']}" for t in busiest)
        return (
            f"{w['ticks']} ticks ({w['ticks_per_20s']}/20s), {w['wakeups_per_s']} wake-ups/s [{top}],"
            f" RSS {w['rss_mb']} MB, {w['export_lines']} foreign events"
        )

    return (
        f"{cond}: rest: {one(r['rest'])}\n"
        f"{cond}: after {r['burst']['execs']} execs (peak RSS {r['burst']['peak_rss_mb']} MB):"
        f" {one(r['after_burst'])}; RSS after/start {r['rss_after_over_start']}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="10 s windows, 5,000 execs")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each rest window")
    ap.add_argument("--burst", type=int, default=100_000, help="fork+exec between the two windows")
    ap.add_argument("--conditions", default=",".join(CONDITIONS), help="subset, comma-separated")
    ap.add_argument("--out", default=str(BENCH / "results" / "idle.json"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("idle: needs root", file=sys.stderr)
        return 1
    if args.smoke:
        args.seconds, args.burst = 10.0, 5_000
    storm = build_storm()
    result: dict[str, Any] = {
        "benchmark": "idle",
        "seconds": args.seconds,
        "burst": args.burst,
        "host": {"kernel": platform.release(), "cpus": os.cpu_count()},
        "clk_tck": os.sysconf("SC_CLK_TCK"),
        "conditions": {},
    }
    with tempfile.TemporaryDirectory(prefix="tg-bench-idle-") as tmpdir:
        for cond in (c for c in CONDITIONS if c in args.conditions.split(",")):
            r = run_condition(cond, Path(tmpdir), storm, args.seconds, args.burst)
            result["conditions"][cond] = r
            print(summary(cond, r), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    ok = all(r["rss_returned"] for r in result["conditions"].values())
    return 0 if ok or not args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
