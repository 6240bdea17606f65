"""``python -m camlab.compare``: the same as ``camlab-compare``."""

from camlab.compare.cli import main

main()
