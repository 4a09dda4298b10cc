"""Helpers of the model tests (a module of its own: ``conftest`` names collide across test folders)."""

from __future__ import annotations


def days_between(features, start: str, end: str):
    """Boolean mask of rows with local delivery day in [start, end)."""
    from models.featureframe import local_day

    d = local_day(features)
    return ((d >= start) & (d < end)).to_numpy()
