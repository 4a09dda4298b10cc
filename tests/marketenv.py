"""Test environments shared across stages: a synthetic market in a lake with an applied feature store,
and the same with an approved champion in a real MLflow store (what serving and monitoring start from).

A plain module (not a conftest) so that tests of every stage can import it without name clashes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

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
    markets: tuple[str, ...] = (MARKET,)
    champions: dict[str, str] = field(default_factory=dict)  # market -> registered version


def build_env(home: Path, start: dt.date = START, end: dt.date = END, seed: int = 11,
              markets: tuple[str, ...] = (MARKET,), shift=None) -> MarketEnv:
    """Ingest synthetic ``markets`` for ``[start, end]``, compute their features and apply the feature store."""
    settings = AurumSettings(home=home)
    lake = Lake.open(settings)
    ingest_synthetic(lake, list(markets), start, end, seed=seed, **({"shift": shift} if shift else {}))
    registry = MarketData(lake).registry()
    for m in markets:
        compute_features(lake, registry.get(m))
    return MarketEnv(settings, lake, featurestore.apply(settings), tuple(markets))


def build_served_env(home: Path, start: dt.date = START, end: dt.date = END, seed: int = 11,
                     markets: tuple[str, ...] = (MARKET,), model: str = "lgbm", **params) -> MarketEnv:
    """``build_env``, then a small model trained, registered and approved as each market's ``champion``
    (through the real training pipeline and MLflow store under ``home``), and the online store
    materialized over the whole period."""
    from training import pipeline
    from training.specs import ModelSpec

    env = build_env(home, start, end, seed, markets)
    spec = ModelSpec.of(model, **({"n_estimators": 60, "calibration_days": 28} if model == "lgbm" else {}), **params)
    session = pipeline.Session.open(env.settings)
    for m in markets:
        result = pipeline.train(env.settings, m, spec, backtest_days=14, baselines=(), session=session)
        assert result.decision.promote, result.decision.reason
        env.champions[m] = result.version
    featurestore.materialize(env.store, dt.datetime.combine(start, dt.time(), dt.timezone.utc),
                             dt.datetime.combine(end + dt.timedelta(days=2), dt.time(), dt.timezone.utc))
    return env
