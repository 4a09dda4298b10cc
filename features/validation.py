"""Validation of a parsed source before anything is committed.

Checks, in order, each rejecting into quarantine with a reason (nothing is dropped silently):

``empty_row``               a row with no timestamp and no values
``unparseable_timestamp``   a timestamp that does not parse
``dst_nonexistent_hour``    a local time inside the skipped spring hour (see features.timeutil)
``misaligned_timestamp``    a delivery start that is not on the resolution's grid
``duplicate_timestamp``     a repeated delivery period whose values equal the first one (first kept)
``duplicate_conflict``      a delivery period repeated with different values (all copies rejected)
``unparseable_value``       a cell that is not a number (from the reader)
``zero_as_missing``         an exact 0 in a column where zero means "no data"
``out_of_bounds``           a value outside the configured plausible range of its column
``missing_value``           a row without a price, for the prices table

Rejected cells leave the rest of their row: a row with a bad wind value still gives its price.
Gaps (delivery periods missing inside the covered span) cannot be quarantined; they are counted
and listed in the summary and the batch record.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.columns import FUNDAMENTAL_COLUMNS, KNOWN_AT_COLUMNS, PRICE, VALUE_COLUMNS
from features.settings import ValidationSettings
from features.sources import ParsedSource
from features.timeutil import RESOLUTIONS, gap_ranges, to_utc


@dataclass
class Rejection:
    """One quarantine record before it gets batch and file metadata."""

    index: int | None  # row of ParsedSource.frame / raw, None when the row was derived
    target: str  # prices, fundamentals or row
    column: str | None
    reason: str
    detail: str
    delivery_start: pd.Timestamp | None = None


@dataclass
class Validated:
    """The accepted rows, one per delivery period, and everything rejected."""

    rows: pd.DataFrame  # delivery_start (UTC), delivery_end, value columns, optional known-at columns
    rejections: list[Rejection] = field(default_factory=list)
    dst_autumn_split: int = 0
    gaps: list[tuple[pd.Timestamp, pd.Timestamp]] = field(default_factory=list)
    resolution: str = "PT60M"

    @property
    def gap_count(self) -> int:
        """Number of missing delivery periods."""
        step = RESOLUTIONS[self.resolution]
        return int(sum((b - a) / step + 1 for a, b in self.gaps))

    def by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(r.reason for r in self.rejections).items()))


def validate(parsed: ParsedSource, timezone: str, rules: ValidationSettings) -> Validated:
    """Place every row on the UTC time line and apply the checks of the module docstring."""
    m = parsed.mapping
    frame = parsed.frame
    values = [c for c in VALUE_COLUMNS if c in frame.columns]
    known = [c for c in KNOWN_AT_COLUMNS if c in frame.columns]
    rejections: list[Rejection] = [
        Rejection(None if p.line is None else p.line - 2, "row" if p.column is None else _target(p.column),
                  p.column, p.reason, p.detail)
        for p in parsed.problems
    ]

    empty = frame["timestamp"].isna() & frame[values].isna().all(axis=1) & _raw_blank(parsed)
    for i in np.flatnonzero(empty.to_numpy()):
        rejections.append(Rejection(int(frame.index[i]), "row", None, "empty_row", "the row has no timestamp and no values"))
    frame = frame[~empty.to_numpy()]

    utc, reason, repeat = to_utc(frame["timestamp"], m.timezone or timezone, m.convention)
    for idx, why in reason.dropna().items():
        raw_ts = parsed.raw.at[idx, m.timestamp] if m.timestamp in parsed.raw.columns else str(frame.at[idx, "timestamp"])
        detail = {
            "unparseable_timestamp": f"timestamp {raw_ts!r} does not match {m.timestamp_format or 'ISO 8601'}",
            "dst_nonexistent_hour": f"local time {raw_ts!r} does not exist in {m.timezone or timezone} "
            f"(clocks skip it); the source's filler value is not stored",
        }[why]
        rejections.append(Rejection(int(idx), "row", None, why, detail))
    placed = reason.isna().to_numpy()
    rows = frame.loc[placed, values + known].copy()
    rows.insert(0, "delivery_start", utc[placed])
    rows["_index"] = frame.index[placed]

    step = RESOLUTIONS[m.resolution]
    split = repeat[placed].to_numpy()
    if split.any():
        extra = rows[split].copy()
        extra["delivery_start"] = extra["delivery_start"] + step
        rows = pd.concat([rows, extra])

    off_grid = (rows["delivery_start"] - rows["delivery_start"].dt.floor(step)) != pd.Timedelta(0)
    for idx, ts in rows.loc[off_grid, ["_index", "delivery_start"]].itertuples(index=False):
        rejections.append(Rejection(int(idx), "row", None, "misaligned_timestamp",
                                    f"delivery start {ts.isoformat()} is not on the {m.resolution} grid", ts))
    rows = rows[~off_grid]

    rows, dup_rejections = _resolve_duplicates(rows, values)
    rejections += dup_rejections

    for col in values:
        bad_zero = rows[col].eq(0) if col in rules.zero_is_missing else pd.Series(False, index=rows.index)
        lo, hi = rules.bounds.get(col, (None, None))
        out = pd.Series(False, index=rows.index)
        if lo is not None:
            out |= rows[col] < lo
        if hi is not None:
            out |= rows[col] > hi
        out &= ~bad_zero
        for mask, why in ((bad_zero, "zero_as_missing"), (out, "out_of_bounds")):
            if not mask.any():
                continue
            for idx, ts, v in rows.loc[mask, ["_index", "delivery_start", col]].itertuples(index=False):
                detail = (f"{col}=0 stands for missing data" if why == "zero_as_missing"
                          else f"{col}={v!r} is outside the plausible range [{lo}, {hi}]")
                rejections.append(Rejection(int(idx), _target(col), col, why, detail, ts))
            rows.loc[mask, col] = np.nan

    if PRICE in rows.columns:
        no_price = rows[PRICE].isna()
        bad_price = {(r.index, r.column) for r in rejections if r.column == PRICE}
        for idx, ts in rows.loc[no_price, ["_index", "delivery_start"]].itertuples(index=False):
            if (int(idx), PRICE) not in bad_price:
                rejections.append(Rejection(int(idx), "prices", PRICE, "missing_value", "the row has no price", ts))

    rows = rows.sort_values("delivery_start").drop(columns="_index").reset_index(drop=True)
    rows.insert(1, "delivery_end", rows["delivery_start"] + step)
    has_value = rows[values].notna().any(axis=1)
    gaps = gap_ranges(rows.loc[has_value, "delivery_start"], m.resolution)
    return Validated(rows=rows, rejections=rejections, dst_autumn_split=int(split.sum()), gaps=gaps,
                     resolution=m.resolution)


def _target(column: str) -> str:
    return "prices" if column in (PRICE, "published_at") else "fundamentals" if column in FUNDAMENTAL_COLUMNS + ("issued_at",) else "row"


def _raw_blank(parsed: ParsedSource) -> pd.Series:
    if parsed.raw.shape[1] == 0:  # generated sources have no text form
        return pd.Series(False, index=parsed.frame.index)
    return parsed.raw.apply(lambda s: s.str.strip().eq("")).all(axis=1).reindex(parsed.frame.index)


def _resolve_duplicates(rows: pd.DataFrame, values: list[str]) -> tuple[pd.DataFrame, list[Rejection]]:
    dup = rows["delivery_start"].duplicated(keep=False)
    if not dup.any():
        return rows, []
    rejections: list[Rejection] = []
    rows = rows.reset_index(drop=True)
    keep = pd.Series(True, index=rows.index)
    for ts, group in rows[rows["delivery_start"].duplicated(keep=False)].groupby("delivery_start"):
        identical = len(group[values].drop_duplicates()) == 1
        lines = ", ".join(str(int(i) + 2) for i in group["_index"])
        if identical:
            for pos, idx in list(zip(group.index, group["_index"]))[1:]:
                keep[pos] = False
                rejections.append(Rejection(int(idx), "row", None, "duplicate_timestamp",
                                            f"delivery start {ts.isoformat()} repeats with equal values "
                                            f"(lines {lines}); the first is kept", ts))
        else:
            for pos, idx in zip(group.index, group["_index"]):
                keep[pos] = False
                rejections.append(Rejection(int(idx), "row", None, "duplicate_conflict",
                                            f"delivery start {ts.isoformat()} repeats with different values "
                                            f"(lines {lines}); none is kept", ts))
    return rows[keep.to_numpy()], rejections


def raw_json(parsed: ParsedSource, index: int | None) -> str:
    """The source row as JSON (values as read), for a quarantine record."""
    if index is None or index not in parsed.raw.index:
        return "{}"
    return json.dumps(parsed.raw.loc[index].to_dict(), ensure_ascii=False)
