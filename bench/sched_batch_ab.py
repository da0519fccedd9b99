"""A/B: the agent under SCHED_BATCH (its default) against SCHED_OTHER, on a shorter exec storm.

Three conditions interleaved with a rotating order: no agent, agent switched back to SCHED_OTHER
after start (`chrt -o -a -p 0`), agent as it starts (SCHED_BATCH). Writes bench/results/sched_batch_ab.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from exec_storm import build_storm, run_storm  # noqa: E402

from tests.e2e.agentproc import AgentProcess  # noqa: E402


def agent_run(storm: Path, n: int, policy: str, tmp: Path) -> float:
    agent = AgentProcess(tmp)
    try:
        agent.wait_ready(60)
        if policy == "normal":
            other = ["chrt", "-o", "-a", "-p", "0", str(agent.proc.pid)]
            subprocess.run(other, check=True, capture_output=True)
        time.sleep(0.3)
        return run_storm(storm, n, "/bin/true")
    finally:
        agent.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--out", default=str(BENCH / "results" / "sched_batch_ab.json"))
    args = ap.parse_args()
    storm = build_storm()
    walls: dict[str, list[float]] = {"base": [], "normal": [], "batch": []}
    order = list(walls)
    with tempfile.TemporaryDirectory(prefix="tg-ab-") as tmpdir:
        for rep in range(args.reps):
            for cond in order[rep % 3 :] + order[: rep % 3]:
                if cond == "base":
                    walls[cond].append(run_storm(storm, args.n, "/bin/true"))
                else:
                    walls[cond].append(agent_run(storm, args.n, cond, Path(tmpdir) / f"{cond}{rep}"))
    base = walls["base"]
    result: dict[str, object] = {"benchmark": "sched_batch_ab", "n": args.n, "reps": args.reps}
    result["walls"] = walls
    for cond in ("normal", "batch"):
        ratio = statistics.median(walls[cond]) / statistics.median(base)
        paired = statistics.median(a / b for a, b in zip(walls[cond], base, strict=True))
        result[f"{cond}_ratio"] = ratio
        result[f"{cond}_paired_ratio"] = paired
        print(f"{cond}: ratio {ratio:.3f}, paired {paired:.3f}")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
