"""Exogenous day-ahead forecasts of the delivery hour itself, and residual load.

These are the TSO forecasts published before the auction (``issued_at``, D-1 morning), so they
are known at forecast time for day D. ``residual_load_mw`` = load − wind − solar, missing when any
part is missing (a missing part is unknown, not zero).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import pandas as pd

from features.markets import Market
from features.transforms.localtime import days_back, delivery_hours, local_day_and_hour

EXOGENOUS_COLUMNS: tuple[str, ...] = (
    "load_forecast_mw", "wind_forecast_mw", "solar_forecast_mw", "generation_forecast_mw", "fuel_price_eur_mwh",
)
RESIDUAL_LOAD_PARTS: tuple[str, str, str] = ("load_forecast_mw", "wind_forecast_mw", "solar_forecast_mw")

Values = TypeVar("Values", pd.Series, np.ndarray)


def residual_load(load: Values, wind: Values, solar: Values) -> Values:
    """``residual_load_mw`` of aligned load, wind and solar forecasts (Series or arrays): load − wind − solar.

    The one definition, shared by the feature tables and by what-if scenarios that change its parts;
    missing (NaN) wherever a part is missing.
    """
    return load - wind - solar


class ExogenousAdder:
    """Projects the day-ahead forecasts of each delivery hour and derives residual load."""

    @property
    def feature_names(self) -> list[str]:
        return [*EXOGENOUS_COLUMNS, "residual_load_mw"]

    def transform(self, fundamentals: pd.DataFrame, market: Market) -> pd.DataFrame:
        """``fundamentals``: one market's rows of the lake's fundamentals table."""
        f = fundamentals.sort_values("delivery_start")
        out = pd.DataFrame({"market": market.code, "delivery_start": f["delivery_start"].to_numpy()})
        for c in EXOGENOUS_COLUMNS:
            out[c] = f[c].to_numpy() if c in f.columns else float("nan")
        out["residual_load_mw"] = residual_load(*(out[c] for c in RESIDUAL_LOAD_PARTS))
        out["known_at"] = f["issued_at"].to_numpy()  # actuals (load_actual_mw) are never features here
        out["delivery_start"] = pd.to_datetime(out["delivery_start"], utc=True).astype("datetime64[us, UTC]")
        out["known_at"] = pd.to_datetime(out["known_at"], utc=True).astype("datetime64[us, UTC]")
        return out


LAGGED_EXOGENOUS: tuple[str, ...] = ("load_forecast_mw", "wind_forecast_mw", "solar_forecast_mw", "generation_forecast_mw")
EXOGENOUS_LAG_DAYS: tuple[int, ...] = (1, 7)


class ExogenousLagsAdder:
    """The day-ahead forecasts of the same wall-clock hour on days D-1 and D-7, as the paper's models see them.

    Output columns: ``{column}_lag_P{k}D`` for every column of :data:`LAGGED_EXOGENOUS` and k in
    :data:`EXOGENOUS_LAG_DAYS`, and ``known_at``. Rows are the delivery hours of every day D whose D-1 has
    forecasts (so also the day after the last one). The lags are on the local calendar, as the price lags:
    an hour that did not exist on the earlier day (the skipped spring hour) is missing, and on an autumn
    day the first of the two repeated hours is used. ``known_at`` is the latest ``issued_at`` of the days
    used, before D's own forecasts: a row never waits for anything day D publishes.
    """

    lag_days = EXOGENOUS_LAG_DAYS

    @property
    def feature_names(self) -> list[str]:
        return [f"{c}_lag_P{k}D" for k in self.lag_days for c in LAGGED_EXOGENOUS]

    def transform(self, fundamentals: pd.DataFrame, market: Market) -> pd.DataFrame:
        """``fundamentals``: one market's rows of the lake's fundamentals table (``issued_at`` and forecasts)."""
        if fundamentals.empty:
            return pd.DataFrame(columns=["market", "delivery_start", *self.feature_names, "known_at"])
        f = fundamentals.sort_values("delivery_start")
        starts = pd.to_datetime(f["delivery_start"], utc=True)
        day, hour = local_day_and_hour(starts, market.timezone)
        f = f.assign(day=day.to_numpy(), hour=hour.to_numpy(), issued_at=pd.to_datetime(f["issued_at"], utc=True))
        by_hour = f.drop_duplicates(["day", "hour"], keep="first").set_index(["day", "hour"])
        issued = f.groupby("day")["issued_at"].max()
        one_day = pd.Timedelta(days=1)
        out = delivery_hours(issued.index + one_day, market.timezone)
        stamps = {}
        for k in self.lag_days:
            for c in LAGGED_EXOGENOUS:
                out[f"{c}_lag_P{k}D"] = days_back(by_hour[c], out, k) if c in by_hour.columns else float("nan")
            stamps[k] = pd.to_datetime(issued.reindex(out["day"] - k * one_day).to_numpy(), utc=True)
        known = pd.DataFrame(stamps, index=out.index).max(axis=1)  # D-1 always has forecasts: never NaT
        out["known_at"] = pd.to_datetime(known, utc=True).astype("datetime64[us, UTC]")
        out.insert(0, "market", market.code)
        return out.drop(columns=["day", "hour"]).reset_index(drop=True)
