"""The docs site builds with `mkdocs build --strict`: no broken link or anchor, no page missing from the nav, no
docstring mkdocstrings cannot render. mkdocs comes with the dev extra (and the docs extra), so this never skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about MkDocs 2.0, not a build warning
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = tmp_path / "site"
    # the generated parts are there: the config reference, the API reference, the pictures
    assert "conf/data/cub.yaml" in (site / "configuration" / "index.html").read_text(encoding="utf-8")
    assert "WSOLMetrics" in (site / "api" / "wsol" / "index.html").read_text(encoding="utf-8")
    assert (site / "assets" / "overlay_example.png").is_file()
