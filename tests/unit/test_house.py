"""The package's shape (issue 20): small functions and modules, imports that follow the
flow, no test-only code in it."""

from __future__ import annotations

import ast
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
