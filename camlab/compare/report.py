"""The reports of ``camlab-compare``: the table (printed, Markdown), the CSV and the plot of the jobs read by
:mod:`camlab.compare.jobs`."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

from camlab.atomic import atomic_write, write_text
from camlab.compare.jobs import Job, acc_key


def split_overrides(jobs: list[Job]) -> tuple[list[str], dict[str, str]]:
    """(keys whose value differs across jobs, {key: value} common to all jobs)."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    varying = [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]
    fixed = {k: jobs[0].overrides[k] for k in keys if k not in varying}
    return varying, fixed


def sort_jobs(jobs: list[Job], ascending: bool) -> list[Job]:
    have = [j for j in jobs if j.best is not None and not math.isnan(j.best)]
    rest = [j for j in jobs if j not in have]
    have.sort(key=lambda j: j.best, reverse=not ascending)  # stable: ties keep job order
    return have + rest


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}"


def fmt_params(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} K"


def fmt_wall(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def table_rows(jobs: list[Job], varying: list[str], metrics: list[str], sort: str, ascending: bool):
    best_name = f"{'min' if ascending else 'best'} {sort}"
    header = ["job", "status", *varying, best_name, "best epoch", *metrics, "params", "wall"]
    rows = []
    for job in jobs:
        rows.append([job.label, job.status, *(job.overrides.get(k, "—") for k in varying), fmt(job.best),
                     "—" if job.best_epoch is None else str(job.best_epoch),
                     *(fmt(job.final.get(m)) for m in metrics), fmt_params(job.params), fmt_wall(job.wall_s)])
    return header, rows


def footer_lines(jobs: list[Job], fixed: dict[str, str], sort: str) -> list[str]:
    lines = []
    if fixed:
        lines.append("same in all jobs: " + " ".join(f"{k}={v}" for k, v in fixed.items()))
    explain = {
        "log+mtime": "log+mtime = first timestamp of the job's log (train.log or eval.log) to the newest file in the job dir",
        "log": "log = first to last train.log timestamp (misses the test loop)",
        "mtime": "mtime = .hydra/config.yaml to the newest file in the job dir",
    }
    sources = sorted({j.wall_source.split(" ")[0] for j in jobs if j.wall_source})
    if sources:
        so_far = any("so far" in j.wall_source for j in jobs)
        lines.append("wall: " + "; ".join(explain[s] for s in sources) + ("; running jobs: so far" if so_far else ""))
    lines.append(f"metrics: final (last logged) values; best {sort} over epochs (epochs count from 0); "
                 f"params: float tensors of last.ckpt's state_dict without BatchNorm statistics")
    for job in jobs:
        if job.note:
            lines.append(f"job {job.label}: {job.status}: {job.note}")
    return lines


def print_table(header: list[str], rows: list[list[str]], footer: list[str], title: str) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        print(title)
        for line in [header, *rows]:
            print("  ".join(c.ljust(w) for c, w in zip(line, widths)))
        print("\n".join(footer))
        return
    # Not a terminal (a pipe, a file, a test): never truncate or fold a number.
    console = Console() if sys.stdout.isatty() else Console(width=10_000)
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(header):
        head, sep, tail = name.rpartition("/")
        label = f"{head}{sep}\n{tail}" if len(name) > 12 and sep else name
        table.add_column(label, justify="left" if i < 2 else "right", overflow="fold")
    status_style = {"finished": "", "failed": "red", "running": "yellow"}
    for row in rows:
        table.add_row(*row, style=status_style.get(row[1], ""))
    console.print(table)
    for line in footer:
        console.print(line, highlight=False, markup=False)


def write_csv(file: Path, jobs: list[Job], varying: list[str], sort: str, ascending: bool) -> None:
    metric_keys = sorted({k for j in jobs for k in j.final}, key=lambda k: (not k.startswith("val/"), k))
    best_name = f"{'min' if ascending else 'best'} {sort}"
    fields = ["job", "status", *varying, best_name, "best_epoch", "epochs", *metric_keys, "params", "wall_s",
              "wall_source", "note", "path"]
    with atomic_write(file, "w", newline="") as handle:  # atomic: never a partial file
        writer = csv.writer(handle)
        writer.writerow(fields)
        for j in jobs:
            writer.writerow([j.label, j.status, *(j.overrides.get(k, "") for k in varying),
                             "" if j.best is None else repr(j.best), "" if j.best_epoch is None else j.best_epoch,
                             "" if j.epochs is None else j.epochs,
                             *("" if j.final.get(k) is None else repr(j.final[k]) for k in metric_keys),
                             "" if j.params is None else j.params,
                             "" if j.wall_s is None else f"{j.wall_s:.1f}", j.wall_source, j.note, str(j.path)])


def write_markdown(file: Path, header: list[str], rows: list[list[str]], footer: list[str], title: str) -> None:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = [f"# {title}", "", "| " + " | ".join(map(esc, header)) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in rows]
    lines += [""] + [f"- {line}" for line in footer]
    write_text(file, "\n".join(lines) + "\n")


def write_plot(file: Path, jobs: list[Job], varying: list[str], sort: str, ascending: bool, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    shown = [j for j in jobs if j.best is not None and j.x_at_best is not None]
    colors = {"finished": "tab:blue", "failed": "tab:red", "running": "tab:orange"}
    for job in shown:
        ax.scatter(job.x_at_best, job.best, s=40, color=colors.get(job.status, "gray"), zorder=3)
        text = " ".join(f"{k}={job.overrides.get(k, '—')}" for k in varying) or job.label
        ax.annotate(f"{job.label}: {text}" if varying else text, (job.x_at_best, job.best),
                    textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel(f"{acc_key(sort)} (at the best epoch)")
    ax.set_ylabel(f"{'min' if ascending else 'best'} {sort}")
    missing = len(jobs) - len(shown)
    ax.set_title(title + (f"\n({missing} job(s) without values not shown)" if missing else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(0.15)
    fig.tight_layout()
    try:
        with atomic_write(file, "wb") as handle:
            fig.savefig(handle, format="png")
    finally:
        plt.close(fig)
