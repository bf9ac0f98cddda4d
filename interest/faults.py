"""Faults on purpose, for the fault-matrix tests: off unless ``INTEREST_FAULTS`` is set.

``INTEREST_FAULTS=point:marker[,point:marker]`` makes the first process that reaches ``point``
create ``marker`` and die at once, as a worker killed by the kernel would (exit 137, no cleanup).
Every later arrival finds the marker and goes on, so a retried task succeeds: the test then
checks that the retry gave exactly what a clean run gives. Points: ``embed_batch`` (a Spark
Python worker, inside batch inference).
"""

from __future__ import annotations

import os


def maybe_die(point: str) -> None:
    """Die here once, if ``INTEREST_FAULTS`` asks for it at ``point``."""
    for item in filter(None, os.environ.get("INTEREST_FAULTS", "").split(",")):
        name, _, marker = item.partition(":")
        if name != point or not marker:
            continue
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue  # died here once already: this is the retry
        os._exit(137)
