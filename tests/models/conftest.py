"""Seeded synthetic feature frames shared by the model tests (built once per session: ~1 s)."""

from __future__ import annotations

import datetime as dt

import pytest

from models.trainingframe import synthetic_training_frame


@pytest.fixture(scope="session")
def syn():
    """SYN_NORTH (Europe/Berlin) from 2023-01-01 to 2023-11-05: contains both 2023 DST days."""
    return synthetic_training_frame("SYN_NORTH", dt.date(2023, 1, 1), dt.date(2023, 11, 5), seed=3)

