"""Fixtures shared by unit and integration tests: the real Loki (one per session)."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from log_capturer_testkit.loki import RealLoki, peers_missing
from tests.require import require


@pytest.fixture(scope="session")
def real_loki() -> Iterator[RealLoki]:
    """A real Loki v3.4.6, started once per session (about 15-20 s), multi-tenant: use
    :func:`loki_tenant` for a tenant of the test's own. Skipped only where the peers
    folder (../shared/peers) is absent; under CI=true that fails (tests/require.py)."""
    missing = peers_missing()
    require(missing is None, f"real Loki unavailable: {missing}")
    workdir = Path(tempfile.mkdtemp(prefix="log-capturer-loki-"))
    loki = RealLoki(workdir)
    try:
        loki.start()
        yield loki
    finally:
        loki.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def loki_tenant() -> str:
    """A tenant no other test uses: what the test pushes and queries is its own."""
    return f"t-{uuid.uuid4().hex[:12]}"
