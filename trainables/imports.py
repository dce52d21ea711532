"""Heavy imports with Python's cyclic garbage collector paused.

Importing torch, transformers, Ray Tune and MLflow makes millions of objects and next to no
garbage, yet the collector walks the growing heap again and again as they appear: 12-18 % of
the imports' CPU time on this project's stack (``benchmarks/imports.py``: a trial worker's
0.82x, ``mtlo search``'s 0.88x with the collector paused). Every trial worker and every
``mtlo`` command pays those imports once, so they run under :func:`collector_paused`.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The collector off for the block, back on after it if it was on. The pause is the
    process's (the collector is global): a thread that allocates meanwhile is not collected
    either, for the seconds an import takes."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
