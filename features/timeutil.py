"""Conversion of source timestamps to UTC delivery periods, through daylight-saving changes.

Storage is UTC with microsecond precision. Sources come in three time conventions:

``utc``
    Timestamps are UTC (naive, or carrying an explicit offset, which is honoured).
``wallclock``
    True local time: spring days have 23 hours and autumn days 25, the repeated autumn hour
    appearing twice in order. The first occurrence is daylight time (fold 0), the second standard
    time. A timestamp inside the skipped spring hour does not exist and is rejected.
``padded24``
    Exactly 24 values per local day, labelled 00:00 … 23:00, as in the EPF benchmark and the
    ENTSO-E files here. On the spring day the label of the skipped hour (02:00) holds a filler
    (the mean or a copy of its neighbours): it is rejected as ``dst_nonexistent_hour`` and goes to
    quarantine, so no invented value is stored. On the autumn day the label of the repeated hour
    holds the average of the two real hours: that value is stored for both UTC hours, so the day
    has its 25 periods, and those rows are counted as ``dst_autumn_split`` in the summary.

Rows whose timestamps cannot be placed get a reason instead of a time; callers quarantine them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CONVENTIONS = ("utc", "wallclock", "padded24")
RESOLUTIONS = {"PT60M": pd.Timedelta(hours=1), "PT15M": pd.Timedelta(minutes=15)}

UTC_US = "datetime64[us, UTC]"


def to_utc(local: pd.Series, timezone: str, convention: str) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Place parsed source timestamps on the UTC time line.

    Args:
        local: parsed timestamps (naive local wall-clock, or tz-aware), NaT where unparseable.
        timezone: IANA zone of the source's local time.
        convention: one of ``CONVENTIONS``.

    Returns:
        ``(utc, reason, repeat)``: ``utc`` the UTC instant (NaT where rejected), ``reason`` a
        rejection reason or None per row, and ``repeat`` True for padded24 autumn rows whose
        value must also be stored one hour later.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"time convention {convention!r}; expected one of {CONVENTIONS}")
    n = len(local)
    reason = pd.Series([None] * n, index=local.index, dtype=object)
    repeat = pd.Series(np.zeros(n, dtype=bool), index=local.index)
    reason[local.isna()] = "unparseable_timestamp"

    if getattr(local.dt, "tz", None) is not None:
        return local.dt.tz_convert("UTC").astype(UTC_US), reason, repeat
    if convention == "utc":
        return local.dt.tz_localize("UTC").astype(UTC_US), reason, repeat

    # A wall-clock time is unplaceable when it is repeated (autumn) or skipped (spring).
    unplaceable = local.notna() & local.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT").isna()
    as_dst = local.dt.tz_localize(timezone, ambiguous=True, nonexistent="NaT")
    as_std = local.dt.tz_localize(timezone, ambiguous=False, nonexistent="NaT")
    ambiguous = unplaceable & as_dst.notna()
    reason[unplaceable & as_dst.isna()] = "dst_nonexistent_hour"

    if convention == "padded24":
        utc = as_dst
        repeat[ambiguous] = True
    else:  # wallclock: the first occurrence of a repeated hour is daylight time, the second standard.
        occurrence = local[ambiguous].groupby(local[ambiguous]).cumcount()
        first = pd.Series(False, index=local.index)
        first[occurrence.index] = occurrence.eq(0)
        utc = as_std.where(~(ambiguous & first), as_dst)
    return utc.dt.tz_convert("UTC").astype(UTC_US), reason, repeat


def gap_ranges(starts: pd.Series, resolution: str) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Missing delivery periods inside the covered span, as (first missing, last missing) pairs."""
    if starts.empty:
        return []
    s = starts.sort_values().drop_duplicates()
    step = RESOLUTIONS[resolution]
    diffs = s.diff()
    holes = diffs[diffs > step]
    return [(s.loc[i] - d + step, s.loc[i] - step) for i, d in holes.items()]
