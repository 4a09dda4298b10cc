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
