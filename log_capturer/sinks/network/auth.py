"""Credentials of the network sinks: read once from the environment or a file, never shown."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

import requests

from .config import NetworkSinkConfig

# -- secrets -------------------------------------------------------------------------------


class SecretUnavailableError(OSError):
    """A configured credential cannot be read. An OSError: the daemon reports it at start-up."""


class Secret:
    """A credential kept out of repr, str and logs; :meth:`reveal` is the only way to it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def read_secret(env: str | None, path: str | None, what: str, sink: str) -> Secret:
    """The secret from environment variable ``env`` or file ``path`` (trailing newline cut)."""
    if env:
        value = os.environ.get(env, "")
        if not value:
            raise SecretUnavailableError(
                f"{sink} sink: {what}: environment variable {env} is not set"
            )
        return Secret(value)
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise SecretUnavailableError(
                f"{sink} sink: {what}: cannot read {path}: {exc.strerror or type(exc).__name__}"
            ) from None
        if not value:
            raise SecretUnavailableError(f"{sink} sink: {what}: {path} is empty")
        return Secret(value)
    raise SecretUnavailableError(f"{sink} sink: {what}: no environment variable or file configured")


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)


def parse_headers(text: str, where: str) -> dict[str, str]:
    """``name=value`` pairs separated by commas or newlines, values percent-encoded (the
    OTEL_EXPORTER_OTLP_HEADERS format). Errors name the pair's position, never its value."""
    out: dict[str, str] = {}
    for number, pair in enumerate((p for p in re.split(r"[,\n]", text) if p.strip()), 1):
        name, sep, value = pair.partition("=")
        name = unquote(name.strip())
        if not sep or not _HEADER_NAME.match(name):
            raise SecretUnavailableError(
                f"{where}: header {number} is not name=value with a valid header name"
            )
        value = unquote(value.strip())
        if "\r" in value or "\n" in value:
            raise SecretUnavailableError(f"{where}: header {name} has a line break in its value")
        out[name] = value
    if not out:
        raise SecretUnavailableError(f"{where}: no header")
    return out


class Auth(requests.auth.AuthBase):
    """Sets ``Authorization`` and the extra headers per request, so no secret is stored in
    session state; repr shows no value."""

    def __init__(
        self,
        scheme: str | None,
        credentials: Callable[[], str] | None,
        headers: Secret | None = None,
        where: str = "",
    ) -> None:
        self._scheme = scheme
        self._credentials = credentials
        self._headers = parse_headers(headers.reveal(), where) if headers is not None else {}

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self._scheme is not None and self._credentials is not None:
            request.headers["Authorization"] = f"{self._scheme} {self._credentials()}"
        request.headers.update(self._headers)
        return request

    def __repr__(self) -> str:
        names = ", ".join(sorted(self._headers))
        return f"Auth({self._scheme}, ***{', headers: ' + names if names else ''})"


def _basic(username: str, password: Secret) -> Callable[[], str]:
    def credentials() -> str:
        raw = f"{username}:{password.reveal()}".encode()
        return base64.b64encode(raw).decode("ascii")

    return credentials


def make_auth(config: NetworkSinkConfig, sink: str) -> Auth | None:
    """The ``Authorization`` of ``config`` (basic or bearer) and its extra headers, or None;
    raises :class:`SecretUnavailableError` naming the variable or file when a secret is
    missing or the headers cannot be read."""
    headers = None
    where = ""
    if config.headers_env or config.headers_file:
        headers = read_secret(config.headers_env, config.headers_file, "headers", sink)
        where = f"{sink} sink: headers from " + (
            f"environment variable {config.headers_env}"
            if config.headers_env
            else str(config.headers_file)
        )
    if config.username:
        password = read_secret(config.password_env, config.password_file, "password", sink)
        return Auth("Basic", _basic(config.username, password), headers, where)
    if config.bearer_token_env or config.bearer_token_file:
        token = read_secret(
            config.bearer_token_env, config.bearer_token_file, "bearer token", sink
        )
        return Auth("Bearer", token.reveal, headers, where)
    if headers is not None:
        return Auth(None, None, headers, where)
    return None
