"""Calendar features of a delivery hour, on the market's local calendar.

Known in advance for any date, so the same function runs offline (training sets) and at request
time (serving) and gives the same values. Public holidays come from the ``holidays`` library for
the market's country.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from features.markets import Market

CALENDAR_FEATURES: tuple[str, ...] = (
    "hour", "weekday", "month", "is_weekend", "is_holiday",
    "hour_sin", "hour_cos", "day_of_year_sin", "day_of_year_cos",
)


@functools.lru_cache(maxsize=64)
def _holidays(country: str, year: int) -> frozenset:
    import holidays

    return frozenset(holidays.country_holidays(country, years=year).keys())


FEATURE_KINDS: dict[str, str] = {
    "hour": "long", "weekday": "long", "month": "long", "is_weekend": "boolean", "is_holiday": "boolean",
    "hour_sin": "double", "hour_cos": "double", "day_of_year_sin": "double", "day_of_year_cos": "double",
}


class CalendarAdder:
    """Hour, weekday, month, cyclic hour and day-of-year, weekend and public holiday."""

    feature_names = list(CALENDAR_FEATURES)
    feature_kinds = FEATURE_KINDS

    def rows(self, delivery_start: pd.Series, market: Market) -> pd.DataFrame:
        """Feature rows keyed by market and delivery start, ``known_at`` the start of local day D-1.

        The calendar is known long in advance; D-1 00:00 keeps the row inside the feature store's
        freshness window at the issue time, like every other feature of day D.
        """
        ds = pd.Series(pd.to_datetime(delivery_start, utc=True).drop_duplicates().sort_values().to_numpy())
        ds = pd.to_datetime(ds, utc=True).astype("datetime64[us, UTC]")
        local_day = ds.dt.tz_convert(market.timezone).dt.tz_localize(None).dt.normalize()
        known = (local_day - pd.Timedelta(days=1)).dt.tz_localize(market.timezone, ambiguous=True, nonexistent="shift_forward")
        out = self.transform(ds, market)
        out.insert(0, "delivery_start", ds)
        out.insert(0, "market", market.code)
        out["known_at"] = known.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
        return out

    def transform(self, delivery_start: pd.Series, market: Market) -> pd.DataFrame:
        local = pd.to_datetime(delivery_start, utc=True).dt.tz_convert(market.timezone)
        hour = local.dt.hour.to_numpy()
        doy = local.dt.dayofyear.to_numpy()
        days_in_year = np.where(local.dt.is_leap_year.to_numpy(), 366, 365)
        dates = local.dt.date
        holiday = np.fromiter(
            (d in _holidays(market.country, d.year) for d in dates), dtype=bool, count=len(dates)
        )
        weekday = local.dt.weekday.to_numpy()
        return pd.DataFrame({
            "hour": hour.astype(np.int64),
            "weekday": weekday.astype(np.int64),
            "month": local.dt.month.to_numpy().astype(np.int64),
            "is_weekend": weekday >= 5,
            "is_holiday": holiday,
            "hour_sin": np.sin(2 * np.pi * hour / 24),
            "hour_cos": np.cos(2 * np.pi * hour / 24),
            "day_of_year_sin": np.sin(2 * np.pi * (doy - 1) / days_in_year),
            "day_of_year_cos": np.cos(2 * np.pi * (doy - 1) / days_in_year),
        }, index=delivery_start.index)
