"""The harness the integration tests, the soak (scripts/smoke_test.py) and the benchmarks
(benchmarks/*.py) share: the real daemon as a process, containers on the real engine,
waiting on conditions, /metrics, exactly-once audits, /proc figures.

It is installed (editable) with the project by scripts/bootstrap.sh, so any of them
imports it as ``log_capturer_testkit``; it is never part of the image (the Dockerfile
copies only ``log_capturer/``). Modules:

* ``daemon``: :class:`Daemon` (config, start, stop, kill, /ready, /metrics, records);
* ``fleet``: :class:`Fleet`, containers labelled with their run id, removed by it;
* ``waiting``: :func:`wait_for`, :func:`wait_count`;
* ``metrics``: parsing and scraping /metrics, totals, histogram quantiles;
* ``audit``: exactly once and in order per stream, against a list, the engine's own
  log, or numbered lines;
* ``stats``: :func:`slope_per_min`, :func:`percentile`; ``procfs``: CPU, RSS, dockerd;
* ``sink``: following the file sink as it grows; ``workloads``: what benchmark
  containers write; ``bench``: the benchmarks' common flags and output.
"""

from .audit import (
    EngineAudit,
    NumberedAudit,
    StreamAudit,
    assert_exactly_once,
    audit_engine,
    audit_numbered,
    by_stream,
    compare_stream,
)
from .daemon import Daemon, Record, deep_merge, free_port, read_records
from .env import BENCH_LABEL, REPO, SMOKE_LABEL, TEST_IMAGE, TEST_LABEL
from .fleet import Fleet, Started, engine_lines
from .metrics import Metrics, metric_total, parse_metrics, scrape
from .procfs import cpu_seconds, dockerd_pid, rss_mb
from .stats import percentile, slope_per_min
from .waiting import wait_count, wait_for

__all__ = [
    "BENCH_LABEL",
    "REPO",
    "SMOKE_LABEL",
    "TEST_IMAGE",
    "TEST_LABEL",
    "Daemon",
    "EngineAudit",
    "Fleet",
    "Metrics",
    "NumberedAudit",
    "Record",
    "Started",
    "StreamAudit",
    "assert_exactly_once",
    "audit_engine",
    "audit_numbered",
    "by_stream",
    "compare_stream",
    "cpu_seconds",
    "deep_merge",
    "dockerd_pid",
    "engine_lines",
    "free_port",
    "metric_total",
    "parse_metrics",
    "percentile",
    "read_records",
    "rss_mb",
    "scrape",
    "slope_per_min",
    "wait_count",
    "wait_for",
]
