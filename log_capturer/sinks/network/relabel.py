"""Labels users choose: Promtail's ``relabel_configs`` (the subset Docker users need), the
``__meta_docker_*`` labels they read, and a guard against labels with too many values.

A network sink decides, once per container stream (never per line), the labels of its
stream (Loki), its resource attributes (OTLP) and its per-entry pairs (structured
metadata, log attributes): it starts from the sink's defaults plus the container's
meta labels (:func:`docker_meta`), applies the rules in order (:class:`Relabeler`), and
keeps what does not start with ``__``. Rules are Prometheus' relabelling: each reads the
values of ``source_labels`` joined by ``separator``, matches ``regex`` against the whole
of it, and acts:

* ``replace``: sets ``target_label`` to ``replacement`` (``$1``, ``${name}`` expand the
  regex's groups); an empty result removes the label. No match: nothing changes.
* ``keep`` / ``drop``: the stream goes to this sink only if the regex matches / does not.
* ``labelmap``: every label whose *name* matches is copied to the name ``replacement``.
* ``labeldrop`` / ``labelkeep``: labels whose name matches are removed / all others are.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, Literal, TypeVar

import structlog
from pydantic import Field, model_validator

from ...config.types import Section
from ...discovery.container import ContainerInfo
from ...metrics.registry import LABEL_VALUES_REFUSED

_log = structlog.get_logger(__name__)
D = TypeVar("D")

META_PREFIX = "__meta_docker_container_"
LABEL_META_PREFIX = META_PREFIX + "label_"
HOST_META = "__host__"
META_LABELS = (
    f"{META_PREFIX}id (the 64-hex id), {META_PREFIX}name (with Docker's leading '/', as "
    f"Promtail sees it), {META_PREFIX}image, {META_PREFIX}log_stream (stdout, stderr or tty), "
    f"{LABEL_META_PREFIX}<name> (every container label, its name's characters other than "
    f"letters, digits and _ written _) and {HOST_META} (the node's name: host.name, or "
    "the sink's host)"
)
"""The meta labels rules can read, for the config reference."""

_INVALID = re.compile(r"[^a-zA-Z0-9_]")
_TEMPLATE = re.compile(r"\$(?:\$|\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")


def sanitize_meta_name(name: str) -> str:
    """A container label's name as Prometheus writes it in a meta label name."""
    return _INVALID.sub("_", name)


def docker_meta(container: ContainerInfo, stream: str, host: str) -> dict[str, str]:
    """The meta labels of one container stream (see :data:`META_LABELS`)."""
    meta = {
        f"{META_PREFIX}id": container.id,
        f"{META_PREFIX}name": "/" + container.name,
        f"{META_PREFIX}image": container.image,
        f"{META_PREFIX}log_stream": stream,
        HOST_META: host,
    }
    for name, value in container.labels.items():
        meta[LABEL_META_PREFIX + sanitize_meta_name(name)] = value
    return meta


def expand(template: str, match: re.Match[str]) -> str:
    """Go's ``Regexp.Expand``: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``; a name is
    as long as possible (``$1x`` is ``${1x}``); a group that does not exist or did not
    match expands to nothing."""
    if "$" not in template:
        return template

    def one(ref: re.Match[str]) -> str:
        if ref.group(0) == "$$":
            return "$"
        name = ref.group(1) or ref.group(2)
        try:
            value = match.group(int(name) if name.isdigit() else name)
        except IndexError:  # no such group
            return ""
        return value or ""

    return _TEMPLATE.sub(one, template)


class RelabelRule(Section):
    """One rule of Promtail's ``relabel_configs`` (the subset this daemon implements)."""

    source_labels: list[str] = Field(
        default_factory=list,
        description="Labels whose values, joined by separator, the regex is matched against.",
    )
    separator: str = Field(";", description="Joins the values of source_labels.")
    target_label: str | None = Field(
        None, description="replace: the label to set (may use $1, ${name} of the regex)."
    )
    regex: str = Field(
        "(.*)",
        description="Matched against the whole value (anchored at both ends), or against "
        "each label name for labelmap, labeldrop and labelkeep. Python's re syntax, which "
        "agrees with Go's RE2 on what relabelling uses ((?P<name>...), classes, ?, |).",
    )
    replacement: str = Field(
        "$1",
        description="replace: the new value; labelmap: the new name. $1, ${1}, $name, "
        "${name} expand the regex's groups, $$ is a $.",
    )
    action: Literal["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep"] = Field(
        "replace",
        description="replace, keep, drop (the stream, for this sink), labelmap, labeldrop, "
        "labelkeep (see the sink's relabel_configs).",
    )

    @model_validator(mode="after")
    def _check(self) -> RelabelRule:
        try:
            re.compile(self.regex)
        except re.error as exc:
            raise ValueError(f"regex {self.regex!r} is invalid: {exc}") from exc
        if self.action == "replace" and not self.target_label:
            raise ValueError("action replace needs target_label")
        if self.action in ("keep", "drop") and not self.source_labels:
            raise ValueError(f"action {self.action} needs source_labels")
        if self.action in ("labelmap", "labeldrop", "labelkeep") and (
            self.source_labels or self.target_label
        ):
            raise ValueError(
                f"action {self.action} matches label names: it takes no source_labels or "
                "target_label"
            )
        if self.action in ("keep", "drop", "labeldrop", "labelkeep") and self.target_label:
            raise ValueError(f"action {self.action} takes no target_label")
        return self


def relabel_field(what: str) -> Any:
    """The ``relabel_configs`` field of a sink section, described once here."""
    return Field(
        default_factory=list,
        description=f"Rules applied in order, as Promtail's relabel_configs, to decide {what}. "
        "They start from the labels above and the meta labels " + META_LABELS + "; what "
        "remains without a leading __ is used. Decided once per container stream.",
    )


def check_rules(
    rules: Sequence[RelabelRule], valid_name: Callable[[str], str | None]
) -> Sequence[RelabelRule]:
    """Targets that are literal names must satisfy ``valid_name`` (which returns why not, or
    None); the error names the rule by its index."""
    for index, rule in enumerate(rules):
        target = rule.target_label if rule.action == "replace" else (
            rule.replacement if rule.action == "labelmap" else None
        )
        if target is None or "$" in target or target.startswith("__"):
            continue
        why = valid_name(target)
        if why is not None:
            raise ValueError(f"rule {index} ({rule.action} to {target!r}): {why}")
    return rules


class Relabeler:
    """Compiled rules; :meth:`apply` relabels one label set."""

    def __init__(self, rules: Sequence[RelabelRule]) -> None:
        self._rules = [(rule, re.compile(rule.regex)) for rule in rules]

    def __bool__(self) -> bool:
        return bool(self._rules)

    def apply(self, labels: dict[str, str]) -> dict[str, str] | None:
        """The relabelled set (a new dict), or None when a keep/drop rule dropped it."""
        out = dict(labels)
        for rule, regex in self._rules:
            action = rule.action
            if action in ("replace", "keep", "drop"):
                value = rule.separator.join(out.get(name, "") for name in rule.source_labels)
                match = regex.fullmatch(value)
                if action == "keep":
                    if match is None:
                        return None
                elif action == "drop":
                    if match is not None:
                        return None
                elif match is not None:
                    assert rule.target_label is not None
                    target = expand(rule.target_label, match)
                    result = expand(rule.replacement, match)
                    if not target:
                        continue
                    if result:
                        out[target] = result
                    else:
                        out.pop(target, None)
            elif action == "labelmap":
                for name, value in list(out.items()):
                    match = regex.fullmatch(name)
                    if match is not None:
                        target = expand(rule.replacement, match)
                        if target:
                            out[target] = value
            elif action == "labeldrop":
                out = {k: v for k, v in out.items() if regex.fullmatch(k) is None}
            else:  # labelkeep
                out = {k: v for k, v in out.items() if regex.fullmatch(k) is not None}
        return out


def visible(labels: dict[str, str]) -> dict[str, str]:
    """The labels a rule set leaves for use: no ``__`` names, no empty values."""
    return {k: v for k, v in labels.items() if v and not k.startswith("__")}


class CardinalityGuard:
    """Refuses a label's new values once it has seen ``bound`` distinct ones.

    A stream whose value is refused is sent without that label (its lines are still
    delivered): one error log line per label name and sink, and
    ``log_capturer_label_values_refused_total{sink,label}`` counts every refused stream.
    Values already admitted keep working. 0 = no bound. Thread-safe.
    """

    def __init__(self, sink: str, bound: int, what: str = "label") -> None:
        self.sink = sink
        self.bound = bound
        self.what = what
        self._values: dict[str, set[str]] = {}
        self._reported: set[str] = set()
        self._lock = threading.Lock()

    def admit(self, labels: dict[str, str], guarded: Callable[[str], bool] | None = None
              ) -> dict[str, str]:
        """``labels`` without the values refused (a new dict when one was)."""
        if not self.bound:
            return labels
        refused: list[str] = []
        with self._lock:
            for name, value in labels.items():
                if guarded is not None and not guarded(name):
                    continue
                seen = self._values.setdefault(name, set())
                if value in seen:
                    continue
                if len(seen) < self.bound:
                    seen.add(value)
                    continue
                refused.append(name)
        if not refused:
            return labels
        for name in refused:
            LABEL_VALUES_REFUSED.labels(self.sink, name).inc()
            if name not in self._reported:
                self._reported.add(name)
                _log.error(
                    "label_values_limit_reached",
                    sink=self.sink,
                    label=name,
                    bound=self.bound,
                    refused_value=labels[name][:100],
                    hint=f"streams with a new value of this {self.what} are sent without it; "
                    "raise max_label_values or drop the label with a relabel rule",
                )
        return {k: v for k, v in labels.items() if k not in refused}


class StreamDecisions(Generic[D]):
    """What a sink decided for each container stream (``decide``: its labels, attributes
    and metadata, or None when a rule dropped it), decided once and kept: a rename is a
    new stream. At most :data:`LIMIT` kept (then forgotten all at once and decided again,
    the cardinality guard consulted again)."""

    LIMIT = 4096

    def __init__(self, decide: Callable[[ContainerInfo, str], D | None]) -> None:
        self._decide = decide
        self._decided: dict[tuple[str, str, str], D | None] = {}

    def get(self, container: ContainerInfo, stream: str) -> D | None:
        key = (container.id, container.name, stream)
        try:
            return self._decided[key]
        except KeyError:
            pass
        decided = self._decide(container, stream)
        if len(self._decided) >= self.LIMIT:
            self._decided.clear()
        self._decided[key] = decided
        return decided
