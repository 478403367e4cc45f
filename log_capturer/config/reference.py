"""The configuration reference, generated from the models: every key, what it means, its default.

``log-capturer config-reference`` prints it; ``docs/config-reference.yaml`` is a copy that
``tests/unit/test_config_reference.py`` keeps current. Nothing here lists keys: the walk
goes through :class:`~log_capturer.config.loader.Config` and its nested sections, so a
field added to any section appears with its ``Field`` description and default.

The output is itself a valid config that means "all defaults": durations and sizes are
written the way a user writes them (``30s``, ``64MiB``), and the keys of list items
(``pipeline.stages.redact.rules``) are described in comments.
"""

from __future__ import annotations

import textwrap
import types
from collections.abc import Iterator
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .loader import ENV_OVERRIDES, Config
from .reload import RELOAD_RULE
from .types import DURATION_EXAMPLES, SIZE_EXAMPLES, parse_byte_size, parse_duration

WIDTH = 100
"""Comment lines are wrapped to this many columns."""

COMMAND = "log-capturer config-reference"

HEADER = f"""\
log_capturer configuration reference: every key, what it means, and its default.
Generated from the configuration models by `{COMMAND}`: do not edit
(docs/config-reference.yaml is a copy; the unit tests fail when it is stale).

A config file needs only the keys it changes: a key left out has the value shown here,
and this file, loaded as it is, is the default configuration. Durations: {DURATION_EXAMPLES}
(or 1h30m; 0 is zero). Sizes: {SIZE_EXAMPLES} (or a number of bytes).

{ENV_OVERRIDES}
{RELOAD_RULE}
"""


def render_reference(root: type[BaseModel] = Config) -> str:
    """The commented YAML reference of ``root`` (a model whose every field has a default)."""
    lines = [_comment_line(text, 0) for text in HEADER.splitlines()]
    lines.append("")
    lines += _section(root(), 0)
    return "\n".join(lines) + "\n"


# -- the walk ------------------------------------------------------------------------------


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a nested section field, else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def item_model(annotation: Any) -> type[BaseModel] | None:
    """The model of the items of a ``list[Model]`` field, else None."""
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        return section_model(item)
    return None


def _section(instance: BaseModel, indent: int) -> list[str]:
    lines: list[str] = []
    after_section = False
    for name, field in type(instance).model_fields.items():
        value = getattr(instance, name)
        nested = section_model(field.annotation)
        if lines and (nested is not None or after_section):
            lines.append("")  # sections stand apart
        after_section = nested is not None
        lines += _comments(describe(field), indent)
        if nested is not None:
            lines.append(f"{' ' * indent}{name}:")
            lines += _section(value, indent + 2)
            continue
        item = item_model(field.annotation)
        if item is not None:
            lines.append(_comment_line("Each item has these keys:", indent))
            lines += _item_keys(item, indent, 2)
        lines += _key_value(name, user_value(field, value), indent)
    return lines


def _item_keys(model: type[BaseModel], indent: int, inner: int) -> list[str]:
    """Comment lines describing the keys of one list item (required ones have no default)."""
    lines: list[str] = []
    for name, field in model.model_fields.items():
        nested = section_model(field.annotation)
        if field.is_required():
            head = f"{name} (required): "
        elif nested is not None:
            head = f"{name}: "
        else:
            default = user_value(field, field.get_default(call_default_factory=True))
            head = f"{name} (default: {_flow(default)}): "
        lines += _comments(head + describe(field), indent, inner=inner, hanging=4)
        if nested is not None:
            lines += _item_keys(nested, indent, inner + 2)
    return lines


def describe(field: FieldInfo) -> str:
    """The field's description, and its choices when it takes one of a fixed set of words."""
    text = field.description or ""
    choices = _literal_choices(field.annotation)
    if choices:
        text = f"{text} One of: {', '.join(choices)}.".strip()
    return text


def _literal_choices(annotation: Any) -> list[str]:
    if get_origin(annotation) is Literal:
        return [str(choice) for choice in get_args(annotation)]
    if get_origin(annotation) in (Union, types.UnionType):
        return [c for arg in get_args(annotation) for c in _literal_choices(arg)]
    return []


# -- values as a user writes them ----------------------------------------------------------


def user_value(field: FieldInfo, value: Any) -> Any:
    """``value`` as it would be written in a config file (durations and sizes with units)."""
    validators = {getattr(m, "func", None) for m in field.metadata}
    if parse_duration in validators and isinstance(value, int | float):
        return format_duration(value)
    if parse_byte_size in validators and isinstance(value, int):
        return format_size(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list) and any(isinstance(v, BaseModel) for v in value):
        return [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    return value


_DURATION_UNITS = (("h", 3600), ("m", 60), ("s", 1))
_SUBSECOND_UNITS = (("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9))


def format_duration(seconds: float) -> str | int | float:
    """``30s``, ``5m``, ``1h30m``, ``200ms``, ``1.5s``: the first spelling that parses back to
    exactly ``seconds``, else the bare number of seconds."""
    if seconds == 0:
        return 0
    candidates: list[str] = []
    if seconds == int(seconds):
        rest = int(seconds)
        parts = []
        for unit, size in _DURATION_UNITS:
            if rest >= size:
                parts.append(f"{rest // size}{unit}")
                rest %= size
        candidates.append("".join(parts))
    for unit, fraction in _SUBSECOND_UNITS:
        count = round(seconds / fraction)
        if 1 <= count < 1000:
            candidates.append(f"{count}{unit}")
    candidates.append(f"{seconds!r}s")
    for text in candidates:
        try:
            if parse_duration(text) == seconds:
                return text
        except ValueError:  # e.g. 2.5e-07s: no exponents in durations
            continue
    return seconds


_SIZE_UNITS = (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))


def format_size(size: int) -> str | int:
    """``64MiB``, ``1GiB``, ``256KiB``; a plain number when no binary unit divides it."""
    for unit, factor in _SIZE_UNITS:
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return size


# -- YAML and comments ---------------------------------------------------------------------


def _flow(value: Any) -> str:
    """A one-line YAML rendering of a scalar, or of a list or mapping in flow style."""
    text = yaml.safe_dump(
        value, default_flow_style=True, sort_keys=False, allow_unicode=True, width=10**6
    )
    return text.removesuffix("\n").removesuffix("\n...")


def _is_flat(value: Any) -> bool:
    """A scalar, or a list or mapping of scalars: one line of flow YAML reads well."""
    items = value.values() if isinstance(value, dict) else value
    if isinstance(value, list | dict):
        return not any(isinstance(v, list | dict) for v in items)
    return True


def _key_value(name: str, value: Any, indent: int) -> list[str]:
    pad = " " * indent
    if _is_flat(value):
        return [f"{pad}{name}: {_flow(value)}"]
    block = yaml.safe_dump(
        {name: value}, default_flow_style=False, sort_keys=False, allow_unicode=True, width=10**6
    )
    return [pad + line for line in block.splitlines()]


def _comment_line(text: str, indent: int) -> str:
    return f"{' ' * indent}# {text}".rstrip()


def _comments(text: str, indent: int, inner: int = 0, hanging: int = 0) -> Iterator[str]:
    """``text`` wrapped into comment lines at ``indent``; ``inner`` spaces after the ``#``,
    ``hanging`` more on continuation lines."""
    first = " " * inner
    wrapped = textwrap.wrap(
        text,
        width=max(WIDTH - indent - 2, 40),
        initial_indent=first,
        subsequent_indent=first + " " * hanging,
        break_long_words=False,
        break_on_hyphens=False,
    )
    for line in wrapped:
        yield _comment_line(line, indent)
