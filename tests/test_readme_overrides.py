"""Every `camlab-train` command in the README's and the docs pages' code blocks, and every inline override in
their text, composes; every `camlab-eval` command composes and every `camlab-predict` / `camlab-compare` command
parses.

An override that Hydra refuses (a ``+`` on an existing key, a renamed key, a dropped option) is a broken
instruction; the examples the pages give *as errors* must still fail. The pages checked are the README and every
page under docs/ except docs/troubleshooting.md, whose commands are errors on purpose.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README] + sorted(p for p in (ROOT / "docs").rglob("*.md") if p.name != "troubleshooting.md")
# The pages show these as bad input and the one-line error each gives.
BAD = {"backbone=nope", "backbone.name=nope", "trainer.max_epoch=3"}


def _commands(text: str, prog: str = "camlab-train", sweep: bool = True) -> list[list[str]]:
    """Argument lists of the ``prog`` commands: lines of fenced code blocks, and backticked commands in the text
    and tables (Hydra sweeps: each key's first value)."""
    pattern = re.compile(rf"(?:^|&&)\s*(?:[A-Z_]+=\S+\s+)*{prog}\b(.*)")
    found, fenced = [], False
    for line in text.replace("\\\n", " ").splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            found.append(line)
        else:
            found += re.findall(rf"`([^`]*{prog}\b[^`]*)`", line)
    commands = []
    for cmd in found:
        m = pattern.search(cmd)
        if not m:
            continue
        args = re.split(r"\s{2,}#|\s#\s", m.group(1))[0]
        args = re.sub(r"<[^>]*>", "x", args)  # placeholders such as <run dir>
        tokens = [t for t in shlex.split(args) if t not in ("-m", "--multirun", "...")]
        commands.append([_first_sweep_value(t) for t in tokens] if sweep else tokens)
    return commands


def _first_sweep_value(token: str) -> str:
    key, _, value = token.partition("=")
    if "," in value and not value.startswith(("[", "{", "'", '"')):
        value = value.split(",")[0]
    return f"{key}={value}"


def _inline_overrides(text: str) -> list[str]:
    """Backticked `a.b=c` / `+a.b=c` spans in the text (outside code blocks) whose root is a config key; a span
    of several comma-joined overrides (an ``override_dirname``) counts as each, a sweep as its first value."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    spans = []
    for span in re.findall(r"`([^`\s]+=[^`\s]+)`", prose):
        parts = re.split(r",(?=[+~]*[a-z_.]+=)", span)
        spans += [_first_sweep_value(p) for p in parts]
    roots = {"backbone", "callbacks", "data", "model", "trainer", "threshold", "logger", "pool", "debug",
             "experiment", "cam_method", "hparams_search", "seed", "ckpt_path", "tune_malloc", "optimized_metric"}
    spans = [s for s in spans if s.partition("=")[2] != "..."]  # `group=...`: the group named, no value given
    return sorted({s for s in spans if s.lstrip("+~").split("=")[0].split(".")[0] in roots})


DATA = sorted(p.stem for p in (ROOT / "conf" / "data").glob("*.yaml"))


def _compose(overrides: list[str], config: str = "train") -> None:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module("camlab.conf", version_base="1.3"):
            compose(config, overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _per_page(find) -> list[tuple[str, object]]:
    """(page, item) for each item ``find(text)`` gives on each page, each item once (its first page)."""
    seen, out = set(), []
    for page in PAGES:
        for item in find(page.read_text(encoding="utf-8")):
            key = repr(item)
            if key not in seen:
                seen.add(key)
                out.append((_name(page), item))
    return out


COMMANDS = [(p, c) for p, c in _per_page(_commands) if not set(c) & BAD]
INLINE = [(p, s) for p, s in _per_page(_inline_overrides) if s not in BAD]


def test_the_pages_have_commands_and_overrides_to_check():
    assert len(PAGES) >= 12, [_name(p) for p in PAGES]
    readme = _commands(README.read_text(encoding="utf-8"))
    assert len(readme) >= 15 and len(COMMANDS) >= 45 and len(INLINE) >= 25, (len(readme), len(COMMANDS), len(INLINE))


@pytest.mark.parametrize("page, overrides", COMMANDS, ids=[f"{p}: {' '.join(c) or '(default)'}" for p, c in COMMANDS])
def test_page_command_composes(page, overrides):
    _compose(overrides)


EVAL = [c for _, c in _per_page(lambda t: _commands(t, "camlab-eval"))]
PREDICT = [c for _, c in _per_page(lambda t: _commands(t, "camlab-predict", sweep=False)) if c]
COMPARE = [c for _, c in _per_page(lambda t: _commands(t, "camlab-compare", sweep=False)) if c]


def test_page_eval_predict_compare_commands_parse():
    from camlab.compare import build_parser
    from camlab.predict import parse_args

    assert len(EVAL) >= 2 and len(PREDICT) >= 2 and len(COMPARE) >= 4, (EVAL, PREDICT, COMPARE)
    for overrides in EVAL:
        _compose(overrides, "eval")
    for args in PREDICT:
        parse_args(args)  # argparse exits (SystemExit) on an unknown option
    for args in COMPARE:
        build_parser().parse_args(args)


@pytest.mark.parametrize("page, override", INLINE, ids=[f"{p}: {s}" for p, s in INLINE])
def test_page_inline_override_composes(page, override):
    if not override.startswith("data."):
        _compose([override])
        return
    # a key of one dataset config (data.masks, data.val_from ...): the page names it in that dataset's section
    for data in DATA:
        try:
            _compose([f"data={data}", override])
            return
        except Exception:
            continue
    pytest.fail(f"no data config has the key of {override!r}")


@pytest.mark.parametrize("override", sorted(BAD))
def test_bad_input_examples_still_fail(override):
    if override.startswith("backbone.name="):  # composes; the backbone registry refuses it at build time
        from camlab.models.backbones import create_backbone

        with pytest.raises(Exception, match="Unknown backbone 'nope'"):
            create_backbone("nope")
        return
    with pytest.raises(Exception):
        _compose([override])
