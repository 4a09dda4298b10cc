"""Feature frames built in memory from lake-shaped market data, for tests and model studies.

``training_frame`` runs the same transforms as ``features.featuretables.compute_features`` and joins
the groups and the target like a training set of ``day_ahead_v1`` (one row per delivery hour that
has a price; ``event_timestamp`` = gate closure on D-1; ``missing_features`` = NaN features of the
row). It does not apply the as-of versioning of the feature store: with each value known once (no
revisions) the result equals a point-in-time training set. Production training reads Feast.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from features.markets import BUILTIN_MARKETS, Market, MarketRegistry
from features.transforms import CalendarAdder, ExogenousAdder, ExogenousLagsAdder, PriceLagsAdder
from models.featureframe import FEATURE_NAMES


def training_frame(prices: pd.DataFrame, fundamentals: pd.DataFrame, market: Market) -> tuple[pd.DataFrame, pd.Series]:
    """Features and target (the price) of every delivery hour with a price.

    ``prices``: ``delivery_start``, ``price``, ``published_at``; ``fundamentals``: ``delivery_start``,
    ``issued_at`` and forecast columns (as the lake's tables hold them).
    """
    price_f = PriceLagsAdder().transform(prices, market).drop(columns="known_at")
    exo = ExogenousAdder().transform(fundamentals, market).drop(columns="known_at")
    exo_lags = ExogenousLagsAdder().transform(fundamentals, market).drop(columns=["known_at", "market"])
    target = prices[["delivery_start", "price"]].copy()
    target["delivery_start"] = pd.to_datetime(target["delivery_start"], utc=True).astype("datetime64[us, UTC]")
    rows = target.merge(price_f, on="delivery_start", how="left").merge(exo.drop(columns="market"),
                                                                         on="delivery_start", how="left")
    rows = rows.merge(exo_lags, on="delivery_start", how="left")
    rows["market"] = market.code
    cal = CalendarAdder().rows(rows["delivery_start"], market).drop(columns=["known_at", "market"])
    rows = rows.merge(cal, on="delivery_start", how="left")
    rows["event_timestamp"] = market.on_day_before(rows["delivery_start"], market.gate_closure)
    rows = rows.sort_values("delivery_start").reset_index(drop=True)
    for c in ("is_weekend", "is_holiday"):
        rows[c] = rows[c].astype(bool)
    rows["missing_features"] = rows[list(FEATURE_NAMES)].isna().sum(axis=1).astype("int64")
    features = rows[["market", "delivery_start", "event_timestamp", *FEATURE_NAMES, "missing_features"]]
    return features, rows["price"].rename("price")


def synthetic_training_frame(code: str = "SYN_NORTH", start: dt.date = dt.date(2023, 1, 1),
                             end: dt.date = dt.date(2023, 4, 1), *, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """``training_frame`` of the seeded synthetic market ``code`` over local days ``[start, end)``."""
    from features.synthetic import generate_market

    market = MarketRegistry(BUILTIN_MARKETS).get(code)
    raw = generate_market(code, start, end, seed=seed)
    prices = raw[["delivery_start", "price"]].assign(
        published_at=market.on_day_before(raw["delivery_start"], market.prices_published))
    fundamentals = raw.drop(columns=["price"]).assign(
        issued_at=market.on_day_before(raw["delivery_start"], market.forecasts_issued))
    features, target = training_frame(prices, fundamentals, market)
    first_full = features["price_lag_P7D"].notna().idxmax()  # the first week has no weekly lag
    keep = np.arange(len(features)) >= first_full
    return features[keep].reset_index(drop=True), target[keep].reset_index(drop=True)
