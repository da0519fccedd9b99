"""bench/peers.py without root: the peers' rules and scripts, the summary, its table and chart.
(The benchmark itself runs auditd, bpftrace and the agent: `sudo .venv/bin/python bench/peers.py`.)"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import peers  # noqa: E402


def test_audit_rules_and_bpftrace_scripts_name_the_workload() -> None:
    work = Path("/tmp/tg-peers-x/w")
    assert peers.audit_rule("exec", work) == [
        "always,exit",
        "-F",
        "arch=b64",
        "-S",
        "execve",
        "-k",
        "tg-peers",
    ]
    assert peers.audit_rule("openat", work)[-4:] == ["-F", "dir=/tmp/tg-peers-x/w", "-k", "tg-peers"]
    script = peers.bpftrace_script("openat", work)
    assert 'strncmp(str(args->filename), "/tmp/tg-peers-x/w/", 18) == 0' in script
    assert script.count("printf") == 1 and '\\n"' in script
    assert peers.bpftrace_script("exec", work).count("tracepoint:sched:") == 2


def test_audit_records_counts_our_syscall_records(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    exe = 'exe="/tmp/w/tg-peers-true"'
    log.write_text(
        f'type=SYSCALL msg=audit(1.0:1): syscall=59 {exe} key="tg-peers"\x1dARCH=x86_64\n'
        f"type=EXECVE msg=audit(1.0:1): argc=1 {exe}\n"
        f'type=SYSCALL msg=audit(1.0:2): syscall=59 exe="/usr/bin/true" key="tg-peers"\n'
        f'type=SYSCALL msg=audit(1.0:3): syscall=59 {exe} key="other"\n'
    )
    assert peers.audit_records(log, exe) == 1
    assert peers.audit_records(tmp_path / "none.log", exe) == 0


def _run(wall: float, delivered: int, expected: int, cpu: float) -> dict[str, Any]:
    return {
        "wall": wall,
        "delivered": delivered,
        "expected": expected,
        "lost": expected - delivered,
        "cpu_s_for_events": cpu,
        "peak_rss_mb": 50.0,
    }


def test_summary_table_and_chart(tmp_path: Path) -> None:
    results = {
        "exec": {
            "base": [{"wall": 1.0}, {"wall": 1.2}, {"wall": 1.1}],
            "agent": [_run(1.1, 200, 200, 0.001), _run(1.3, 200, 200, 0.002), _run(1.2, 200, 200, 0.001)],
            "auditd": [_run(1.3, 100, 100, 0.02)] * 3,
        },
        "openat": {"base": [{"wall": 0.5}] * 3, "bpftrace": [_run(0.6, 90, 100, 0.0004)] * 3},
    }
    summary = peers.summarize(results)
    agent = summary["exec"]["agent"]
    assert agent["ratio"] == 1.2 / 1.1 and agent["paired_ratios"] == [1.1, 1.3 / 1.2, 1.2 / 1.1]
    assert agent["cpu_us_per_event"] == 5.0 and summary["openat"]["bpftrace"]["lost_per_run"] == [10] * 3
    for workload, n in (("exec", 100), ("openat", 100)):
        summary[workload]["base"]["n"] = n
    lines = peers.table(summary)
    assert lines[3] == "| exec | agent | 1.091 (1.091) | 200 / 200 | 0 | 5.0 | 50.0 |"
    assert lines[-1] == "| openat | bpftrace | 1.200 (1.200) | 90 / 100 | 10 | 4.4 | 50.0 |"
    png = tmp_path / "peers.png"
    peers.chart(summary, png, "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert re.fullmatch(r"\| exec \| none \| 1 \(1\.100 s\) \| \| \| \| \|", lines[2])
