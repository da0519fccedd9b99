"""deploy/grafana/tetragon-dashboard.json: valid JSON, and every metric its queries name is one the agent
exports (tetragon.metrics.families), so no panel stays empty because of a wrong name."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tetragon.metrics.families import METRICS

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "tetragon-dashboard.json"
METRIC_NAME = re.compile(r"\btetragon_[a-z0-9_]+\b")


def test_every_query_names_an_exported_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert queries
    named = set()
    for query in queries:
        names = set(METRIC_NAME.findall(query))
        assert names, f"query names no tetragon metric: {query}"
        named |= names
    assert named <= set(METRICS), named - set(METRICS)


def test_panels_do_not_overlap() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    cells = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
