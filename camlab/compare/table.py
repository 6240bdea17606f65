"""The benchmark's main table from the jobs of a sweep: ``camlab-compare <sweep dir> --table``.

The layout of Choe et al. (CVPR 2020): one row per training method, one column group per backbone, and per column
the cell metrics (default: test MaxBoxAccV2, the same at the CAM thresholds chosen on val (``@val``), PxAP and top-1
loc at the val-chosen threshold). Rows and columns are the values of config keys of each job's
``.hydra/config.yaml`` (``--rows``, default ``wsol.name``; ``--columns``, default ``backbone.name``), so the same
view pivots any sweep (``--rows cam_method.name``, ``--columns data.image_size`` ...). Jobs of one (row, column)
pair (seeds, repeats) give their mean, with the spread and count. The best row of each column and metric is marked
(``*`` printed, bold in Markdown; lower is better for the losses and the lower-is-better faithfulness metrics).

A ``camlab-eval baseline=center`` run dir among the paths (or inside the sweep dir) is the *center baseline* row:
it has no model, so its numbers are the same in every column and it is never marked best; its classification
metrics (top-1 loc) are not measured ("—"). Only finished jobs are used; the others are listed below the table.

Writes ``table.csv`` (one line per row x column x metric: mean, std, n, best, the jobs), ``table.md`` and
``table.png`` (a grouped bar chart per metric, the baseline as a dashed line).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from camlab.atomic import atomic_write, write_text
from camlab.compare.jobs import Job
from camlab.errors import CompareError

DEFAULT_ROWS = "wsol.name"
DEFAULT_COLUMNS = "backbone.name"
DEFAULT_CELLS = ["test/loc/MaxBoxAccV2", "test/loc/MaxBoxAccV2@val", "test/loc/PxAP", "test/loc/top1_loc@val"]
BASELINE_ROW = "center baseline"
BUDGET_KEY = "data.val_per_class"


def config_value(cfg: dict, key: str) -> Any:
    """The value at the dotted ``key`` of a nested config dict, or None where a part is missing.

    Example:
        >>> config_value({"wsol": {"name": "has"}}, "wsol.name"), config_value({}, "wsol.name")
        ('has', None)
    """
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def is_baseline(job: Job) -> bool:
    """A ``camlab-eval baseline=...`` run dir (its config has ``baseline`` set)."""
    return job.config.get("baseline") not in (None, "") and "eval" in job.config


@dataclass
class Cell:
    """The values of one (row, column, metric) over its jobs."""

    values: list[float] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    best: bool = False

    @property
    def mean(self) -> float | None:
        """The mean of the values, None without any."""
        return sum(self.values) / len(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """The sample standard deviation (n - 1), None below two values."""
        n = len(self.values)
        if n < 2:
            return None
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (n - 1))

    def text(self) -> str:
        """The cell as shown: the mean (one decimal), with ``±std (n=...)`` over several jobs; ``—`` when empty."""
        if not self.values:
            return "—"
        out = f"{self.mean:.1f}" if abs(self.mean) >= 1 else f"{self.mean:.3g}"
        return out + (f" ±{self.std:.1f} (n={len(self.values)})" if len(self.values) > 1 else "")


@dataclass
class MethodsTable:
    """Rows x columns x metrics of :class:`Cell`; ``baseline`` cells are keyed by metric only."""

    rows_key: str
    columns_key: str
    metrics: list[str]
    rows: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    cells: dict[tuple[str, str, str], Cell] = field(default_factory=dict)
    baseline: dict[str, Cell] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # "job <label>: <why>"
    budgets: list[str] = field(default_factory=list)  # distinct data.val_per_class values of the jobs used

    def cell(self, row: str, column: str, metric: str) -> Cell:
        """The cell of (``row``, ``column``, ``metric``), an empty one where no job gave it (the baseline row: the
        same cell in every column)."""
        if row == BASELINE_ROW:
            return self.baseline.get(metric, Cell())
        return self.cells.get((row, column, metric), Cell())


def build_table(jobs: Sequence[Job], rows_key: str = DEFAULT_ROWS, columns_key: str = DEFAULT_COLUMNS,
                metrics: Sequence[str] = DEFAULT_CELLS,
                lower_is_better: Callable[[str], bool] = lambda m: False) -> MethodsTable:
    """Pivot the jobs: rows by ``rows_key``, columns by ``columns_key``, the mean of each metric per pair; mark
    the best row per column and metric. Row and column order: first appearance in ``jobs``."""
    table = MethodsTable(rows_key, columns_key, list(metrics))
    budgets = set()
    for job in jobs:
        if job.status != "finished":
            table.skipped.append(f"job {job.label}: {job.status}" + (f" ({job.note})" if job.note else ""))
            continue
        budget = config_value(job.config, BUDGET_KEY)
        budgets.add("—" if budget is None else str(budget))
        if is_baseline(job):
            for m in table.metrics:
                if m in job.final:
                    table.baseline.setdefault(m, Cell()).values.append(job.final[m])
                    table.baseline[m].jobs.append(job.label)
            continue
        row, col = config_value(job.config, rows_key), config_value(job.config, columns_key)
        if row is None or col is None:
            missing = rows_key if row is None else columns_key
            table.skipped.append(f"job {job.label}: its config has no {missing}")
            continue
        row, col = str(row), str(col)
        table.rows += [row] if row not in table.rows else []
        table.columns += [col] if col not in table.columns else []
        for m in table.metrics:
            if m in job.final and not math.isnan(job.final[m]):
                cell = table.cells.setdefault((row, col, m), Cell())
                cell.values.append(job.final[m])
                cell.jobs.append(job.label)
    table.budgets = sorted(budgets)
    for col in table.columns:
        for m in table.metrics:
            means = {r: table.cells[(r, col, m)].mean for r in table.rows if (r, col, m) in table.cells}
            if len(means) < 2:
                continue
            best = (min if lower_is_better(m) else max)(means.values())
            for r, v in means.items():
                table.cells[(r, col, m)].best = v == best
    if table.baseline:
        table.rows.append(BASELINE_ROW)
    if not table.columns:
        why = "; ".join(table.skipped[:3]) or "no jobs"
        raise CompareError(f"--table: no finished job has both {rows_key} and {columns_key} in its config ({why}); "
                           f"choose the keys with --rows / --columns")
    return table


def short(metric: str) -> str:
    """A column label: the metric without its ``<stage>/loc/`` prefix (``test/loc/PxAP`` -> ``PxAP``)."""
    return metric.split("/loc/", 1)[-1] if "/loc/" in metric else metric


def layout(table: MethodsTable, best_mark: Callable[[str], str]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the table: one column per (column value, metric), the best cells through ``best_mark``."""
    header = [table.rows_key] + [f"{c} {short(m)}" for c in table.columns for m in table.metrics]
    rows = []
    for r in table.rows:
        line = [r]
        for c in table.columns:
            for m in table.metrics:
                cell = table.cell(r, c, m)
                line.append(best_mark(cell.text()) if cell.best else cell.text())
        rows.append(line)
    return header, rows


def footer(table: MethodsTable) -> list[str]:
    """The lines under the table: how to read it, the protocol (``@val``, the budget), the baseline, skipped jobs."""
    lines = [f"rows: {table.rows_key}; columns: {table.columns_key}; cells: mean over the jobs of a pair "
             f"(± sample std and n when several); the best of each column and metric is marked (* printed, bold in "
             f"Markdown)",
             "@val: at the CAM thresholds chosen on the val split (the protocol of Choe et al. 2020); the others take "
             "the test split's own best threshold (the oracle)",
             f"full-supervision budget {BUDGET_KEY}: {', '.join(table.budgets) or '—'} (0: the whole val split)"]
    if table.baseline:
        lines.append(f"{BASELINE_ROW}: camlab-eval baseline=center (a centred Gaussian map, no model): the same in "
                     f"every column, never marked; — = not measured (no classification)")
    lines += table.skipped
    return lines


def write_table_csv(file: Path, table: MethodsTable) -> None:
    """``table.csv``: one line per (row, column, metric) with a value: mean, std, n, best (0/1), the jobs; the
    baseline's lines have the column ``*``."""
    with atomic_write(file, "w", newline="") as handle:  # atomic: never a partial file
        writer = csv.writer(handle)
        writer.writerow([table.rows_key, table.columns_key, "metric", "mean", "std", "n", "best", "jobs"])
        for r in table.rows:
            for c in table.columns if r != BASELINE_ROW else ["*"]:
                for m in table.metrics:
                    cell = table.cell(r, c, m)
                    if not cell.values:
                        continue
                    std = cell.std
                    writer.writerow([r, c, m, repr(cell.mean), "" if std is None else repr(std), len(cell.values),
                                     int(cell.best), " ".join(cell.jobs)])


def write_table_markdown(file: Path, table: MethodsTable, title: str) -> None:
    """``table.md``: the table with the best cells in bold, and :func:`footer`'s lines as a list."""
    header, rows = layout(table, lambda t: f"**{t}**")
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |",
             "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += [""] + [f"- {line}" for line in footer(table)]
    write_text(file, "\n".join(lines) + "\n")


def write_table_plot(file: Path, table: MethodsTable, title: str) -> None:
    """One panel per metric: grouped bars (x = columns, one bar per row), the baseline as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    methods = [r for r in table.rows if r != BASELINE_ROW]
    n = len(table.metrics)
    panel = max(3.5, 1.0 + 0.3 * len(table.columns) * max(1, len(methods)))  # inches per metric
    fig, axes = plt.subplots(1, n, figsize=(panel * n, 4), dpi=110, squeeze=False)
    width = 0.8 / max(1, len(methods))
    for ax, m in zip(axes[0], table.metrics):
        for i, r in enumerate(methods):
            xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(table.columns))]
            ys = [table.cell(r, c, m).mean for c in table.columns]
            ax.bar([x for x, y in zip(xs, ys) if y is not None], [y for y in ys if y is not None], width,
                   label=r, edgecolor=["black" if table.cell(r, c, m).best else "none" for c, y in
                                       zip(table.columns, ys) if y is not None])
        base = table.baseline.get(m)
        if base is not None and base.values:
            ax.axhline(base.mean, color="gray", linestyle="--", linewidth=1, label=BASELINE_ROW)
        ax.set_xticks(range(len(table.columns)), table.columns, fontsize=8)
        ax.set_title(short(m), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_xlabel(table.columns_key, fontsize=8)
    legend: dict = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if hasattr(handle, "patches"):  # a bar group: its colour without the "best" outline
                handle = Patch(facecolor=handle.patches[0].get_facecolor())
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=min(8, len(legend)), fontsize=8,
               title=f"{table.rows_key} (outlined: best of its column)", title_fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    try:
        with atomic_write(file, "wb") as handle:
            fig.savefig(handle, format="png")
    finally:
        plt.close(fig)
