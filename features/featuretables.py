"""Derived feature tables in Iceberg (namespace ``features``), the sources the feature store reads.

``compute_features`` runs the transforms of :mod:`features.transforms` over one market's lake data
and writes one table per feature group, keyed by (market, delivery_start), with ``known_at`` (the
event timestamp: when every input of the row was public) and ``computed_at``.

The tables are append-only and versioned: a re-run appends a row only where the computed values
differ from the latest stored version of that period (or the period is new). A revised input in
the lake (stamped with its arrival time there) therefore adds a newer version with a later
``known_at`` and leaves the earlier one in place, so an as-of read at an earlier issue time still
returns what was known then. Re-running with unchanged data writes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from features.lake import Lake, feature_table_layout, to_arrow, window_filter
from features.marketdata import MarketData, utc_bound
from features.markets import Market
from features.transforms import CalendarAdder, ExogenousAdder, ExogenousLagsAdder, PriceLagsAdder

FEATURE_NAMESPACE = "features"
KEY = ["market", "delivery_start"]


@dataclass(frozen=True)
class FeatureGroup:
    """One derived table: its transform and where its inputs come from."""

    table: str
    source: str  # lake table (prices, fundamentals), or calendar: the delivery hours of the other groups
    lookback: dt.timedelta  # history the transform needs before the first row it produces

    def adder(self):
        return ADDERS[self.table]()

    @property
    def ident(self) -> str:
        return f"{FEATURE_NAMESPACE}.{self.table}"

    def layout(self):
        adder = self.adder()
        kinds = getattr(adder, "feature_kinds", None) or {name: "double" for name in adder.feature_names}
        return feature_table_layout(kinds)


ADDERS = {"price_features": PriceLagsAdder, "exogenous_features": ExogenousAdder,
          "exogenous_lag_features": ExogenousLagsAdder, "calendar_features": CalendarAdder}
GROUPS: tuple[FeatureGroup, ...] = (
    FeatureGroup("price_features", "prices", dt.timedelta(days=PriceLagsAdder.rolling_days + 2)),
    FeatureGroup("exogenous_features", "fundamentals", dt.timedelta(0)),
    FeatureGroup("exogenous_lag_features", "fundamentals", dt.timedelta(days=max(ExogenousLagsAdder.lag_days) + 1)),
    FeatureGroup("calendar_features", "calendar", dt.timedelta(0)),  # last: covers the hours of the others
)


@dataclass
class FeatureRun:
    """What one computation wrote per table."""

    market: str
    rows_computed: dict[str, int]
    versions_written: dict[str, int]
    snapshots: dict[str, int | None]

    def render(self) -> str:
        return "\n".join(
            f"{self.market}: {t:<20} computed {self.rows_computed[t]:>8,}  new versions {self.versions_written[t]:>8,}"
            for t in self.rows_computed
        )


def compute_features(
    lake: Lake, market: Market, start: object = None, end: object = None, *, now: pd.Timestamp | None = None
) -> FeatureRun:
    """Compute every feature group of ``market`` for delivery starts in ``[start, end)`` and store new versions.

    Without bounds the whole history of the market is computed (plus the next delivery day, whose
    price features are already known).
    """
    now = now or pd.Timestamp.now(tz="UTC")
    data = MarketData(lake)
    run = FeatureRun(market.code, {}, {}, {})
    hours: list[pd.Series] = []
    lo, hi = utc_bound(start), utc_bound(end)
    for group in GROUPS:
        read_from = None if lo is None else lo - group.lookback - dt.timedelta(days=1)
        read_to = None if hi is None else hi + dt.timedelta(days=1)
        if group.source == "calendar":
            rows = group.adder().rows(pd.concat(hours) if hours else pd.Series([], dtype="datetime64[us, UTC]"), market)
        else:
            read = data.prices if group.source == "prices" else data.fundamentals
            rows = group.adder().transform(read(market.code, read_from, read_to), market)
        if lo is not None:
            rows = rows[rows["delivery_start"] >= lo]
        if hi is not None:
            rows = rows[rows["delivery_start"] < hi + pd.Timedelta(days=1)]  # the next day is known already
        rows = rows.assign(computed_at=now)
        hours.append(rows["delivery_start"])
        schema, spec, order = group.layout()
        lake.ensure_table(group.ident, schema, spec, order)
        run.rows_computed[group.table] = len(rows)
        if rows.empty:
            run.versions_written[group.table] = 0
            continue
        new = to_arrow(schema, rows)
        written = {"n": 0}

        def append_changed(old: pa.Table | None, new=new, written=written, schema=schema) -> pa.Table | None:
            changed = _changed_versions(old, new, [f.name for f in schema.fields[2:-2]])
            written["n"] = changed.num_rows
            if changed.num_rows == 0:
                return None
            return changed if old is None else pa.concat_tables([old, changed])

        scope = window_filter(market.code, rows["delivery_start"].min(),
                              rows["delivery_start"].max() + pd.Timedelta(microseconds=1))
        commit = lake.rewrite(group.ident, scope, append_changed,
                              properties={"aurum.market": market.code, "aurum.computed_at": now.isoformat()})
        run.versions_written[group.table] = written["n"]
        run.snapshots[group.table] = commit.snapshot_id
    return run


def _changed_versions(old: pa.Table | None, new: pa.Table, features: list[str]) -> pa.Table:
    """Rows of ``new`` whose feature values differ from the latest stored version of their period."""
    if old is None or old.num_rows == 0:
        return new
    latest = (old.to_pandas().sort_values([*KEY, "known_at", "computed_at"])
              .drop_duplicates(KEY, keep="last"))
    n = new.to_pandas()
    both = n.merge(latest, on=KEY, how="left", suffixes=("", "_stored"), indicator=True)
    differs = both["_merge"].eq("left_only").to_numpy()
    for f in features:
        a, b = both[f].to_numpy(dtype=float), both[f"{f}_stored"].to_numpy(dtype=float)
        differs |= ~((a == b) | (np.isnan(a) & np.isnan(b)))
    return pa.Table.from_pandas(n[differs], schema=new.schema, preserve_index=False)


def features_as_of(lake: Lake, table: str, market: str, issued_at: object, start: object, end: object) -> pd.DataFrame:
    """The latest version of each period's features known at ``issued_at`` (an as-of read, for checks)."""
    t = utc_bound(issued_at)
    rows = lake.scan(f"{FEATURE_NAMESPACE}.{table}", window_filter(market, utc_bound(start), utc_bound(end))).to_pandas()
    rows = rows[rows["known_at"] <= t]
    return (rows.sort_values([*KEY, "known_at", "computed_at"]).drop_duplicates(KEY, keep="last")
            .reset_index(drop=True))
