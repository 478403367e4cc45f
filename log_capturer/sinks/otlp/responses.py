"""What an OTLP/HTTP server's answers mean: stored, busy (retry), or refused, and which
entries.

The OTLP/HTTP specification: a 2xx stores the request, but its body may be an
``ExportLogsServiceResponse`` with a ``partial_success`` (``rejected_log_records`` of
them refused, without saying which, and the request must not be sent again); 429, 502,
503 and 504 are retried (``Retry-After`` honoured), as are 408 and every 5xx here (Loki
answers 500 while its ingesters start); any other 4xx is final; an error's body is a
``google.rpc.Status`` (protobuf, or JSON for a JSON request).

Loki (3.4, checked against the real binary) answers ``204`` with no body, and its
``400`` is per entry as on its push API (it stores the valid entries), its Status message
the same text (tests/integration/test_otlp_delivery.py). The stream labels it names are
Loki's own, made from the resource attributes of its ``otlp_config`` (dots written
``_``): a line that refuses an entry by its length is matched to the entries of the
resources that carry those labels; anything else is bisected by the delivery machinery.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import structlog
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from ..network.loki_format import (
    ANY_STREAM,
    LINE_TOO_LONG,
    TOO_LARGE_5XX,
    error_groups,
    parse_label_text,
    sanitize_label_name,
)
from ..network.outcomes import ACCEPTED, Accepted, Refused, Transient, parse_retry_after
from ..network.text import short, text_of
from .encode import Export
from .rpc_status import Status

_log = structlog.get_logger(__name__)


def classify(
    status: int, body: bytes, headers: Mapping[str, str], export: Export
) -> Accepted | Transient | Refused[Export]:
    """What the answer ``status``/``body`` to ``export`` means for its entries."""
    if 200 <= status < 300:
        return read_success(status, body, headers, export)
    message = error_message(body, headers) or f"HTTP {status}"
    everything = range(len(export))
    if status >= 500 and any(marker in message for marker in TOO_LARGE_5XX):
        return Refused(status, message, split=everything)  # smaller requests pass
    if status in (408, 429) or status >= 500:
        return Transient(status, message, parse_retry_after(headers.get("Retry-After")))
    if status == 400:
        return read_400(message, export)
    if status == 413:
        return Refused(status, message, split=everything)
    return Refused(status, message, named=[(everything, message)])  # 401, 403, 404, 415...


def _is_json(headers: Mapping[str, str]) -> bool:
    return "json" in headers.get("Content-Type", "").lower()


def error_message(body: bytes, headers: Mapping[str, str]) -> str:
    """The message of an error's ``google.rpc.Status`` body, or the body as text."""
    if not body:
        return ""
    if _is_json(headers):
        try:
            doc = json.loads(body)
            if isinstance(doc, dict) and isinstance(doc.get("message"), str):
                return text_of(doc["message"].encode())
        except ValueError:
            pass
        return text_of(body)
    try:
        message = Status.FromString(body).message
    except DecodeError:
        return text_of(body)
    return text_of(message.encode()) if message else text_of(body)


def read_success(
    status: int, body: bytes, headers: Mapping[str, str], export: Export
) -> Accepted | Refused[Export]:
    """A 2xx: stored, unless its ``partial_success`` refuses some records."""
    if not body:
        return ACCEPTED
    try:
        if _is_json(headers):
            doc = json.loads(body).get("partialSuccess") or {}
            rejected = int(doc.get("rejectedLogRecords") or 0)
            warning = str(doc.get("errorMessage") or "")
        else:
            partial = ExportLogsServiceResponse.FromString(body).partial_success
            rejected, warning = partial.rejected_log_records, partial.error_message
    except (ValueError, TypeError, AttributeError, DecodeError) as exc:
        _log.warning("otlp_success_body_unreadable", status=status, error=short(str(exc)))
        return ACCEPTED
    if rejected <= 0:
        if warning:
            _log.warning("otlp_export_warning", status=status, message=short(warning))
        return ACCEPTED
    everything = range(len(export))
    message = (
        f"partial success: {rejected} of {len(export)} log records rejected: "
        f"{warning or '(no message)'}"
    )
    if rejected >= len(export):
        return Refused(status, message, named=[(everything, message)])
    # Which ones the server does not say, and the request must not be sent again.
    return Refused(status, message, doubtful=everything)


def read_400(message: str, export: Export) -> Refused[Export]:
    """Match each error line of a 400 (Loki's texts) to the entries it refuses."""
    everything = range(len(export))
    named: list[tuple[list[int], str]] = []
    unresolved: set[int] = set()
    for _, line in error_groups(message):
        if m := LINE_TOO_LONG.match(line):
            where = _resources_named(m.group(2), export)
            length, limit = int(m.group(3)), int(m.group(1))
            pool = export.entries_of(where) if where else list(everything)
            sizes = {p: export.line_bytes(p) for p in pool}
            chosen = [p for p in pool if sizes[p] == length] or [
                p for p in pool if sizes[p] > limit
            ]
            if chosen:
                named.append((chosen, line))
                continue
        found = ANY_STREAM.search(line)
        where = _resources_named(found.group(1), export) if found else set()
        unresolved.update(export.entries_of(where) if where else everything)
    taken = {p for positions, _ in named for p in positions}
    return Refused(400, message, named=named, unresolved=sorted(unresolved - taken))


def _resources_named(label_text: str, export: Export) -> set[int]:
    """The streams of ``export`` whose resource attributes, written as Loki labels, carry
    every label of ``label_text`` (Loki adds none of its own to an OTLP stream's labels
    but what the attributes give)."""
    labels = parse_label_text(label_text)
    if not labels:
        return set()
    wanted = set(labels.items())
    streams = export.streams
    found = set()
    for stream in {streams.stream_of[i] for i in export.positions}:
        written = {(sanitize_label_name(k), v) for k, v in streams.labels[stream].items()}
        if wanted <= written:
            found.add(stream)
    return found
