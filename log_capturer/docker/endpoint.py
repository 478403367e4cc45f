"""Where the engine is and how to reach it: a unix socket, or TCP with or without TLS.

The address comes from ``docker.host``, else ``docker.socket_path``, else the
``DOCKER_HOST`` environment variable, else ``unix:///var/run/docker.sock`` (the rule is
stated once, in :class:`~.config.DockerConfig`'s field descriptions). TLS settings come
from ``docker.tls`` keys, else from ``DOCKER_TLS_VERIFY``, ``DOCKER_TLS`` and
``DOCKER_CERT_PATH`` as the docker CLI reads them (``ca.pem``, ``cert.pem``,
``key.pem`` in that folder, ``~/.docker`` by default).

:class:`TlsContext` builds the ``ssl.SSLContext`` and builds it again when a
certificate file changes (rotated certificates are picked up by the next connection;
a wrong CA replaced by the right one ends the failures without a restart).
:func:`tls_failure` finds the ``ssl`` error under a failed request and names its cause.
"""

from __future__ import annotations

import os
import ssl
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .config import DockerConfig

DEFAULT_SOCKET = "/var/run/docker.sock"
PLAIN_PORT = 2375  # the docker CLI's default ports for tcp:// without a port
TLS_PORT = 2376


class EndpointError(ValueError):
    """An engine address or TLS setting that cannot work (a configuration error)."""


class TlsFilesError(ssl.SSLError):
    """The TLS files cannot be read or parsed (a failure like any TLS failure: retried)."""

    reason = "LOAD_FAILED"

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "cannot load the TLS files"


@dataclass(frozen=True)
class TlsFiles:
    """TLS towards the engine: what to trust and which client certificate to show."""

    verify: bool  # check the engine's certificate (and its name) against ca_file
    ca_file: str | None  # None with verify: the system's CAs
    cert_file: str | None
    key_file: str | None


@dataclass(frozen=True)
class Endpoint:
    """The engine's address, resolved once at start."""

    scheme: str  # "unix" or "tcp"
    path: str  # the socket (unix)
    host: str  # the host name or address (tcp); "localhost" for a unix socket
    port: int  # 0 for a unix socket
    tls: TlsFiles | None
    source: str  # which setting named it: docker.host, docker.socket_path, DOCKER_HOST, default

    @property
    def address(self) -> str:
        """As a user writes it: ``unix:///path`` or ``tcp://host:port``."""
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def _truthy(environ: Mapping[str, str], name: str) -> bool:
    """As the docker CLI reads ``DOCKER_TLS_VERIFY`` and ``DOCKER_TLS``: set and not empty
    (so ``0`` also means on)."""
    return environ.get(name, "") != ""


def resolve_endpoint(config: DockerConfig, environ: Mapping[str, str] | None = None) -> Endpoint:
    """The engine's address and TLS settings from the config and the environment."""
    environ = os.environ if environ is None else environ
    if config.host:
        address, source = config.host, "docker.host"
    elif config.socket_path:
        address, source = f"unix://{config.socket_path}", "docker.socket_path"
    elif environ.get("DOCKER_HOST"):
        address, source = environ["DOCKER_HOST"], "DOCKER_HOST"
    else:
        address, source = f"unix://{DEFAULT_SOCKET}", "default"
    parsed = urllib.parse.urlsplit(address)
    if parsed.scheme == "unix":
        path = (parsed.netloc + parsed.path) or DEFAULT_SOCKET
        return Endpoint("unix", path, "localhost", 0, None, source)
    if parsed.scheme != "tcp":
        raise EndpointError(
            f"{source}: {address!r}: the engine's address must be unix:///path or "
            "tcp://host:port (ssh:// and others: forward a local socket or port to it)"
        )
    if not parsed.hostname:
        raise EndpointError(f"{source}: {address!r}: no host in the address")
    tls = _resolve_tls(config, environ)
    try:
        port = parsed.port or (TLS_PORT if tls else PLAIN_PORT)
    except ValueError as exc:
        raise EndpointError(f"{source}: {address!r}: {exc}") from exc
    return Endpoint("tcp", "", parsed.hostname, port, tls, source)


def _resolve_tls(config: DockerConfig, environ: Mapping[str, str]) -> TlsFiles | None:
    tc = config.tls
    verify = tc.verify if tc.verify is not None else _truthy(environ, "DOCKER_TLS_VERIFY")
    named = any((tc.ca_file, tc.cert_file, tc.key_file))
    enabled = tc.enabled
    if enabled is None:
        enabled = verify or named or _truthy(environ, "DOCKER_TLS")
    if not enabled:
        return None
    cert_dir = Path(environ.get("DOCKER_CERT_PATH") or Path.home() / ".docker")

    def default(name: str) -> str | None:
        path = cert_dir / name
        return str(path) if path.is_file() else None

    ca_file = tc.ca_file or default("ca.pem")
    cert_file = tc.cert_file or (None if tc.key_file else default("cert.pem"))
    key_file = tc.key_file or (None if tc.cert_file else default("key.pem"))
    if bool(cert_file) != bool(key_file):
        raise EndpointError(
            "docker.tls: a client certificate needs both cert_file and key_file "
            f"(cert_file={cert_file!r}, key_file={key_file!r})"
        )
    return TlsFiles(verify, ca_file, cert_file, key_file)


class TlsContext:
    """The ``SSLContext`` for the engine, built again when one of its files changes.

    :meth:`get` is called for every new connection (not per request): three ``stat``
    calls. A file that cannot be read or parsed raises :class:`ssl.SSLError`
    (reason ``LOAD_FAILED``), so the connection fails like any TLS failure: retried,
    logged once per episode, counted.
    """

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        self._signature: tuple[object, ...] | None = None

    def _paths(self) -> list[str]:
        f = self.files
        return [p for p in (f.ca_file, f.cert_file, f.key_file) if p]

    def _stat(self) -> tuple[object, ...]:
        out: list[object] = []
        for path in self._paths():
            try:
                st = os.stat(path)
                out.append((path, st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError as exc:
                out.append((path, exc.errno))
        return tuple(out)

    def get(self) -> ssl.SSLContext:
        with self._lock:
            signature = self._stat()
            if self._context is None or signature != self._signature:
                self._context = self._build()
                self._signature = signature
            return self._context

    def _build(self) -> ssl.SSLContext:
        f = self.files
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            if f.verify:
                if f.ca_file:
                    context.load_verify_locations(cafile=f.ca_file)
                else:
                    context.load_default_certs()
            else:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if f.cert_file and f.key_file:
                context.load_cert_chain(f.cert_file, f.key_file)
        except (OSError, ValueError) as exc:
            detail = (exc.reason or str(exc)) if isinstance(exc, ssl.SSLError) else str(exc)
            raise TlsFilesError(f"cannot load the TLS files {self._paths()}: {detail}") from exc
        return context


VAGUE_REASONS = frozenset({"UNEXPECTED_EOF", "UNEXPECTED_EOF_WHILE_READING"})
"""Reasons that say only that the engine hung up: the same refusal shows as these or as
its alert (bad certificate) depending on timing, so they never start a new episode."""


@dataclass(frozen=True)
class TlsFailure:
    """Why a TLS connection to the engine failed."""

    reason: str  # OpenSSL's reason in lower case (the metric label), e.g. certificate_verify_failed
    detail: str  # what OpenSSL said, e.g. "unable to get local issuer certificate"
    cause: str  # what it means here, for the log

    @property
    def vague(self) -> bool:
        return self.reason.upper() in VAGUE_REASONS


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception under it: causes, contexts, and the errors that
    urllib3 and requests carry in ``reason`` or ``args``."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 32:
        current = todo.pop(0)
        if any(current is s for s in seen):
            continue
        seen.append(current)
        nested = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        nested.extend(a for a in current.args if isinstance(a, BaseException))
        todo.extend(n for n in nested if isinstance(n, BaseException))
    return seen


def tls_failure(exc: BaseException) -> TlsFailure | None:
    """The TLS failure under ``exc`` (a handshake refused either way, certificates that
    cannot be loaded), or None if it is not one."""
    for error in _causes(exc):
        if not isinstance(error, ssl.SSLError):
            continue
        default = "UNEXPECTED_EOF" if isinstance(error, ssl.SSLEOFError) else type(error).__name__
        reason = str(getattr(error, "reason", None) or default).upper()
        detail = getattr(error, "verify_message", None) or str(error)
        return TlsFailure(reason.lower(), str(detail), _meaning(reason))
    return None


def _meaning(reason: str) -> str:
    if reason == "CERTIFICATE_VERIFY_FAILED":
        return (
            "the engine's certificate is not signed by the CA we trust (docker.tls.ca_file "
            "or $DOCKER_CERT_PATH/ca.pem), or it does not name the host we connect to"
        )
    if "ALERT" in reason or reason == "CERTIFICATE_REQUIRED":
        return (
            "the engine refused our client certificate (docker.tls.cert_file or "
            "$DOCKER_CERT_PATH/cert.pem): missing, expired, or not signed by a CA the engine "
            "trusts (its --tlscacert)"
        )
    if reason in VAGUE_REASONS:
        return (
            "the engine closed the connection during the TLS handshake (it often does so "
            "instead of saying that it refused our client certificate)"
        )
    if reason == "WRONG_VERSION_NUMBER":
        return "the engine does not speak TLS on this port"
    if reason == "LOAD_FAILED":
        return "the TLS files could not be read"
    return "the TLS handshake with the engine failed"
