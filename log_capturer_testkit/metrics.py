"""Prometheus text from /metrics: parsing, totals, histogram quantiles."""

from __future__ import annotations

import math
import re
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Metrics = dict[str, float]
"""Series as ``name{label="v",...}`` (labels sorted; bare ``name`` without labels) -> value."""


def parse_metrics(text: str) -> Metrics:
    """Prometheus text exposition -> :data:`Metrics`."""
    out: Metrics = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def scrape(url: str, timeout: float = 15) -> Metrics:
    """GET a /metrics URL and parse it."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return parse_metrics(response.read().decode())


def metric_total(metrics: Metrics, name: str) -> float:
    """Sum of every series of ``name`` (any labels)."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


_LE = re.compile(r'le="([^"]+)"')


def histogram_buckets(metrics: Metrics, name: str, match: str = "") -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of ``name`` summed over series containing ``match``."""
    out: dict[float, float] = {}
    for key, value in metrics.items():
        if not key.startswith(name + "_bucket{") or match not in key:
            continue
        m = _LE.search(key)
        if m:
            le = float(m.group(1))
            out[le] = out.get(le, 0.0) + value
    return sorted(out.items())


def histogram_delta(
    after: list[tuple[float, float]], before: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """The observations between two scrapes of the same histogram."""
    prior = dict(before)
    return [(le, count - prior.get(le, 0.0)) for le, count in after]


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile: linear inside the bucket; the +Inf bucket answers
    the highest finite bound."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def fraction_le(bound: float, buckets: list[tuple[float, float]]) -> float:
    """Share of observations at or below the largest bucket bound <= ``bound``."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    below = [count for le, count in buckets if le <= bound]
    return (below[-1] if below else 0.0) / buckets[-1][1]
