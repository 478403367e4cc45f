"""The test kit's own logic: the audits every test relies on, and the benchmarks' flags."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from log_capturer_testkit import audit_numbered, bench, compare_stream, slope_per_min
from log_capturer_testkit.bench import BenchParser
from log_capturer_testkit.lagtrace import summarize
from log_capturer_testkit.metrics import histogram_quantile, parse_metrics
from log_capturer_testkit.sink import SinkTailer


def test_compare_stream_tells_lost_duplicated_unexpected_and_order_apart() -> None:
    written = ["a", "b", "c"]
    assert compare_stream(written, ["a", "b", "c"]).exact
    lost = compare_stream(written, ["a", "c"])
    assert (lost.exact, lost.lost, lost.missing_sample) == (False, 1, ["b"])
    dup = compare_stream(written, ["a", "b", "b", "c"])
    assert (dup.exact, dup.duplicated, dup.lost, dup.unexpected) == (False, 1, 0, 0)
    odd = compare_stream(written, ["a", "b", "c", "zz"])
    assert (odd.exact, odd.unexpected, odd.unexpected_sample) == (False, 1, ["zz"])
    swapped = compare_stream(written, ["b", "a", "c"])
    assert not swapped.exact and swapped.out_of_order
    assert not lost.out_of_order and not dup.out_of_order
    # Repeated lines count: a line written twice and delivered once is one lost.
    assert compare_stream(["x", "x"], ["x"]).lost == 1


def test_audit_numbered_counts_each_number_and_the_end_marker(tmp_path: Path) -> None:
    def line(name: str, message: str, stream: str = "stdout") -> str:
        return json.dumps({"container_name": name, "stream": stream, "message": message})

    rows = [
        line("a", "1 x"),
        line("a", "2 x"),
        line("a", "2 x"),
        line("a", "end 3"),
        line("b", "1 x"),
        line("b", "2 x"),
        line("b", "oops", "stderr"),
        line("other", "1 x"),
    ]
    path = tmp_path / "logs.jsonl"
    path.write_text("\n".join(rows) + "\n" + line("a", "4 x"))  # the last line is incomplete
    audit = audit_numbered(path, ["a", "b"])
    assert audit.containers == 2
    assert audit.delivered == 7
    assert audit.lost == 1  # a: 3
    assert audit.duplicated == 1  # a: 2
    assert audit.unexpected == 1  # b: a line on stderr
    assert audit.incomplete == ["b: 0 end markers"]
    assert not audit.ok()


def test_slope_per_min() -> None:
    assert slope_per_min([]) == 0.0
    assert slope_per_min([(0, 5)]) == 0.0
    assert slope_per_min([(0, 1), (30, 2), (60, 3)]) == pytest.approx(2.0)
    assert slope_per_min([(0, 7), (60, 7), (120, 7)]) == 0.0


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    metrics = parse_metrics(
        "# TYPE lag histogram\n"
        'lag_bucket{le="1.0"} 50\nlag_bucket{le="2.0"} 100\nlag_bucket{le="+Inf"} 100\n'
        "lag_sum 120\nlag_count 100\n"
    )
    buckets = [(1.0, metrics['lag_bucket{le="1.0"}']), (2.0, metrics['lag_bucket{le="2.0"}'])]
    assert histogram_quantile(0.5, buckets) == pytest.approx(1.0)
    assert histogram_quantile(0.75, buckets) == pytest.approx(1.5)
    assert math.isnan(histogram_quantile(0.5, []))


def test_bench_parser_quick_replaces_defaults_but_not_explicit_flags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bench.signal, "signal", lambda *args: None)  # pytest keeps SIGTERM

    def parser() -> BenchParser:
        p = BenchParser("doc", quick={"containers": 5, "stall_timeout": 9.0}, stall_timeout=90)
        p.add_argument("--containers", type=int, default=500)
        return p

    full = parser().parse([])
    assert (full.containers, full.stall_timeout, full.quick) == (500, 90, False)
    quick = parser().parse(["--quick"])
    assert (quick.containers, quick.stall_timeout) == (5, 9.0)
    mixed = parser().parse(["--quick", "--containers", "7"])
    assert (mixed.containers, mixed.stall_timeout) == (7, 9.0)
    assert not hasattr(full, "drain_timeout")  # not asked for: no such flag
    with pytest.raises(ValueError, match="unknown"):
        BenchParser("doc", quick={"nope": 1}).parse([])


def test_sink_tailer_reports_every_watched_line_apart(tmp_path: Path) -> None:
    out = tmp_path / "logs.jsonl"
    ts = "2026-12-04T12:00:00.500000000Z"
    out.write_text(
        "".join(
            f'{{"ts":"{ts}","container_id":"x","container_name":"{name}","message":"m"}}\n'
            for name in ("bench-quiet0", "bench-loud0", "bench-quiet1", "bench-loud0")
        )
    )
    tailer = SinkTailer(out, sample_every=1, watch=b'"container_name":"bench-quiet')
    tailer.start()
    tailer.stop()
    assert tailer.stats.lines == 4
    assert len(tailer.stats.watched_lags) == 2 and len(tailer.stats.lag_samples) == 2


def test_lagtrace_splits_each_line_s_time_into_its_parts(tmp_path: Path) -> None:
    trace = tmp_path / "lagtrace.txt"
    # container, lines in batch, in delivery, ts, read, put, get, write start, end, ahead
    trace.write_text(
        "L q-quiet0 1 10001 100.0 100.01 100.02 100.52 100.53 100.55 9000\n"
        "L q-loud0 5000 10001 90.0 99.0 99.0 99.1 99.2 99.3 -1\n"
        "C 101.0 0.25\n"
    )
    parts = summarize(trace, {"quiet": "-quiet", "loud": "-loud"})
    quiet = parts["quiet"]
    assert quiet["lines"] == 1
    assert quiet["engine_to_read"]["max"] == 0.01
    assert quiet["queued_to_taken"]["max"] == 0.5
    assert quiet["taken_to_written"]["max"] == 0.03
    assert quiet["total"]["max"] == 0.55
    assert quiet["lines_queued_ahead_p50_p99_max"] == [9000, 9000, 9000]
    assert parts["loud"]["engine_to_read"]["p50"] == 9.0
    assert parts["checkpoint_s_p50_p99_max"] == [0.25, 0.25, 0.25]
