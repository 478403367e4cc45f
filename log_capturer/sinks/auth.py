"""Credentials of the network sinks: read once from the environment or a file, never shown."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path

import requests

from .network_config import NetworkSinkConfig

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


class Auth(requests.auth.AuthBase):
    """Sets ``Authorization`` per request, so the secret is never stored in session state."""

    def __init__(self, scheme: str, credentials: Callable[[], str]) -> None:
        self._scheme = scheme
        self._credentials = credentials

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"{self._scheme} {self._credentials()}"
        return request

    def __repr__(self) -> str:
        return f"Auth({self._scheme}, ***)"


def _basic(username: str, password: Secret) -> Callable[[], str]:
    def credentials() -> str:
        raw = f"{username}:{password.reveal()}".encode()
        return base64.b64encode(raw).decode("ascii")

    return credentials


def make_auth(config: NetworkSinkConfig, sink: str) -> Auth | None:
    """The ``Authorization`` of ``config`` (basic or bearer), or None; raises
    :class:`SecretUnavailableError` naming the variable or file when a secret is missing."""
    if config.username:
        password = read_secret(config.password_env, config.password_file, "password", sink)
        return Auth("Basic", _basic(config.username, password))
    if config.bearer_token_env or config.bearer_token_file:
        token = read_secret(
            config.bearer_token_env, config.bearer_token_file, "bearer token", sink
        )
        return Auth("Bearer", token.reveal)
    return None
