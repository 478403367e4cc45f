"""DEVELOPERS.md's layout lists every module of the package, and only those."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def layout_modules() -> list[str]:
    """The .py paths of the layout tree: a ``name/`` line opens a folder at its indent."""
    text = (REPO / "DEVELOPERS.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    folders: list[tuple[int, str]] = []  # (indent, name/)
    found = []
    for line in block.splitlines():
        match = re.match(r"^( *)(\S+)", line)
        if not match or not match.group(2).endswith(("/", ".py")):
            continue  # blank, or a description running on
        indent, name = len(match.group(1)), match.group(2)
        while folders and folders[-1][0] >= indent:
            folders.pop()
        if name.endswith("/"):
            folders.append((indent, name))
        else:
            found.append("".join(f for _, f in folders) + name)
    return found


def test_the_layout_lists_every_module_once() -> None:
    listed = layout_modules()
    assert len(listed) == len(set(listed)), "listed twice"
    actual = sorted(str(p.relative_to(REPO)) for p in (REPO / "log_capturer").rglob("*.py"))
    assert sorted(listed) == actual
