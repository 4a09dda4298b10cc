"""Import Feast without typeguard's runtime type checks, for processes that only read features.

Feast decorates its core classes (``FeatureView``, ``OnDemandFeatureView``, the data sources, …) with
typeguard's ``@typechecked``, which parses and recompiles every method of the class when the module is
imported and then checks the argument types of every call. That is most of ``import feast``: in
``aurum score``, ``features.featurestore`` took 3.3 s of the imports with the checks and 0.3 s without
them (docs/benchmarks.md); on a busy machine ``import feast`` took 10-13 s against 3-4 s. The
checks guard hand-written calls, such as the declarations in ``feature_repo/``; the serving and batch
scoring processes write none (they read a registry that ``aurum features apply``, with the checks,
has already validated), so they import Feast with the decorator as the no-op it is under
``python -O`` (typeguard's own rule). A process that has already imported Feast keeps what it has.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator


def _no_typecheck(target=None, **_options):
    """``typeguard.typechecked`` as ``python -O`` makes it: the decorated object, unchanged."""
    if target is None:
        return lambda t: t
    return target


@contextlib.contextmanager
def feast_unchecked() -> Iterator[None]:
    """Within this block, Feast's modules imported for the first time skip ``@typechecked``."""
    if "feast" in sys.modules:  # the classes are decorated already, one way or the other
        yield
        return
    import typeguard

    original = typeguard.typechecked
    typeguard.typechecked = _no_typecheck
    try:
        importlib.import_module("feast")
        yield
    finally:
        typeguard.typechecked = original
