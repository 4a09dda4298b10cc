"""``aurum score``: batch scoring with the champion, as the service would have on each D-1."""

from __future__ import annotations


def score() -> None:
    """Score delivery days with the market's champion (not built yet)."""
    raise SystemExit("aurum score is not built yet")
