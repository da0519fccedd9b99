"""10,000 generated malformed and mutated TracingPolicies through a real agent's AddTracingPolicy.

The full run of tests/e2e/test_policy_fuzz.py (which sends 120 twice in CI): a keeper policy loaded
first must still produce events at the end; every refusal must be INVALID_ARGUMENT or
FAILED_PRECONDITION with one line naming where; no RPC over 5 s; no crash, no traceback in the log;
RSS after sending the first 1,000 again within 10 % of RSS after the run (the heap's high-water
mark: no leak). RSS before the run is recorded beside them. A correctness run, not a timing one
(but for the 5 s bound): the machine's load average is recorded with it.
Writes bench/results/policy_fuzz.json. Needs root. Usage: policy_fuzz.py [--count N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from tests.e2e.agentproc import AgentProcess, rss_mb  # noqa: E402
from tests.e2e.test_policy_fuzz import KEEPER, RSS_RETURN, keeper_event, run_fuzz  # noqa: E402
from tetragon.api.gen.tetragon import sensors_pb2, sensors_pb2_grpc  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    warm = min(1000, args.count // 10)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="policy-fuzz-") as tmp:
        agent = AgentProcess(Path(tmp), "--tracing-policy-max-hooks", "64")
        try:
            agent.wait_ready()
            stub = sensors_pb2_grpc.FineGuidanceSensorsStub(grpc.insecure_channel(agent.server))
            stub.AddTracingPolicy(sensors_pb2.AddTracingPolicyRequest(yaml=KEEPER), timeout=30)
            keeper_event(agent)
            rss_start = rss_mb(agent.proc.pid)
            started = time.monotonic()
            first = run_fuzz(stub, args.seed, args.count)
            rss_warm = rss_mb(agent.proc.pid)
            rest = run_fuzz(stub, args.seed, warm)  # the first ones again: RSS must not grow (no leak)
            took = time.monotonic() - started
            rss_end = rss_mb(agent.proc.pid)
            try:
                keeper_event(agent)
                keeper = True
            except AssertionError:
                keeper = False
            alive = agent.proc.poll() is None
            tracebacks = agent.stderr().count("Traceback")
        finally:
            code = agent.stop()
    status_codes = {"OK": first.loaded + rest.loaded}
    for report in (first, rest):
        for name, n in report.refused.items():
            status_codes[name] = status_codes.get(name, 0) + n
    result = {
        "policies": first.sent + rest.sent,
        "seed": args.seed,
        "seconds": round(took, 1),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "status_codes": status_codes,  # OK: loaded, then deleted again
        "bad_replies": first.bad + rest.bad,
        "slowest_rpc_s": round(max(first.slowest, rest.slowest), 2),
        "rpcs_over_5s": first.slow + rest.slow,
        "rss_mb": {
            "before": round(rss_start, 1),  # the keeper policy loaded
            "after_run": round(rss_warm, 1),
            "after_first_again": round(rss_end, 1),
        },
        "rss_after_first_again_over_after_run": round(rss_end / rss_warm, 3),
        "rss_after_over_before": round(rss_end / rss_start, 3),
        "crashes": 0 if alive else 1,
        "agent_exit": code,
        "tracebacks_in_log": tracebacks,
        "keeper_policy_still_fires": keeper,
    }
    ok = (
        not result["bad_replies"]
        and not result["rpcs_over_5s"]
        and alive
        and keeper
        and tracebacks == 0
        and rss_end <= rss_warm * RSS_RETURN
    )
    result["ok"] = ok
    out = BENCH / "results" / "policy_fuzz.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("bad_replies", "rpcs_over_5s")}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
