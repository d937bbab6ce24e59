"""``python -m pipeline``: the ``tilewise`` command, for checkouts without the console script."""

from pipeline.cli import main

main()
