"""Pacing CPython's cyclic garbage collector for phases that allocate many long-lived objects."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def batch_gc(young: int = 50_000) -> Iterator[None]:
    """The cyclic garbage collector paced for a bounded phase of bulk allocation (a batch command,
    a service's start-up), within this block.

    CPython's default (a young collection every 700 container allocations, a full one every 100 of
    those, with a guard) suits a long-lived process. A command that imports MLflow, Feast, pandas
    and LightGBM first allocates several million long-lived objects, and each full collection on
    the way walks all of them: 7 full collections took 0.6 s of a 4.3-s ``aurum score`` here and
    freed 2,547 objects in all (docs/benchmarks.md, batch scoring). Within this block a young collection
    runs every ``young`` allocations and an older one every 20 of those, so the heap is walked in
    full rarely; garbage in reference cycles lives a little longer (the peak RSS of that command rose
    by 3 %, 15 MiB). Reference counting, which frees almost everything, is unchanged. The thresholds
    in force before are restored on the way out; long-running processes (the service, the archiver,
    tuning) keep the defaults outside such a block.
    """
    saved = gc.get_threshold()
    gc.set_threshold(young, 20, 20)
    try:
        yield
    finally:
        gc.set_threshold(*saved)
