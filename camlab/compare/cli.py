"""The ``camlab-compare`` command line: arguments, then read the jobs and write the reports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from camlab.compare.jobs import collect
from camlab.compare.report import (footer_lines, print_table, sort_jobs, split_overrides, table_rows, write_csv,
                                   write_markdown, write_plot)
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
    args.ascending = args.ascending or lower_is_better(args.sort)
    jobs = collect(args.paths, args.sort, args.ascending, args.running_window)
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


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except CompareError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as err:  # unreadable dirs, a read-only --out, ...
        print(f"{PROG}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
