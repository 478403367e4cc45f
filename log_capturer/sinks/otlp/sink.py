"""The OTLP/HTTP logs sink: batches -> export requests (encode.py), the server's answers
(responses.py), and the delivery machinery every network sink shares (sinks/network/delivery.py:
retries, spool, replay, dead letters)."""

from __future__ import annotations

from collections.abc import Mapping

from ..network.delivery import Delivery
from ..network.outcomes import Accepted, Refused, Transient
from ..network.sink import NetworkSink
from .config import LOGS_PATH, OtlpSinkConfig
from .encode import Encoder, Export
from .responses import classify


class OtlpEndpoint:
    """Where exports go, what the answers mean, how a spooled export comes back."""

    name = "otlp"

    def __init__(self, config: OtlpSinkConfig) -> None:
        self.url = config.endpoint + LOGS_PATH
        self.headers: Mapping[str, str] = (
            {"X-Scope-OrgID": config.tenant_id} if config.tenant_id else {}
        )

    def classify(
        self, status: int, body: bytes, headers: Mapping[str, str], payload: Export
    ) -> Accepted | Transient | Refused[Export]:
        return classify(status, body, headers, payload)

    def from_spool(self, data: bytes) -> Export:
        return Export.from_spool(data)


class OtlpSink(NetworkSink[Export]):
    """Exports records over OTLP/HTTP with at-least-once delivery.

    :meth:`write` encodes the batches into requests of about ``batch_bytes`` and hands
    them to :class:`~log_capturer.sinks.network.delivery.Delivery`, which returns only once every
    record is stored by the server, durably spooled, or dead-lettered with the server's
    reason (read its docstring), exactly as for the Loki sink.
    """

    name = "otlp"

    def __init__(self, config: OtlpSinkConfig) -> None:
        self.config = config
        self._encoder = Encoder(config, self.name)
        self._delivery = Delivery(
            OtlpEndpoint(config),
            config,
            spool_dir=config.spool_dir,
            dead_letter_path=config.dead_letter_path,
        )
        self._start_pipeline(config, config.batch_bytes)

    def __repr__(self) -> str:
        return f"OtlpSink(endpoint={self.config.endpoint!r}, tenant_id={self.config.tenant_id!r})"
