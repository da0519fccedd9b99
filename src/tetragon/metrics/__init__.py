"""Prometheus metrics with Tetragon's names and labels (`--metrics-server`, `--metrics-label-filter`).

families: what the metrics are (names, types, help, labels); collector: AgentMetrics, their values
(pushed by the agent or pulled from sources at scrape time) and the HTTP server.
"""

from tetragon.metrics.collector import AgentMetrics, MetricsError

__all__ = ["AgentMetrics", "MetricsError"]
