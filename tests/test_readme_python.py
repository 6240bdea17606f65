"""The README's Python examples run, and every value they show in a trailing comment is what they compute."""

from __future__ import annotations

import ast
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SHOWN = re.compile(r"^(?P<expr>[^#]+?)\s+#\s*(?P<value>-?[0-9][0-9.]*|True|False)\s*$")


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_examples_run_and_show_their_values():
    blocks = python_blocks()
    assert blocks, "the README has Python examples"
    checked = 0
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)  # the whole example runs
        for line in block.splitlines():
            m = SHOWN.match(line)
            if m and "=" not in m["expr"].split("[")[0]:  # an expression whose value the comment shows
                assert eval(m["expr"], namespace) == ast.literal_eval(m["value"]), line
                checked += 1
    assert checked >= 3
