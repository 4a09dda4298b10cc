"""Monitoring windows: local delivery days, their features as known at each issue time, the champion's forecasts.

The day-ahead rule of training holds here too: the features of local delivery day D are those the
feature store knew at D's issue time (gate closure on D-1), read through the champion's feature
service from the offline store (``features.featurestore.training_set``). So a drift check sees
exactly what the champion saw, or would have seen, when it forecast those days.
"""

from __future__ import annotations

import datetime as dt
import functools
import re

import numpy as np
import pandas as pd

from features.errors import InvalidWindowError, MonitoringDataError
from features.lake import Lake
from features.marketdata import MarketData
from features.markets import Market
from models import mlflow_model as ml
from monitoring.drift import DAY, PREDICTION

_WINDOW = re.compile(r"^\s*(\d+)\s*([dw]?)\s*$", re.IGNORECASE)


def parse_window(text: str) -> int:
    """Days of a window given as ``7d``, ``2w`` or ``7``.

    Raises:
        InvalidWindowError: anything else, or fewer than one day.
    """
    m = _WINDOW.match(str(text))
    days = int(m.group(1)) * (7 if m.group(2).lower() == "w" else 1) if m else 0
    if days < 1:
        raise InvalidWindowError(f"window {text!r} is not a length of days; expected a number of days or weeks "
                                 "such as 7d, 14d or 2w")
    return days


def entity_rows(market: Market, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Every delivery hour of the local days ``[start, end)`` with its issue time (gate closure on D-1)."""
    first = pd.Timestamp(start).tz_localize(market.timezone)
    last = pd.Timestamp(end).tz_localize(market.timezone)
    hours = pd.Series(pd.date_range(first, last, freq="h", inclusive="left").tz_convert("UTC"))
    issued = market.on_day_before(hours, market.gate_closure)
    from features import featurestore  # Feast takes seconds to import: only where features are read

    return pd.DataFrame({"market": market.code, "delivery_start": hours, featurestore.ENTITY_TIMESTAMP: issued})


def local_day(delivery_start: pd.Series, timezone: str) -> pd.Series:
    """The local delivery day of each hour, as a naive midnight."""
    return pd.to_datetime(delivery_start, utc=True).dt.tz_convert(timezone).dt.tz_localize(None).dt.normalize()


def service_frame(store, service: str, market: Market, start: dt.date, end: dt.date, *, lake: Lake | None = None
                  ) -> pd.DataFrame:
    """The service's features of every delivery hour of the local days ``[start, end)``, as known at issue time.

    Columns: ``market``, ``delivery_start`` (UTC), ``issued_at``, ``day`` (local day), the features,
    ``missing_features``. Rows of hours nothing is known for are kept (they count as missing).

    Raises:
        MonitoringDataError: nothing at all is known for the window (the message names the market's
            latest day with prices when ``lake`` is given).
    """
    from features import featurestore

    rows = entity_rows(market, start, end)
    try:
        frame = featurestore.training_set(store, service, rows)
    except featurestore.FeatureStoreError as exc:
        if "no feature of service" not in str(exc):
            raise
        latest = latest_day(lake, market) if lake is not None else None
        have = f"its latest day with prices is {latest}" if latest else "it has no prices at all"
        raise MonitoringDataError(
            f"market {market.code!r} has no features for the local days {start} .. {end - dt.timedelta(days=1)} "
            f"through service {service!r}; {have} (choose an --end inside the data, or ingest and "
            "aurum features compute first)") from exc
    frame = frame.rename(columns={featurestore.ENTITY_TIMESTAMP: "issued_at"})
    frame["delivery_start"] = pd.to_datetime(frame["delivery_start"], utc=True)
    frame.insert(3, DAY, local_day(frame["delivery_start"], market.timezone))
    return frame


def latest_day(lake: Lake, market: Market) -> dt.date | None:
    """The last local delivery day with a price of the market, or None."""
    prices = MarketData(lake).prices(market.code)
    if prices.empty:
        return None
    return local_day(prices["delivery_start"], market.timezone).max().date()


class ChampionModel:
    """The champion's pyfunc model, loaded once per process and version; forecasts its median."""

    def __init__(self, uri: str):
        self.uri = uri
        self.model = ml.load_forecaster(uri)
        self.inputs = list(self.model.metadata.get_input_schema().input_names())

    @classmethod
    def load(cls, uri: str, store: str) -> ChampionModel:
        """The model at ``uri`` of the MLflow ``store`` (MLflow must point at it), loaded once per process."""
        return _load(cls, uri, store)

    def median(self, frame: pd.DataFrame) -> np.ndarray:
        """The median forecast (q50) of each row; NaN for rows where no input feature is known."""
        out = np.full(len(frame), np.nan)
        features = [c for c in self.inputs if c not in ("market", "delivery_start")]
        known = frame[features].notna().any(axis=1).to_numpy()
        if known.any():
            rows = ml.pyfunc_input(frame.loc[known, self.inputs].reset_index(drop=True))
            out[known] = self.model.predict(rows, params={"quantiles": [0.5]})["q50"].to_numpy()
        return out


@functools.lru_cache(maxsize=8)
def _load(cls, uri: str, store: str) -> ChampionModel:
    return cls(uri)  # ``store`` is part of the key: the same ``models:/name/1`` differs between stores


def with_predictions(frame: pd.DataFrame, model: ChampionModel) -> pd.DataFrame:
    return frame.assign(**{PREDICTION: model.median(frame)})
