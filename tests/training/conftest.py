"""A synthetic market with features and an applied feature store, shared read-only by the training tests."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from features import featurestore
from features.featuretables import compute_features
from features.ingest import ingest_synthetic
from features.lake import Lake
from features.marketdata import MarketData
from features.settings import AurumSettings

MARKET = "SYN_NORTH"
START, END = dt.date(2023, 11, 1), dt.date(2024, 4, 15)  # spans the spring DST day 2024-03-31


@dataclass
class MarketEnv:
    settings: AurumSettings
    lake: Lake
    store: object


def build_env(home, start: dt.date = START, end: dt.date = END, seed: int = 11) -> MarketEnv:
    settings = AurumSettings(home=home)
    lake = Lake.open(settings)
    ingest_synthetic(lake, [MARKET], start, end, seed=seed)
    compute_features(lake, MarketData(lake).registry().get(MARKET))
    return MarketEnv(settings, lake, featurestore.apply(settings))


@pytest.fixture(scope="session")
def market_env(tmp_path_factory) -> MarketEnv:
    """Read-only: tests that change data build their own with ``build_env``."""
    return build_env(tmp_path_factory.mktemp("training") / "home")
