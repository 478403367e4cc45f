"""The package's shape (issue 20): small functions and modules, imports that follow the
flow, no test-only code in it."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "log_capturer"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_no_function_is_over_80_lines() -> None:
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} {lines}")
    assert long == []


def test_no_module_is_over_500_lines() -> None:
    long = [
        f"{path.relative_to(PACKAGE)} {n}"
        for path in _modules()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert long == []


def test_discovery_does_not_import_the_monitor() -> None:
    for path in (PACKAGE / "discovery").rglob("*.py"):
        assert not any(m.startswith("log_capturer.monitor") for m in _imports(path)), path


def test_the_otlp_sink_does_not_import_the_loki_sink() -> None:
    for path in (PACKAGE / "sinks" / "otlp").rglob("*.py"):
        assert not any(m.startswith("log_capturer.sinks.loki") for m in _imports(path)), path


def test_no_test_fault_module_in_the_package() -> None:
    assert not (PACKAGE / "monitor" / "faults.py").exists()
    for path in _modules():
        assert "LOG_CAPTURER_TEST_FAULT" not in path.read_text(), path


def test_a_daemon_without_network_sinks_does_not_import_them() -> None:
    """The Loki and OTLP sinks (protobuf: about 60 ms of CPU at every start, measured in
    benchmarks/README.md; numpy about 80 ms and 10 MB) are imported when enabled, not by
    the daemon's own modules; their config models are."""
    code = (
        "import sys, log_capturer.cli, log_capturer.supervisor\n"
        "from log_capturer.sinks.config import SinksConfig\n"
        "assert SinksConfig().loki.enabled is False\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('google.protobuf', 'numpy',"
        " 'log_capturer.sinks.loki.sink', 'log_capturer.sinks.otlp.sink')))\n"
        "print(loaded)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
    from log_capturer.sinks.loki import LokiSink
    from log_capturer.sinks.otlp import OtlpSink

    assert LokiSink.__name__ == "LokiSink" and OtlpSink.__name__ == "OtlpSink"


def test_numpy_starts_no_thread_of_its_own() -> None:
    """numpy's OpenBLAS would start a thread per core at import: a thread without an owner
    (and a leak signal in /metrics); the network sinks import numpy without one."""
    code = (
        "import os\n"
        "before = len(os.listdir('/proc/self/task'))\n"
        "import log_capturer.sinks.loki.push, log_capturer.sinks.otlp.encode\n"
        "import numpy\n"
        "print(before, len(os.listdir('/proc/self/task')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    assert out[0] == out[1] == "1"
