"""Local delivery days and hours of UTC delivery periods, for features defined on the local calendar."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd


def local_day_and_hour(delivery_start: pd.Series, timezone: str) -> tuple[pd.Series, pd.Series]:
    """The local calendar day and wall-clock hour of each delivery start."""
    local = delivery_start.dt.tz_convert(timezone)
    return local.dt.date, local.dt.hour


def delivery_hours(days: list[dt.date] | np.ndarray, timezone: str) -> pd.DataFrame:
    """Every UTC delivery hour of the given local days: 23, 24 or 25 per day, with day and hour."""
    frames = []
    for day in sorted(set(days)):
        start = pd.Timestamp(day).tz_localize(timezone)
        end = (pd.Timestamp(day) + pd.Timedelta(days=1)).tz_localize(timezone)
        stamps = pd.date_range(start, end, freq="h", inclusive="left").tz_convert("UTC")
        frames.append(pd.DataFrame({"delivery_start": stamps, "day": day}))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"delivery_start": [], "day": []})
    out["delivery_start"] = pd.to_datetime(out["delivery_start"], utc=True).astype("datetime64[us, UTC]")
    out["hour"] = out["delivery_start"].dt.tz_convert(timezone).dt.hour
    return out
