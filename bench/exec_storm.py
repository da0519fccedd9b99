"""Exec storm: N fork+exec of /bin/true, interleaved runs without and with the agent.

The agent runs as users run it (the `tetragon` command, JSON export to a file on, gRPC on). Prints
the ratio of median wall times (agent / no agent), events received against expected, events the
kernel could not reserve (lost), agent CPU seconds and peak RSS, and writes bench/results/exec_storm.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from tests.e2e.agentproc import AgentProcess  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def build_storm() -> Path:
    out = BENCH / "build" / "storm"
    src = BENCH / "storm.c"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        out.parent.mkdir(exist_ok=True)
        subprocess.run([shutil.which("gcc") or "cc", "-O2", "-o", str(out), str(src)], check=True)
    return out


def busy_fraction(interval: float) -> float:
    """Share of all CPUs busy over `interval` seconds (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    t0, i0 = sample()
    time.sleep(interval)
    t1, i1 = sample()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def settle(max_wait: float = 15.0) -> None:
    """Flush dirty pages (the previous run's export) and wait for a quiet machine."""
    os.sync()
    deadline = time.monotonic() + max_wait
    while busy_fraction(0.5) > 0.08 and time.monotonic() < deadline:
        pass


def run_storm(storm: Path, n: int, binary: str) -> float:
    settle()
    res = subprocess.run([str(storm), str(n), binary], check=True, capture_output=True, text=True)
    return float(res.stdout.strip())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_mb(pid: int) -> float:
    m = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024 if m else 0.0


def count_events(export: Path, binary: str) -> tuple[int, int]:
    """(execs, exits) of `binary` in the export file and its rotated backups (lumberjack names)."""
    execs = exits = 0
    for path in export.parent.glob(f"{export.stem}*{export.suffix}*"):
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        for line in data.splitlines():
            ev = orjson.loads(line)
            if "process_exec" in ev:
                execs += ev["process_exec"]["process"].get("binary") == binary
            elif "process_exit" in ev:
                exits += ev["process_exit"]["process"].get("binary") == binary
    return execs, exits


def agent_run(storm: Path, n: int, binary: str, tmp: Path) -> dict[str, Any]:
    def count(export: Path) -> dict[str, int]:
        execs, exits = count_events(export, binary)
        return {"execs": execs, "exits": exits}

    return measure_agent(AgentProcess(tmp), lambda: run_storm(storm, n, binary), count, n)


def measure_agent(
    agent: AgentProcess, storm: Callable[[], float], count: Callable[[Path], dict[str, int]], n: int
) -> dict[str, Any]:
    """One storm with the agent running: its wall, the events `count` finds in the export once the agent
    has written them (execs, exits, ...), lost records, the agent's CPU seconds and peak RSS."""
    try:
        agent.wait_ready(120)
        time.sleep(0.5)  # let the /proc scan's aftermath settle
        cpu0 = cpu_seconds(agent.proc.pid)
        wall = storm()
        # wait until the agent has drained and written everything (timer drain: <= 50 ms + export)
        assert agent.export is not None
        deadline = time.monotonic() + 60
        counts = count(agent.export)
        while time.monotonic() < deadline and min(counts["execs"], counts["exits"]) < n:
            time.sleep(1.0)
            counts = count(agent.export)
        cpu = cpu_seconds(agent.proc.pid) - cpu0
        rss = peak_rss_mb(agent.proc.pid)
    finally:
        rc = agent.stop()
    m = re.search(r"ring buffer: received (\d+) records, lost (\d+)", agent.stderr())
    if rc != 0 or m is None:
        raise RuntimeError(f"agent exited with {rc}:\n{agent.stderr()[-2000:]}")
    return {
        "wall": wall,
        **counts,
        "lost": int(m.group(2)),
        "records": int(m.group(1)),
        "agent_cpu_s": cpu,
        "peak_rss_mb": rss,
    }


def storm_parser(benchmark: str, doc: str | None) -> argparse.ArgumentParser:
    """The options every storm benchmark takes: --n, --reps, --out (bench/results/BENCHMARK.json)."""
    ap = argparse.ArgumentParser(prog=benchmark, description=doc)
    ap.add_argument("--n", type=int, default=20000, help="fork+exec per run")
    ap.add_argument("--reps", type=int, default=5, help="runs per condition (median taken)")
    ap.add_argument("--out", default=str(BENCH / "results" / f"{benchmark}.json"))
    return ap


def main() -> int:
    ap = storm_parser("exec_storm", __doc__)
    ap.add_argument("--binary", default="/bin/true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("exec_storm: needs root", file=sys.stderr)
        return 1
    storm = build_storm()
    run_storm(storm, min(args.n, 500), args.binary)  # warm caches
    base: list[float] = []
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tg-bench-") as tmpdir:
        for rep in range(args.reps):
            # alternate which condition goes first so drift hits both alike
            order = ("base", "agent") if rep % 2 == 0 else ("agent", "base")
            for cond in order:
                if cond == "base":
                    base.append(run_storm(storm, args.n, args.binary))
                    print(f"rep {rep} base  {base[-1]:.3f}s", flush=True)
                else:
                    r = agent_run(storm, args.n, args.binary, Path(tmpdir) / f"rep{rep}")
                    runs.append(r)
                    print(
                        f"rep {rep} agent {r['wall']:.3f}s execs {r['execs']}/{args.n}"
                        f" exits {r['exits']}/{args.n} lost {r['lost']}"
                        f" cpu {r['agent_cpu_s']:.2f}s rss {r['peak_rss_mb']:.1f}MB",
                        flush=True,
                    )
    result = storm_result("exec_storm", args.n, base, runs, binary=args.binary)
    result["targets"] = {"ratio": 1.02, "lost": 0, "rss_mb": 100}
    write_result(result, Path(args.out))
    return 0


def storm_result(
    benchmark: str, n: int, base: list[float], runs: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """The JSON of a storm benchmark: baseline walls and agent runs (wall, execs, exits, lost, agent CPU,
    peak RSS) of the same number of repetitions."""
    base_med = statistics.median(base)
    agent_med = statistics.median(r["wall"] for r in runs)
    return {
        "benchmark": benchmark,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kernel": platform.release(),
        "n": n,
        "reps": len(runs),
        **extra,
        "baseline_wall_s": base,
        "agent_wall_s": [r["wall"] for r in runs],
        "baseline_median_s": base_med,
        "agent_median_s": agent_med,
        "ratio": agent_med / base_med,
        "paired_ratios": [r["wall"] / b for r, b in zip(runs, base, strict=True)],
        "events_expected_per_run": 2 * n,
        "events_received_per_run": [r["execs"] + r["exits"] for r in runs],
        "lost_per_run": [r["lost"] for r in runs],
        "agent_cpu_s_per_run": [r["agent_cpu_s"] for r in runs],
        "agent_peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }


def write_result(result: dict[str, Any], out: Path, more: str = "") -> None:
    """Writes the JSON and prints its one-line summary (`more` after the events)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{result['benchmark']} n={result['n']} reps={result['reps']}: ratio {result['ratio']:.3f} "
        f"(base {result['baseline_median_s']:.3f}s, agent {result['agent_median_s']:.3f}s), "
        f"events {min(result['events_received_per_run'])}/{result['events_expected_per_run']}{more}, "
        f"lost {max(result['lost_per_run'])}, "
        f"agent cpu {statistics.median(result['agent_cpu_s_per_run']):.2f}s, "
        f"peak rss {result['agent_peak_rss_mb']:.1f} MB"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
