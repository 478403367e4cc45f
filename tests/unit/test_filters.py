"""ContainerFilter: what is sent to the engine, and deciding from a listing as from inspect.

How the real engine applies the filters is tested against it in
tests/integration/test_discovery.py; here, the translation and the decisions.
"""

from __future__ import annotations

import itertools
import re
from fnmatch import fnmatchcase
from typing import Any

import pytest

from log_capturer.discovery.container import ContainerInfo
from log_capturer.discovery.filters import ContainerFilter, engine_name_pattern, listed_name
from log_capturer.monitor.config import MonitorConfig

NAMES = ["web", "web-1", "web.1", "xweb-1", "api", "api-web", "w", "a.b+c", "db_2", "web-10"]
GLOBS = ["web", "web-*", "web-?", "*web*", "web.?", "a.b+c", "*", "?", "w*b-1", "*-1?", "db_*"]


def engine_matches(pattern: str, name: str) -> bool:
    """The engine's ``name`` filter (Docker 20.10): an unanchored regular expression, tried
    on the name with and without its leading "/". Python's re agrees with Go's regexp on
    what engine_name_pattern produces (^ $ . .* and backslash-escaped punctuation)."""
    return bool(re.search(pattern, "/" + name) or re.search(pattern, name))


@pytest.mark.parametrize("glob", GLOBS)
def test_engine_name_pattern_matches_exactly_what_the_glob_matches(glob: str) -> None:
    pattern = engine_name_pattern(glob)
    assert pattern is not None
    for name in NAMES:
        assert engine_matches(pattern, name) == fnmatchcase(name, glob), (glob, pattern, name)


def test_globs_with_a_character_class_are_left_to_the_client() -> None:
    assert engine_name_pattern("web-[12]") is None
    config = MonitorConfig(include_names=["web-*", "api-[ab]"])
    assert "name" not in ContainerFilter(config).list_filters()  # any one unsendable: none


def test_list_and_event_filters() -> None:
    config = MonitorConfig(
        include_labels={"team": "core", "app": "", "tier": "*", "name": "x", "a=b": "c"},
        include_names=["web-*", "api"],
        exclude_names=["web-9"],
        exclude_labels={"skip": ""},
        include_images=["shop/*"],
    )
    f = ContainerFilter(config)
    assert f.list_filters() == {
        "label": ["app", "name=x", "team=core", "tier"],  # a key holding "=" cannot be sent
        "name": ["^api$", "^web-.*$"],
    }
    # On /events, "name" is the event's own attribute (the container name), not the label.
    assert f.event_label_filters() == ["app", "team=core", "tier"]
    assert ContainerFilter(MonitorConfig()).list_filters() == {}


def test_listed_name_is_the_containers_own_name_not_a_link_alias() -> None:
    assert listed_name({"Names": ["/app/db-alias", "/db"]}) == "db"
    assert listed_name({"Names": ["/web"]}) == "web"
    assert listed_name({"Names": []}) == ""


CONTAINERS = [
    # (name, labels, image from inspect, image shown by the listing)
    ("web-1", {"app": "web", "team": "core"}, "shop/web:2", "shop/web:2"),
    ("web-2", {"app": "web", "skip": "true"}, "shop/web:2", "shop/web:2"),
    ("api-1", {"app": "api", "team": "core"}, "shop/api:1", "sha256:aa"),  # tag moved
    ("db-1", {"team": "data"}, "postgres:16", "postgres:16"),
    ("self", {"app": "web"}, "shop/web:2", "shop/web:2"),
    ("sha", {"app": "web"}, "sha256:bb", "sha256:bb"),  # created from an image id
]

CONFIGS: list[dict[str, Any]] = [
    {},
    {"include_names": ["web-*"]},
    {"exclude_names": ["*-2"]},
    {"include_labels": {"app": "web"}},
    {"include_labels": {"team": "*"}, "exclude_labels": {"skip": ""}},
    {"exclude_labels": {"app": "api"}},
    {"include_images": ["shop/*"]},
    {"exclude_images": ["postgres:*"], "exclude_names": ["web-2"]},
    {"include_images": ["shop/api:*"], "include_labels": {"team": "core"}},
]


def summary_and_info(
    n: int, name: str, labels: dict[str, str], image: str, listed: str
) -> tuple[dict[str, Any], ContainerInfo]:
    cid = f"{n:x}" * 64
    image_id = listed if listed.startswith("sha256:") else f"sha256:{n}"
    summary: dict[str, Any] = {"Id": cid, "Names": [f"/{name}"], "Image": listed}
    summary.update(ImageID=image_id, Labels=labels)
    return summary, ContainerInfo(id=cid, name=name, image=image, labels=labels)


@pytest.mark.parametrize("overrides", CONFIGS, ids=[str(c) for c in CONFIGS])
def test_a_listing_decides_as_inspect_does_or_defers_to_inspect(overrides: dict[str, Any]) -> None:
    self_index = next(i for i, c in enumerate(CONTAINERS) if c[0] == "self")
    f = ContainerFilter(MonitorConfig(**overrides), self_id=f"{self_index:x}" * 12)
    images_filtered = "include_images" in overrides or "exclude_images" in overrides
    deferred = []
    for n, (name, labels, image, listed) in enumerate(CONTAINERS):
        summary, info = summary_and_info(n, name, labels, image, listed)
        verdict = f.judge_listed(summary)
        if verdict is None:
            deferred.append(name)
        else:
            assert verdict == f.matches(info), (name, overrides)
    # Only an image filter on a listing that shows an image id needs an inspect (and not
    # when the name or labels already exclude the container).
    for name in deferred:
        assert images_filtered and name in ("api-1", "sha"), (name, overrides)
    if images_filtered:
        assert deferred, "no case reached the inspect path"


def test_the_own_container_is_never_captured() -> None:
    f = ContainerFilter(MonitorConfig(), self_id="abc123")
    assert f.is_self_id("abc123" + "0" * 58)
    assert not f.matches(ContainerInfo(id="abc123" + "0" * 58, name="me", image="x"))
    assert f.matches(ContainerInfo(id="def456" + "0" * 58, name="other", image="x"))
    assert not ContainerFilter(MonitorConfig()).is_self_id("abc")


def test_label_filters_all_must_hold_and_star_or_empty_match_any_value() -> None:
    f = ContainerFilter(MonitorConfig(include_labels={"a": "*", "b": "2"}))
    for labels, expected in [
        ({"a": "x", "b": "2"}, True),
        ({"a": "", "b": "2"}, True),
        ({"a": "x", "b": "3"}, False),
        ({"b": "2"}, False),
    ]:
        info = ContainerInfo(id="0" * 64, name="n", image="i", labels=labels)
        assert f.matches(info) is expected, labels


def test_every_glob_pair_agrees_between_engine_and_client() -> None:
    """Two include globs: the engine ORs them like the client does."""
    for a, b in itertools.combinations(GLOBS, 2):
        patterns = [engine_name_pattern(a), engine_name_pattern(b)]
        for name in NAMES:
            engine = any(engine_matches(p, name) for p in patterns if p is not None)
            assert engine == (fnmatchcase(name, a) or fnmatchcase(name, b)), (a, b, name)


def test_the_exclude_label_on_the_container_needs_no_config() -> None:
    f = ContainerFilter(MonitorConfig())
    base = {"Id": "c" * 64, "Names": ["/web-1"], "Image": "web:1", "ImageID": "sha256:1"}
    for value, captured in (("true", False), ("TRUE", False), ("false", True), ("", True)):
        labels = {"io.log_capturer.exclude": value}
        info = ContainerInfo(id="c" * 64, name="web-1", image="web:1", labels=labels)
        assert f.matches(info) is captured, value
        assert f.judge_listed({**base, "Labels": labels}) is captured, value
    assert f.matches(ContainerInfo(id="c" * 64, name="web-1", image="web:1"))
