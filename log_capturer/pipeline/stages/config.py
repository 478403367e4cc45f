"""``pipeline.stages:`` config section: multiline merge, JSON parsing, redaction (all off).

Regular expressions are checked here, at load time, so a bad one is a config error
naming its key instead of a crash in the dispatcher thread.
"""

from __future__ import annotations

import re

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ...config.types import ByteSize, Duration, Section

DEFAULT_START_PATTERN = (
    r"^(?!$|\s"  # blank or indented lines (stack frames) continue a record
    r"|Traceback \(most recent call last\):"  # Python, after logger.exception()
    r"|During handling of the above exception"
    r"|The above exception was the direct cause"
    r"|Caused by: "  # Java
    r"|[\w.$]+(?:Error|Exception|Exit|Interrupt|Warning)(?::|$)"  # "ValueError: ..."
    r")"
)
"""A line starts a record unless it is blank, indented or a known traceback line."""

REPLACEMENT = "[REDACTED]"


def _compile(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from exc
    return value


class MultilineConfig(Section):
    enabled: bool = Field(
        False, description="Merge continuation lines (stack traces) into one record."
    )
    start_pattern: str = Field(
        DEFAULT_START_PATTERN,
        description="Regex searched in each line: a line matching it starts a new record, any "
        "other line continues the current one. The default treats blank and indented lines, "
        "'Traceback (most recent call last):', 'Caused by: ...' and 'SomeError: ...' lines "
        "as continuations (Python and Java stack traces).",
    )
    match_containers: list[str] = Field(
        default_factory=list,
        description="Glob patterns on container names the stage applies to; empty = all. "
        "Records of other containers pass through unchanged.",
    )
    flush_timeout: Duration = Field(
        1.0, description="A group that receives no new line for this long is released."
    )
    max_lines: int = Field(
        500, ge=1, description="A group is released once it holds this many lines."
    )
    max_bytes: ByteSize = Field(
        256 * 1024,
        description="Most UTF-8 bytes of a merged message: a line that would exceed it starts "
        "a new record (lines are never cut by this stage).",
    )

    @field_validator("start_pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        return _compile(value)

    @field_validator("max_bytes")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1 byte")
        return value


class ParseJsonConfig(Section):
    enabled: bool = Field(
        False, description="Parse messages that are JSON objects into the record's fields."
    )
    keep_message: bool = Field(
        True,
        description="true: the message stays the original JSON text; false: the message "
        "becomes the string under message_key (removed from fields), if there is one.",
    )
    message_key: str = Field("message", min_length=1, description="See keep_message.")
    max_depth: int = Field(
        32, ge=1, le=256, description="Objects nested deeper than this are left unparsed."
    )


class BuiltinRedactions(Section):
    """Each built-in rule, on (default) or off."""

    password: bool = Field(
        True, description='password=..., "password": "...", passwd, pwd (the value only).'
    )
    bearer_token: bool = Field(True, description="Bearer <token> (Authorization headers).")
    aws_access_key_id: bool = Field(True, description="AKIA/ASIA followed by 16 characters.")
    aws_secret_access_key: bool = Field(
        True, description="A 40-character secret after aws_secret_access_key / SecretAccessKey."
    )
    basic_auth_url: bool = Field(True, description="The password in scheme://user:password@host.")


class RedactRule(Section):
    name: str = Field(
        ..., pattern=r"^[A-Za-z0-9_.-]+$", description="Rule name (the metric's rule label)."
    )
    pattern: str = Field(..., description="Regex; every match is replaced.")
    replacement: str | None = Field(
        None,
        description="Replacement; may refer to groups (\\1, \\g<name>). "
        "Default: redact.replacement, literally.",
    )

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        return _compile(value)

    @field_validator("replacement")
    @classmethod
    def _check_replacement(cls, value: str | None, info: ValidationInfo) -> str | None:
        pattern = info.data.get("pattern")
        if value is None or pattern is None:
            return value  # a bad pattern is reported on its own key
        try:
            re.compile(pattern).sub(value, "")  # parses the template (group references)
        except re.error as exc:
            raise ValueError(f"invalid replacement: {exc}") from exc
        return value


class RedactConfig(Section):
    enabled: bool = Field(
        False, description="Replace secrets in messages and fields before any sink sees them."
    )
    replacement: str = Field(REPLACEMENT, description="What a secret is replaced with.")
    builtin: BuiltinRedactions = Field(
        default_factory=BuiltinRedactions, description="Each built-in rule, on or off."
    )
    rules: list[RedactRule] = Field(
        default_factory=list, description="Your own rules, applied after the built-in ones."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> RedactConfig:
        seen = set(type(self.builtin).model_fields)
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(
                    f"rules: rule name {rule.name!r} is used twice (or is a built-in rule's name)"
                )
            seen.add(rule.name)
        return self


class StagesConfig(Section):
    """Applied in this order: multiline, then parse_json, then redact."""

    multiline: MultilineConfig = Field(
        default_factory=MultilineConfig,
        description="Stage 1, per container and stream: continuation lines join the line "
        "that started them.",
    )
    parse_json: ParseJsonConfig = Field(
        default_factory=ParseJsonConfig,
        description="Stage 2: JSON parsing of messages.",
    )
    redact: RedactConfig = Field(
        default_factory=RedactConfig,
        description="Stage 3: secrets are replaced, by built-in rules and your own.",
    )
