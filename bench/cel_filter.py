"""CEL filter throughput: events/s through `Filter.cel_expression`, per CEL library.

Candidates: `common-expression-language` (module `cel`, Rust-backed) and `cel-python` (module
`celpy`, pure Python). Each compiles the same expressions once, then evaluates them over recorded
agent events the way the server does (the event body bound to the variable named by its key; an
evaluation error is "no match"). cel-python needs its own value types, so its conversion of each
event is part of its cost, as it would be in the server. Both must agree on every event.

Events: `--events FILE` (Tetragon JSON lines, e.g. an export file), else recorded here: the real
`tetragon` agent (root, BPF) exporting exec/exit events of a burst of short processes.
Writes bench/results/cel_filter.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.agentproc import AgentProcess  # noqa: E402

EXPRESSIONS = (
    "process_exec.process.binary == '/bin/true'",
    "process_exec.process.binary.startsWith('/usr/') && process_exec.process.arguments.contains('x')",
    "process_exit.status != 0 || process_kprobe.function_name == 'security_file_permission'",
)
Event = dict[str, Any]
Match = Callable[[str, Event], bool]


def record(count: int) -> list[Event]:
    with tempfile.TemporaryDirectory(prefix="cel-bench-") as tmp:
        agent = AgentProcess(Path(tmp))
        try:
            agent.wait_ready(60)
            for i in range(count // 2):
                subprocess.run(["/bin/true", f"arg{i}", "x" * (i % 3)], check=True)
            time.sleep(1.0)
        finally:
            agent.stop()
        assert agent.export is not None
        return [orjson.loads(line) for line in agent.export.read_bytes().splitlines() if line.strip()]


def rust_matcher(expression: str) -> Match:
    import cel

    program = cel.compile(expression)

    def match(key: str, body: Event) -> bool:
        try:
            return program.execute({key: body}) is True
        except Exception:  # noqa: BLE001 - no match, as in the server
            return False

    return match


def python_matcher(expression: str) -> Match:
    import celpy

    env = celpy.Environment()
    program = env.program(env.compile(expression))

    def match(key: str, body: Event) -> bool:
        try:
            result = program.evaluate({key: celpy.json_to_cel(body)})
            return isinstance(result, celpy.celtypes.BoolType) and bool(result)
        except Exception:  # noqa: BLE001
            return False

    return match


def measure(make: Callable[[str], Match], events: list[Event], min_seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for expression in EXPRESSIONS:
        match = make(expression)
        pairs = [(next(iter(e)), next(iter(e.values()))) for e in events]
        matched: list[bool] = []
        passes, start = 0, time.perf_counter()
        while True:
            matched = [match(key, body) for key, body in pairs]
            passes += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        out[expression] = {
            "events_per_second": round(passes * len(pairs) / elapsed),
            "matched": sum(matched),
            "_results": matched,
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=Path, help="Tetragon JSON lines (default: record from the agent)")
    parser.add_argument("--count", type=int, default=3000, help="events to record")
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum time per expression and library")
    args = parser.parse_args()
    if args.events:
        events = [orjson.loads(line) for line in args.events.read_bytes().splitlines() if line.strip()]
    else:
        events = record(args.count)
    results = {
        "common-expression-language": measure(rust_matcher, events, args.seconds),
        "cel-python": measure(python_matcher, events, args.seconds),
    }
    for expression in EXPRESSIONS:
        rust, python = (results[lib][expression].pop("_results") for lib in results)
        assert rust == python, f"the libraries disagree on {expression!r}"
    report = {
        "events": len(events),
        "event_types": sorted({next(iter(e)) for e in events}),
        "python": platform.python_version(),
        "results": results,
        "speedup": {
            e: round(
                results["common-expression-language"][e]["events_per_second"]
                / results["cel-python"][e]["events_per_second"],
                1,
            )
            for e in EXPRESSIONS
        },
    }
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / "cel_filter.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
