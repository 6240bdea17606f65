"""MkDocs hooks for camlab's site (named in mkdocs.yml).

- The pictures live in `.github/assets/` (the README shows them from there); they are added to the site as
  `assets/<name>` so pages link to one copy.
- `docs/configuration.md` holds the marker below; it is replaced by every file of `conf/` with its comments,
  so the configuration reference is the configs themselves and cannot drift from them.
- camlab's docstrings carry bare doctests (`>>> ...` and its output); Markdown would read `>` as a quote and
  `[1, 2]` as a link, so each doctest run becomes a `pycon` code block before Markdown sees it.
"""

from __future__ import annotations

from pathlib import Path

from markdown import Extension
from markdown.preprocessors import Preprocessor
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

MARKER = "<!-- camlab:conf-reference -->"
ASSETS = ".github/assets"


def _root(config) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def conf_files(conf: Path) -> list[Path]:
    """The entry-point configs first (train.yaml, eval.yaml), then each group's files, group by group."""
    top = sorted(conf.glob("*.yaml"))
    groups = sorted(p for p in conf.rglob("*.yaml") if p.parent != conf)
    return top + groups


def render_conf_reference(conf: Path) -> str:
    """Markdown: one heading per config group, one fenced YAML block per file, as the file is written."""
    out, group = [], None
    for path in conf_files(conf):
        rel = path.relative_to(conf)
        this_group = rel.parent.as_posix() if rel.parent != Path(".") else "entry points"
        if this_group != group:
            group = this_group
            out.append(f"### {group}\n")
        choice = (f"`{rel.parent.as_posix()}={path.stem}`" if rel.parent != Path(".")
                  else f"`{path.stem}.yaml`")
        out.append(f"#### {choice} {{#conf-{rel.with_suffix('').as_posix().replace('/', '-')}}}\n")
        out.append(f"`conf/{rel.as_posix()}`\n")
        out.append("```yaml\n" + path.read_text(encoding="utf-8").rstrip("\n") + "\n```\n")
    return "\n".join(out)


class _DoctestBlocks(Preprocessor):
    """Fence each run of doctest lines (a ``>>>`` line up to the next blank line), outside existing fences."""

    def run(self, lines: list[str]) -> list[str]:
        out, fence, block = [], None, None  # fence: the open ``` / ~~~ marker; block: the indent of a doctest run
        for line in lines:
            stripped = line.lstrip()
            indent = line[: len(line) - len(stripped)]
            if block is not None and not stripped:
                out.append(block + "```")
                block = None
            if fence is None and block is None and stripped.startswith(">>>"):
                block = indent
                out.append(indent + "```pycon")
            elif block is None and stripped.startswith(("```", "~~~")):
                marker = stripped[:3]
                fence = marker if fence is None else (None if stripped.startswith(fence) else fence)
            out.append(line)
        if block is not None:
            out.append(block + "```")
        return out


class DoctestBlocks(Extension):
    def extendMarkdown(self, md):  # noqa: N802 (Markdown's API)
        # after whitespace normalisation (30), before the fenced-code preprocessors (25) read the fences
        md.preprocessors.register(_DoctestBlocks(md), "camlab_doctest_blocks", 29)


@event_priority(100)  # before mkdocstrings' on_config copies the Markdown extensions for docstrings
def on_config(config):
    config.markdown_extensions.append(DoctestBlocks())
    return config


def on_files(files, config):
    for png in sorted((_root(config) / ASSETS).glob("*.png")):
        files.append(File.generated(config, f"assets/{png.name}", abs_src_path=str(png)))
    return files


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, render_conf_reference(_root(config) / "conf"))
    return markdown
