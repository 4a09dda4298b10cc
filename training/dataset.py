"""Training data through the feature service: features as known at each day's issue time, and targets.

A forecast for delivery day D is issued at gate closure on D-1 (local time of the market). The
training frame holds one row per delivery hour of the requested local days: the features of the
Feast feature service as they were known at that day's issue time (``issued_at``), the actual
day-ahead price (``target``) and when that price became public (``target_known_at``). A model
fitted to forecast day D may use a row only if its target was public at D's issue time; the
backtest enforces that, so nothing known later can leak into a forecast.

Lineage: the Iceberg snapshot of every table read and the feature-service name travel with the
data, for the MLflow run.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features import featurestore
from features.errors import TrainingDataError
from features.featuretables import GROUPS
from features.lake import Lake
from features.marketdata import MarketData
from features.markets import Market

ISSUED_AT = "issued_at"
TARGET = "target"
TARGET_KNOWN_AT = "target_known_at"


@dataclass
class TrainingData:
    """Features as of each day's issue time, with targets; one row per delivery hour, sorted."""

    market: Market
    service: str
    frame: pd.DataFrame  # market, delivery_start, issued_at, features..., missing_features, target, target_known_at
    features: list[str]
    lineage: dict[str, object] = field(default_factory=dict)

    @functools.cached_property
    def days(self) -> pd.Series:
        """The local delivery day of every row (naive midnight); the frame is not changed after loading."""
        return local_days(self.frame["delivery_start"], self.market.timezone)

    def first_day(self) -> dt.date:
        return self.days.min().date()

    def last_day(self) -> dt.date:
        return self.days.max().date()


def local_days(delivery_start: pd.Series, timezone: str) -> pd.Series:
    return delivery_start.dt.tz_convert(timezone).dt.tz_localize(None).dt.normalize()


def delivery_rows(market: Market, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Entity rows of every delivery hour of the local days ``[start, end)`` with their issue times."""
    if end <= start:
        raise TrainingDataError(f"the window [{start}, {end}) is empty; expected an end after the start")
    first = pd.Timestamp(start).tz_localize(market.timezone)
    last = pd.Timestamp(end).tz_localize(market.timezone)
    hours = pd.Series(pd.date_range(first, last, freq="h", inclusive="left").tz_convert("UTC"))
    issued = market.on_day_before(hours, market.gate_closure)
    return pd.DataFrame({"market": market.code, "delivery_start": hours, featurestore.ENTITY_TIMESTAMP: issued})


def issue_time(market: Market, day: dt.date) -> pd.Timestamp:
    """When the forecast of local delivery day ``day`` is issued: gate closure on the day before (UTC).

    Training "as of" a day uses only what was known then: features stamped and prices published by
    this instant.
    """
    return pd.Timestamp(delivery_rows(market, day, day + dt.timedelta(days=1))[featurestore.ENTITY_TIMESTAMP].min())


def load(store, lake: Lake, market_code: str, start: dt.date, end: dt.date, *, service: str,
         min_days: int = 1) -> TrainingData:
    """Features (point in time, through ``service``) and targets of the local days ``[start, end)``.

    Raises:
        UnknownMarketError: the market is not registered.
        TrainingDataError: an empty window, no prices, or fewer than ``min_days`` days with prices
            and features. (A feature missing on every row, such as solar in a market without solar
            forecasts, is no error: models leave it out, and the lineage names it.)
        FeatureStoreError: the feature service is unknown or knows nothing for the window.
    """
    md = MarketData(lake)
    market = md.registry().get(market_code)
    lineage = snapshots(lake)  # before reading, so the run names data at least as old as what it saw
    rows = delivery_rows(market, start, end)
    frame = featurestore.training_set(store, service, rows)
    frame = frame.rename(columns={featurestore.ENTITY_TIMESTAMP: ISSUED_AT})
    names = [c for c in frame.columns if c not in ("market", "delivery_start", ISSUED_AT, "missing_features")]
    prices = md.prices(market.code, rows["delivery_start"].min(),
                                     rows["delivery_start"].max() + pd.Timedelta(hours=1))
    if prices.empty:
        raise TrainingDataError(f"market {market.code!r} has no prices from {start} to {end}; "
                                "ingest them first (aurum ingest ...)")
    prices = prices[["delivery_start", "price", "published_at"]].rename(
        columns={"price": TARGET, "published_at": TARGET_KNOWN_AT})
    frame["delivery_start"] = pd.to_datetime(frame["delivery_start"], utc=True)
    prices["delivery_start"] = pd.to_datetime(prices["delivery_start"], utc=True)
    frame = frame.merge(prices, on="delivery_start", how="left").sort_values("delivery_start").reset_index(drop=True)
    empty = [n for n in names if frame[n].isna().all()]
    usable_days = local_days(frame.loc[frame[TARGET].notna() & (frame["missing_features"] < len(names)),
                                       "delivery_start"], market.timezone).nunique()
    if usable_days < min_days:
        raise TrainingDataError(
            f"market {market.code!r} has {usable_days} days with prices and features from {start} to {end}; "
            f"at least {min_days} are needed (ingest more history or shorten the window)")
    lineage |= {"feature_service": service, "market": market.code, "data_start": str(start), "data_end": str(end),
                "rows": len(frame), "features_missing_everywhere": empty}
    return TrainingData(market, service, frame, names, lineage)


def snapshots(lake: Lake) -> dict[str, object]:
    """Current Iceberg snapshot id of every table a training run reads."""
    tables = [f"{lake.settings.namespace}.prices", *(g.ident for g in GROUPS)]
    return {f"snapshot:{t}": lake.snapshot_id(t) for t in tables}


def known_targets(data: TrainingData, issued_at: pd.Timestamp) -> np.ndarray:
    """Rows whose target was public at ``issued_at`` (the rows a model issued then may learn from)."""
    f = data.frame
    known_at = pd.to_datetime(f[TARGET_KNOWN_AT], utc=True)
    return (f[TARGET].notna() & (known_at <= issued_at)).to_numpy()
