"""The ``camlab-compare`` command line: arguments, then read the jobs and write the reports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from camlab.compare.jobs import collect
from camlab.compare.report import (footer_lines, print_table, sort_jobs, split_overrides, table_rows, write_csv,
                                   write_markdown, write_plot)
from camlab.compare.table import (DEFAULT_CELLS, DEFAULT_COLUMNS, DEFAULT_ROWS, build_table, footer, layout,
                                  write_table_csv, write_table_markdown, write_table_plot)
from camlab.errors import CompareError

PROG = "camlab-compare"
DEFAULT_SORT = "val/loc/MaxBoxAccV2"
DEFAULT_METRICS = [
    "val/acc", "val/loc/top1_loc", "val/loc/MaxBoxAccV2", "val/loc/PxAP",
    "test/acc", "test/loc/top1_loc", "test/loc/MaxBoxAccV2", "test/loc/PxAP",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Compare the jobs of a camlab multirun (camlab-train -m ...): a sorted table of "
        "the varying overrides, final/best metrics, parameter count, wall time and status; writes comparison.csv, "
        "comparison.md and comparison.png.")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="a sweep dir (outputs/<task>/multiruns/<timestamp>) or run/job dirs")
    parser.add_argument("--sort", default=DEFAULT_SORT, help=f"metric to rank by (default {DEFAULT_SORT}); "
                        "its best value over epochs is shown and plotted against val/acc")
    parser.add_argument("--ascending", action="store_true",
                        help="lower is better (e.g. --sort val/loss): best = min, sorted ascending; implied for the "
                             "losses and the faithfulness metrics where lower is better (e.g. test/faith/deletion_auc)")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                        help="comma-separated final metrics for the printed/Markdown table (the CSV has all)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write comparison.{csv,md,png} (default: the sweep/run dir given; "
                             "with several paths: the current dir)")
    parser.add_argument("--running-window", type=float, default=600, metavar="SECONDS",
                        help="an unfinished job that wrote a file within this many seconds is 'running', "
                             "else 'failed' (default 600; a job before a later job of a sequential sweep is "
                             "always 'failed')")
    parser.add_argument("--no-files", action="store_true", help="only print the table")
    parser.add_argument("--table", action="store_true",
                        help="the benchmark's methods table instead of one line per job: rows --rows, column groups "
                             "--columns, cells --cells, the best per column marked; writes table.csv/.md/.png")
    parser.add_argument("--rows", default=DEFAULT_ROWS, help=f"--table: config key of the rows (default {DEFAULT_ROWS})")
    parser.add_argument("--columns", default=DEFAULT_COLUMNS,
                        help=f"--table: config key of the column groups (default {DEFAULT_COLUMNS})")
    parser.add_argument("--cells", default=",".join(DEFAULT_CELLS),
                        help="--table: comma-separated metrics shown per column (default "
                             f"{','.join(DEFAULT_CELLS)})")
    return parser


def lower_is_better(metric: str) -> bool:
    """The metrics ranked ascending without ``--ascending``: losses and camlab.faith's lower-is-better ones."""
    name = metric.rsplit("/", 1)[-1]
    if name == "loss":
        return True
    if "/faith/" not in metric:
        return False
    from camlab.faith import HIGHER_IS_BETTER  # torch: only when a faithfulness metric ranks the jobs

    return HIGHER_IS_BETTER.get(name) is False


def run(args: argparse.Namespace) -> None:
    if args.out is not None and args.out.exists() and not args.out.is_dir():  # before the work, not after it
        raise CompareError(f"--out {args.out} is a file, not a directory: give a directory (created if missing)")
    args.ascending = args.ascending or lower_is_better(args.sort)
    jobs = collect(args.paths, args.sort, args.ascending, args.running_window)
    if args.table:
        return run_table(args, jobs)
    if not any(args.sort in j.series for j in jobs):
        known = sorted({k for j in jobs for k in j.series if k.startswith(("val/", "test/"))})
        if known:
            raise CompareError(f"--sort {args.sort}: no job logged it; logged: {', '.join(known)}")
    jobs = sort_jobs(jobs, args.ascending)
    varying, fixed = split_overrides(jobs)
    requested = [m.strip() for m in args.metrics.split(",") if m.strip()]
    metrics = [m for m in requested if any(m in j.final for j in jobs)]
    header, rows = table_rows(jobs, varying, metrics, args.sort, args.ascending)
    footer = footer_lines(jobs, fixed, args.sort)
    where = args.paths[0] if len(args.paths) == 1 else Path.cwd()
    title = f"{len(jobs)} jobs of {args.paths[0]}" if len(args.paths) == 1 else f"{len(jobs)} jobs"
    print_table(header, rows, footer, title)
    if args.no_files:
        return
    out = args.out or where
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "comparison.csv", jobs, varying, args.sort, args.ascending)
    write_markdown(out / "comparison.md", header, rows, footer, title)
    write_plot(out / "comparison.png", jobs, varying, args.sort, args.ascending, title)
    print(f"wrote {out / 'comparison.csv'}, comparison.md, comparison.png")


def run_table(args: argparse.Namespace, jobs: list) -> None:
    """``--table``: print the methods table and write ``table.csv``, ``table.md``, ``table.png``."""
    cells = [m.strip() for m in args.cells.split(",") if m.strip()]
    logged = {k for j in jobs for k in j.final}
    unknown = [m for m in cells if m not in logged]
    if len(unknown) == len(cells):
        raise CompareError(f"--cells {args.cells}: no job logged any of them; logged: {', '.join(sorted(logged))}")
    table = build_table(jobs, args.rows, args.columns, cells, lower_is_better)
    title = f"methods table of {args.paths[0]}" if len(args.paths) == 1 else f"methods table of {len(jobs)} jobs"
    header, rows = layout(table, lambda text: f"{text} *")
    notes = footer(table) + [f"--cells {m}: no job logged it" for m in unknown]
    print_table(header, rows, notes, title)
    if args.no_files:
        return
    out = args.out or (args.paths[0] if len(args.paths) == 1 else Path.cwd())
    out.mkdir(parents=True, exist_ok=True)
    write_table_csv(out / "table.csv", table)
    write_table_markdown(out / "table.md", table, title)
    write_table_plot(out / "table.png", table, title)
    print(f"wrote {out / 'table.csv'}, table.md, table.png")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except CompareError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as err:  # unreadable dirs, a read-only or full --out, ...
        where = f"{err.filename}: " if err.filename else ""
        print(f"{PROG}: error: {where}{err.strerror or err} (the files written before are kept whole)", file=sys.stderr)
        raise SystemExit(2) from None
