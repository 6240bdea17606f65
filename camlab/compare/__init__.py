"""Compare the jobs of a multirun: ``camlab-compare <sweep dir>`` or ``python -m camlab.compare <sweep dir>``.

Reads every job dir of a Hydra sweep dir (``outputs/<task>/multiruns/<timestamp>/<job number>/``), or the run/job
dirs given on the command line, and reports per job: the overrides that vary across jobs (the common ones go in a
footer), the final value of every ``val/...`` and ``test/...`` metric in ``csv/metrics.csv``, the best value of the
sort metric over epochs, the parameter count (from ``checkpoints/last.ckpt``), the wall time and the status
(finished / failed / running). Prints a table sorted by ``--sort`` and writes ``comparison.csv``, ``comparison.md``
and ``comparison.png`` (x = val/acc, y = the sort metric, one labelled point per job) into the sweep dir or ``--out``.

- :mod:`camlab.compare.jobs`: finding the job dirs and reading each job (:class:`Job`, :func:`collect`).
- :mod:`camlab.compare.report`: the table, ``comparison.csv``, ``comparison.md`` and ``comparison.png``.
- :mod:`camlab.compare.table`: ``--table``, the benchmark's methods table (rows methods, columns backbones).
- :mod:`camlab.compare.cli`: the arguments and :func:`main` (the ``camlab-compare`` console script).
"""

from camlab.compare.cli import DEFAULT_METRICS, DEFAULT_SORT, PROG, build_parser, main, run
from camlab.compare.jobs import Job, collect, find_jobs, read_job

__all__ = ["DEFAULT_METRICS", "DEFAULT_SORT", "PROG", "Job", "build_parser", "collect", "find_jobs", "main",
           "read_job", "run"]
