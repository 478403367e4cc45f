"""The real Grafana Loki v3.4.6 (single binary from ../shared/peers) for tests and benchmarks.

Started from ``../shared/peers/loki-local.yaml`` with multi-tenancy on, so each test
pushes and queries its own tenant (``X-Scope-OrgID``) and never sees another's entries.
Tenants with small limits, for the cases where Loki refuses entries, are set in a runtime
overrides file: :data:`LIMITS_TENANT` (short lines, few labels, old samples refused) and
:data:`NO_METADATA_TENANT` (structured metadata disallowed); tests that share one of them
tell their entries apart by a label of their own. :data:`OTLP_LIMITS_TENANT` has short
lines only (an OTLP push carries its resource attributes as structured metadata on every
line, over the metadata limits of :data:`LIMITS_TENANT`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .daemon import free_port
from .env import REPO
from .procfs import cpu_seconds

PEERS = Path(os.environ.get("LOG_CAPTURER_PEERS", REPO.parent / "shared" / "peers"))
LIMITS_TENANT = "limits"
NO_METADATA_TENANT = "no-metadata"
OTLP_LIMITS_TENANT = "otlp-limits"
LIMITS = {
    "max_line_size": 1024,
    "max_label_names_per_series": 4,
    "reject_old_samples": True,
    "reject_old_samples_max_age": "1h",
    "max_structured_metadata_size": 100,
    "max_structured_metadata_entries_count": 2,
}
_QUERY_LIMIT = 5000  # Loki's default max_entries_limit_per_query


def peers_missing() -> str | None:
    """Why the real Loki cannot run here, or None."""
    if not (PEERS / "get").exists() or not (PEERS / "loki-local.yaml").exists():
        return f"the peer binaries folder {PEERS} (../shared/peers) is absent"
    return None


def peer_binary(name: str) -> Path:
    """The ready path of a peer binary (``get`` unpacks and checks it once)."""
    result = subprocess.run(
        [str(PEERS / "get"), name], capture_output=True, text=True, timeout=300, check=True
    )
    return Path(result.stdout.strip())


@dataclass(frozen=True)
class StoredEntry:
    labels: dict[str, str]
    ts_ns: int
    line: str
    metadata: dict[str, str]


class RealLoki:
    """One Loki process with its own ports and data directory; :meth:`stop` ends it."""

    def __init__(
        self,
        workdir: Path,
        *,
        auth: bool = True,
        limits: dict[str, Any] | None = None,
        overrides: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.grpc_port = free_port()
        self.auth = auth
        self.limits = limits or {}
        self.overrides = (
            {
                LIMITS_TENANT: LIMITS,
                NO_METADATA_TENANT: {"allow_structured_metadata": False},
                OTLP_LIMITS_TENANT: {"max_line_size": LIMITS["max_line_size"]},
            }
            if overrides is None
            else overrides
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "loki.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> RealLoki:
        binary = peer_binary("loki")
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        template = (PEERS / "loki-local.yaml").read_text()
        text = (
            template.replace("GRPC_PORT", str(self.grpc_port))
            .replace("PORT", str(self.port))
            .replace("DIR", str(data))
        )
        config = yaml.safe_load(text)
        config["auth_enabled"] = self.auth
        config.setdefault("limits_config", {}).update(self.limits)
        if self.overrides:
            runtime = self.workdir / "overrides.yaml"
            runtime.write_text(yaml.safe_dump({"overrides": self.overrides}))
            config["runtime_config"] = {"file": str(runtime), "period": "1s"}
        path = self.workdir / "loki.yaml"
        path.write_text(yaml.safe_dump(config))
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process, closed below
        try:
            self.proc = subprocess.Popen(
                [str(binary), f"-config.file={path}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"loki exited ({self.proc.returncode}):\n{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"loki not ready after {timeout}s:\n{self.log_tail()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir / "data", ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def cpu_seconds(self) -> float:
        """User + system CPU of the Loki process so far."""
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)

    # -- queries ---------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, Any], tenant: str | None) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url)
        request.add_header("X-Loki-Response-Encoding-Flags", "categorize-labels")
        if tenant:
            request.add_header("X-Scope-OrgID", tenant)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def entries(
        self, selector: str, tenant: str | None = None, since_ns: int | None = None
    ) -> list[StoredEntry]:
        """Every stored entry the selector matches, oldest first (pages through Loki's
        5,000-entry limit). Loki adds ``service_name`` to the labels and
        ``detected_level`` to the metadata."""
        start = since_ns if since_ns is not None else time.time_ns() - 6 * 3600 * 10**9
        end = time.time_ns() + 600 * 10**9
        out: list[StoredEntry] = []
        seen: set[tuple[str, int, str]] = set()
        while True:
            doc = self._get(
                "/loki/api/v1/query_range",
                {"query": selector, "start": start, "end": end, "limit": _QUERY_LIMIT,
                 "direction": "forward"},
                tenant,
            )
            page: list[StoredEntry] = []
            for result in doc["data"]["result"]:
                labels = result["stream"]
                for value in result["values"]:
                    extra = value[2] if len(value) > 2 else {}
                    page.append(
                        StoredEntry(labels, int(value[0]), value[1],
                                    dict(extra.get("structuredMetadata") or {}))
                    )
            page.sort(key=lambda e: e.ts_ns)
            fresh = []
            for entry in page:
                key = (json.dumps(entry.labels, sort_keys=True), entry.ts_ns, entry.line)
                if key not in seen:
                    seen.add(key)
                    fresh.append(entry)
            out.extend(fresh)
            if len(page) < _QUERY_LIMIT or not fresh:
                break
            start = page[-1].ts_ns  # inclusive: entries at that instant are deduplicated
        out.sort(key=lambda e: e.ts_ns)
        return out

    def lines(self, selector: str, tenant: str | None = None) -> list[str]:
        return [e.line for e in self.entries(selector, tenant)]

    def count(self, selector: str, tenant: str | None = None) -> int:
        with contextlib.suppress(urllib.error.URLError, OSError):
            return len(self.entries(selector, tenant))
        return -1


def selector(**labels: str) -> str:
    return "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in labels.items()) + "}"
