"""The Python examples of the README and the docs pages run, and every value they show in a trailing comment is
what they compute.

Not run: docs/external_maps.md, whose snippets use a datamodule and a batch the page describes in prose rather than
standing alone.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRAGMENTS = {"external_maps.md"}
PAGES = [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs").rglob("*.md") if p.name not in FRAGMENTS)
SHOWN = re.compile(r"^(?P<expr>[^#]+?)\s+#\s*(?P<value>-?[0-9][0-9.]*|True|False)\s*$")


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


BLOCKS = [(p.relative_to(ROOT).as_posix(), b) for p in PAGES for b in python_blocks(p)]


def _shown(block: str) -> list[re.Match]:
    """The lines whose trailing comment shows the value of an expression (not of an assignment)."""
    return [m for m in map(SHOWN.match, block.splitlines()) if m and "=" not in m["expr"].split("[")[0]]


def test_the_readme_and_the_metrics_page_have_python_examples_that_show_values():
    pages = {p for p, _ in BLOCKS}
    assert {"README.md", "docs/metrics.md"} <= pages, pages
    assert sum(len(_shown(b)) for _, b in BLOCKS) >= 5


@pytest.mark.parametrize("page, block", BLOCKS, ids=[f"{p}#{i}" for i, (p, _) in enumerate(BLOCKS)])
def test_python_example_runs_and_shows_its_values(page, block):
    namespace: dict = {}
    exec(compile(block, page, "exec"), namespace)  # the whole example runs
    for m in _shown(block):
        assert eval(m["expr"], namespace) == ast.literal_eval(m["value"]), m[0]
