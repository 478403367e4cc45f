"""The configuration reference: generated from the models, complete, current, and loadable.

The keys are enumerated here by a walk of the models of its own, so a key the generator
missed fails these tests rather than vanishing from both sides.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from log_capturer.config.loader import ENV_PREFIX, Config, load_config
from log_capturer.config.reference import format_duration, format_size, render_reference
from log_capturer.config.types import parse_byte_size, parse_duration

REPO = Path(__file__).resolve().parents[2]
CHECKED_IN = REPO / "docs" / "config-reference.yaml"
REGENERATE = ".venv/bin/log-capturer config-reference > docs/config-reference.yaml"
SHIPPED = [REPO / "config.yaml", REPO / "deploy" / "log_capturer" / "config.yaml"]


def model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def keys(
    model: type[BaseModel], path: tuple[str, ...] = (), in_item: bool = False
) -> Iterator[tuple[tuple[str, ...], FieldInfo, bool]]:
    """Every key of ``model`` and its sections: (path, field, whether inside a list item).

    The item of a ``list[Model]`` contributes its keys under the path element ``[]``.
    """
    for name, field in model.model_fields.items():
        yield (*path, name), field, in_item
        nested = model_of(field.annotation)
        if nested is not None:
            yield from keys(nested, (*path, name), in_item)
        elif get_origin(field.annotation) is list:
            item = model_of(get_args(field.annotation)[0])
            if item is not None:
                yield from keys(item, (*path, name, "[]"), True)


def dotted(path: tuple[str, ...]) -> str:
    return ".".join(path).replace(".[]", "[]")


def comment_text(reference: str) -> str:
    """Every comment of the reference as one line of words (wrapping undone)."""
    words = []
    for line in reference.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            words += stripped[1:].split()
    return " ".join(words)


def sources() -> list[tuple[str, str]]:
    found = [("rendered", render_reference())]
    if CHECKED_IN.exists():
        found.append((str(CHECKED_IN.relative_to(REPO)), CHECKED_IN.read_text(encoding="utf-8")))
    return found


def is_duration(field: FieldInfo) -> bool:
    return any(getattr(m, "func", None) is parse_duration for m in field.metadata)


def is_size(field: FieldInfo) -> bool:
    return any(getattr(m, "func", None) is parse_byte_size for m in field.metadata)


def test_every_key_has_a_description_and_every_section_key_a_default() -> None:
    undescribed = [dotted(p) for p, field, _ in keys(Config) if not (field.description or "")]
    assert not undescribed, f"keys without a Field description: {undescribed}"
    required = [
        dotted(p) for p, field, in_item in keys(Config) if field.is_required() and not in_item
    ]
    assert not required, f"keys without a default (only list items may require keys): {required}"
    assert len(list(keys(Config))) > 100  # the walk reaches the nested sections


@pytest.mark.parametrize(("name", "reference"), sources(), ids=lambda v: v[:40])
def test_every_key_of_the_models_is_in_the_reference(name: str, reference: str) -> None:
    loaded = yaml.safe_load(reference)
    comments = comment_text(reference)
    missing = []
    for path, field, in_item in keys(Config):
        if in_item:
            head = re.escape(path[-1]) + r" \((required|default: .*?)\):"
            if not re.search(r"(^| )" + head, comments):
                missing.append(dotted(path))
        else:
            node = loaded
            for part in path:
                if not isinstance(node, dict) or part not in node:
                    missing.append(dotted(path))
                    break
                node = node[part]
        description = " ".join((field.description or "").split())
        if description not in comments:
            missing.append(f"{dotted(path)} (its description)")
    assert not missing, (
        f"{name} lacks {missing}; regenerate it with: {REGENERATE}"
        if name != "rendered"
        else f"the generator leaves out {missing}"
    )


def test_checked_in_reference_is_current() -> None:
    assert CHECKED_IN.exists(), f"{CHECKED_IN} is missing; generate it with: {REGENERATE}"
    assert CHECKED_IN.read_text(encoding="utf-8") == render_reference(), (
        f"{CHECKED_IN.relative_to(REPO)} is stale (the config models changed); "
        f"regenerate it with: {REGENERATE}"
    )


def test_the_reference_loads_as_the_default_configuration(tmp_path: Path) -> None:
    path = tmp_path / "reference.yaml"
    path.write_text(render_reference(), encoding="utf-8")
    assert load_config(path, environ={}).model_dump() == Config().model_dump()


def test_durations_and_sizes_are_written_as_a_user_writes_them() -> None:
    loaded = yaml.safe_load(render_reference())
    checked = 0
    for path, field, in_item in keys(Config):
        if in_item or not (is_duration(field) or is_size(field)):
            continue
        node = loaded
        for part in path:
            node = node[part]
        unit = r"(\d+(\.\d+)?(h|m|s|ms|us|ns))+" if is_duration(field) else r"\d+[KMGT]iB"
        assert node == 0 or (isinstance(node, str) and re.fullmatch(unit, node)), (
            f"{dotted(path)}: {node!r}"
        )
        checked += 1
    assert checked > 20
    text = render_reference()
    for line in (
        "stream_window: 30s",
        "queue_bytes: 64MiB",
        "max_lifetime: 1h",
        "batch_wait: 200ms",
        "spool_max_bytes: 1GiB",
        "max_bytes: 0",
    ):
        assert f"  {line}\n" in text, line


def test_the_header_states_the_environment_rule_once() -> None:
    text = render_reference()
    assert text.count(f"{ENV_PREFIX} followed by the key path") == 1
    assert f"# {ENV_PREFIX}DOCKER__POOL__MAX_OPEN=32" not in text  # indented example
    assert f"#   {ENV_PREFIX}DOCKER__POOL__MAX_OPEN=32\n" in text


@pytest.mark.parametrize(
    "seconds", [0, 0.2, 0.5, 1, 1.5, 30, 90, 300, 3600, 5400, 86400, 1e-9, 2.5e-7, 1 / 3]
)
def test_format_duration_parses_back_exactly(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.2, "200ms"), (1.5, "1.5s"), (90, "1m30s"), (3600, "1h"), (0, 0)]
)
def test_format_duration_spellings(seconds: float, text: object) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, 0), (1000, 1000), (1024, "1KiB"), (262_144, "256KiB"), (64 * 1024**2, "64MiB")],
)
def test_format_size(size: int, text: object) -> None:
    assert format_size(size) == text
    assert parse_byte_size(text) == size


def test_cli_prints_the_reference_without_reading_a_config() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "log_capturer", "config-reference"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"LOG_CAPTURER__DOCKER__POOL__MAX_OPEN": "lots", "LOG_CAPTURER_CONFIG": "/nowhere"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == render_reference()


def leaves(
    data: dict[str, Any], model: type[BaseModel], path: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    for name, value in data.items():
        nested = model_of(model.model_fields[name].annotation)
        if nested is not None and isinstance(value, dict):
            yield from leaves(value, nested, (*path, name))
        else:
            yield (*path, name)


def value_at(config: BaseModel, path: tuple[str, ...]) -> Any:
    node: Any = config
    for part in path:
        node = getattr(node, part)
    return node


@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_configs_set_only_what_they_change(shipped: Path) -> None:
    data = yaml.safe_load(shipped.read_text(encoding="utf-8")) or {}
    config = load_config(shipped, environ={})
    defaults = Config()
    same = [
        dotted(path)
        for path in leaves(data, Config)
        if value_at(config, path) == value_at(defaults, path)
    ]
    assert not same, f"{shipped.relative_to(REPO)} repeats defaults {same}: leave them out"
    assert "docs/config-reference.yaml" in shipped.read_text(encoding="utf-8")
