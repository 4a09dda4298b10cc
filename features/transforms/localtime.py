"""Local delivery days and hours of UTC delivery periods, for features defined on the local calendar.

A local day is represented by its naive local midnight (``datetime64``), which keeps day
arithmetic vectorised.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def local_day_and_hour(delivery_start: pd.Series, timezone: str) -> tuple[pd.Series, pd.Series]:
    """The local calendar day (naive midnight) and wall-clock hour of each delivery start."""
    local = delivery_start.dt.tz_convert(timezone).dt.tz_localize(None)
    return local.dt.normalize(), local.dt.hour


def days_back(values: pd.Series, rows: pd.DataFrame, days: int) -> np.ndarray:
    """``values`` (indexed by local day and hour, one value per hour: on an autumn day keep the first of the
    repeated hours) at the same wall-clock hour ``days`` days before each of ``rows`` (``day`` and ``hour``
    columns); NaN where that hour did not exist (the skipped spring hour)."""
    src = pd.MultiIndex.from_arrays([rows["day"] - pd.Timedelta(days=days), rows["hour"]])
    return values.reindex(src).to_numpy(dtype=float)


def delivery_hours(days: pd.Series | pd.DatetimeIndex, timezone: str) -> pd.DataFrame:
    """Every UTC delivery hour of the given local days (naive midnights): 23, 24 or 25 per day."""
    wanted = pd.DatetimeIndex(days).unique().sort_values()
    if wanted.empty:
        return pd.DataFrame({"delivery_start": pd.Series([], dtype="datetime64[us, UTC]"),
                             "day": pd.Series([], dtype="datetime64[ns]"), "hour": pd.Series([], dtype="int64")})
    first = wanted[0].tz_localize(timezone)
    last = (wanted[-1] + pd.Timedelta(days=1)).tz_localize(timezone)
    stamps = pd.Series(pd.date_range(first, last, freq="h", inclusive="left"))  # steps in UTC: DST-exact
    day, hour = local_day_and_hour(stamps, timezone)
    out = pd.DataFrame({"delivery_start": stamps.dt.tz_convert("UTC").astype("datetime64[us, UTC]"),
                        "day": day, "hour": hour})
    return out[out["day"].isin(wanted)].reset_index(drop=True)
