"""The Grafana Loki sink: records -> pushes (encode.py), Loki's answers (responses.py), and
the shared delivery machinery (sinks/network/delivery.py: retries, spool, replay, dead letters)."""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from ..network.delivery import Delivery
from ..network.outcomes import Accepted, Refused, Transient
from ..network.sink import NetworkSink
from ..network.text import short
from .config import PUSH_PATH, LokiSinkConfig
from .encode import Encoder
from .push import Push
from .responses import classify

_log = structlog.get_logger(__name__)


class LokiEndpoint:
    """Where pushes go, what Loki's answers mean, how a spooled push comes back."""

    name = "loki"

    def __init__(self, config: LokiSinkConfig, encoder: Encoder) -> None:
        self.url = config.url + PUSH_PATH
        self.headers: Mapping[str, str] = (
            {"X-Scope-OrgID": config.tenant_id} if config.tenant_id else {}
        )
        self._encoder = encoder

    def classify(
        self, status: int, body: bytes, headers: Mapping[str, str], payload: Push
    ) -> Accepted | Transient | Refused[Push]:
        text = body.decode("utf-8", "replace") if status >= 300 else ""
        return classify(status, text, headers, payload, self._metadata_disallowed)

    def from_spool(self, data: bytes) -> Push:
        push = Push.from_spool(data)
        if not self._encoder.metadata_enabled and push.has_metadata:
            push = push.without_metadata()
        return push

    def _metadata_disallowed(self, error: str) -> None:
        if self._encoder.metadata_enabled:
            self._encoder.metadata_enabled = False
            _log.error(
                "loki_structured_metadata_disallowed",
                error=short(error),
                hint="sending without structured metadata; set structured_metadata: [] "
                "or enable it in Loki's limits_config",
            )


class LokiSink(NetworkSink[Push]):
    """Pushes records to Grafana Loki with at-least-once delivery.

    :meth:`write` encodes the batches into pushes of about ``batch_bytes`` (protobuf +
    snappy, or JSON + gzip) and hands them to :class:`~log_capturer.sinks.network.delivery.
    Delivery`, which returns only once every entry is stored by Loki, durably spooled,
    or dead-lettered with Loki's reason (read its docstring: retries, spool, replay, and
    the bounded settling of a 400, which Loki answers per entry).

    Loki reports entries "too far behind" only for the last stream of a request;
    such entries of earlier streams are dropped with a ``204`` and cannot be seen here.
    """

    name = "loki"

    def __init__(self, config: LokiSinkConfig) -> None:
        self.config = config
        encoder = Encoder(config)
        self._encoder = encoder
        self._delivery = Delivery(
            LokiEndpoint(config, encoder),
            config,
            spool_dir=config.spool_dir,
            dead_letter_path=config.dead_letter_path,
        )
        self._start_pipeline(config, config.batch_bytes)

    def __repr__(self) -> str:
        return f"LokiSink(url={self.config.url!r}, tenant_id={self.config.tenant_id!r})"
