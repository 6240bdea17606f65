"""The assertions every hostile-input case makes: a short message naming the culprit, no file lost or half-written."""
from __future__ import annotations

from pathlib import Path


def short(text: str, *names: object, max_lines: int = 2) -> str:
    """``text`` is a message of at most ``max_lines`` non-blank lines, without a traceback, naming every one of
    ``names`` (a file, a key, a line); returns it."""
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    assert 1 <= len(lines) <= max_lines, f"{len(lines)} lines:\n{text}"
    assert "Traceback" not in text, text
    for name in names:
        assert str(name) in text, f"{name!r} not named in: {text}"
    return text


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes)."""
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} \
        if root.exists() else {}


def clean(root: Path, before: dict[str, bytes] | None = None, allow_new: bool = True) -> dict[str, bytes]:
    """Under ``root``: no temporary file of camlab.atomic, no empty file, every file of ``before`` unchanged (and,
    without ``allow_new``, no new file); returns the new snapshot."""
    now = snapshot(root)
    leftovers = [name for name in now if name.endswith(".tmp") or ".tmp-" in name]
    assert not leftovers, f"temporary files left: {leftovers}"
    empty = [name for name, data in now.items() if not data and (before is None or name not in before)]
    assert not empty, f"empty files left: {empty}"
    for name, data in (before or {}).items():
        assert now.get(name) == data, f"{name} was changed or lost"
    if not allow_new:
        assert set(now) == set(before or {}), f"new files: {sorted(set(now) - set(before or {}))}"
    return now
