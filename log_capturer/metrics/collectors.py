"""Collectors that read live state when Prometheus scrapes: the leak signals and the pool."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..buffers import BufferBudget, Kind
from ..docker.pool import DockerConnectionPool
from .registry import PREFIX


def open_fd_count() -> int:
    """Open file descriptors of this process (the listing's own descriptor excluded)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1
    except OSError:
        return -1


class RuntimeCollector(Collector):
    """Threads and open file descriptors: if either grows over time, something leaks."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            f"{PREFIX}_threads", "Live Python threads.", value=threading.active_count()
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_file_descriptors_open",
            "Open file descriptors of the process.",
            value=open_fd_count(),
        )


class PoolCollector(Collector):
    """The Docker connection pool, from one consistent snapshot per scrape."""

    def __init__(self, pool: DockerConnectionPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self.pool.stats()
        p = f"{PREFIX}_docker_pool"
        conns = GaugeMetricFamily(f"{p}_connections", "Connections by state.", labels=["state"])
        conns.add_metric(["idle"], s.idle)
        conns.add_metric(["in_use"], s.in_use)
        yield conns
        yield GaugeMetricFamily(
            f"{p}_open_connections", "Connections open (idle + in use).", value=s.open
        )
        yield GaugeMetricFamily(f"{p}_max_open", "docker.pool.max_open.", value=s.max_open)
        yield GaugeMetricFamily(
            f"{p}_waiting", "Callers waiting for a connection now.", value=s.waiting
        )
        yield CounterMetricFamily(
            f"{p}_new_connections", "Connections opened.", value=s.new_connections
        )
        requests = CounterMetricFamily(
            f"{p}_requests", "Connection checkouts by request kind.", labels=["kind"]
        )
        reuses = CounterMetricFamily(
            f"{p}_reuses", "Checkouts served by an existing connection.", labels=["kind"]
        )
        ratio = GaugeMetricFamily(
            f"{p}_reuse_ratio",
            "Reuses / checkouts by request kind (1 before any).",
            labels=["kind"],
        )
        for kind in ("api", "stream"):
            requests.add_metric([kind], s.checkouts.get(kind, 0))
            reuses.add_metric([kind], s.reuses.get(kind, 0))
            ratio.add_metric([kind], s.reuse_ratio(kind))
        yield requests
        yield reuses
        yield ratio
        yield CounterMetricFamily(f"{p}_waits", "Checkouts that had to wait.", value=s.waits)
        yield CounterMetricFamily(
            f"{p}_wait_seconds", "Time spent waiting for a connection.", value=s.wait_seconds
        )
        yield CounterMetricFamily(
            f"{p}_wait_timeouts",
            "Checkouts that gave up after wait_timeout.",
            value=s.wait_timeouts,
        )
        closed = CounterMetricFamily(
            f"{p}_closed", "Connections closed, by reason.", labels=["reason"]
        )
        for reason in (
            "max_idle",
            "max_lifetime",
            "max_idle_time",
            "dropped",
            "health_check",
            "broken",
            "closed_in_use",
            "pool_closed",
        ):
            closed.add_metric([reason], s.closed.get(reason, 0))
        yield closed
        health = CounterMetricFamily(
            f"{p}_health_checks", "Idle connection health checks.", labels=["result"]
        )
        for result in ("ok", "failed"):
            health.add_metric([result], s.health_checks.get(result, 0))
        yield health


class BufferCollector(Collector):
    """What the monitors and stages hold besides the queue (buffers.py)."""

    def __init__(self, buffers: BufferBudget) -> None:
        self.buffers = buffers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        held = self.buffers.held()
        gauge = GaugeMetricFamily(
            f"{PREFIX}_buffered_bytes",
            "Bytes held besides the delivery queue, by kind (tail_hold: lines of tail reads "
            "held until checked; recent: lines kept to recognise rotation repeats; partial: "
            "split lines being joined; multiline: groups of the multiline stage); messages "
            "plus about 120 bytes a line.",
            labels=["kind"],
        )
        for kind in Kind:
            gauge.add_metric([kind.value], held[kind])
        yield gauge
        yield GaugeMetricFamily(
            f"{PREFIX}_buffer_budget_bytes",
            "container_monitor.buffer_budget: the most log_capturer_buffered_bytes"
            '{kind="tail_hold"} may reach (tail reads that do not fit are read plain).',
            value=self.buffers.total,
        )


class RegisteredCollectors:
    """The collectors one daemon registered, so it can remove them when it stops."""

    def __init__(self, registry: CollectorRegistry, collectors: list[Collector]) -> None:
        self.registry = registry
        self.collectors = collectors
        for collector in collectors:
            registry.register(collector)

    def unregister(self) -> None:
        for collector in self.collectors:
            self.registry.unregister(collector)
        self.collectors = []


def register_runtime_collectors(
    pool: DockerConnectionPool,
    registry: CollectorRegistry = REGISTRY,
    buffers: BufferBudget | None = None,
) -> RegisteredCollectors:
    collectors: list[Collector] = [RuntimeCollector(), PoolCollector(pool)]
    if buffers is not None:
        collectors.append(BufferCollector(buffers))
    return RegisteredCollectors(registry, collectors)
