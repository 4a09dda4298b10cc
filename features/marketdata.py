"""The library API for reading the market-data lake: one market over a time window, and stats.

Reads push the market and the delivery window into the Iceberg scan (partition pruning on market
and year, then file statistics on ``delivery_start``), so their cost follows the window, not the
table. Windows are half-open ``[start, end)`` in UTC; naive inputs are taken as UTC.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.errors import InvalidWindowError
from features.lake import Commit, Lake, equals, to_arrow, window_filter
from features.markets import BUILTIN_MARKETS, Market, MarketRegistry
from features.timeutil import RESOLUTIONS


def utc_bound(ts: object) -> pd.Timestamp | None:
    """A window bound as a UTC timestamp (naive values are UTC); None stays None."""
    if ts is None:
        return None
    try:
        t = pd.Timestamp(ts)
    except ValueError:
        raise InvalidWindowError(f"window bound {ts!r} is not a time; expected ISO 8601 such as 2024-06-01T00:00") from None
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


@dataclass
class TableStats:
    """Size, coverage and freshness of one table for one market."""

    table: str
    market: str
    rows: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    gaps: int
    last_ingest: pd.Timestamp | None
    snapshot_id: int | None


class MarketData:
    """Reads of the lake's market tables, and the market registry kept in it."""

    def __init__(self, lake: Lake):
        self.lake = lake
        self._registry: MarketRegistry | None = None
        self._stored: dict[str, Market] = {}  # the rows of the markets table

    # ------------------------------------------------------------ registry

    def registry(self) -> MarketRegistry:
        """Built-in markets plus those registered in the ``markets`` table (the table wins)."""
        if self._registry is not None:
            return self._registry
        reg = MarketRegistry(BUILTIN_MARKETS)
        self._stored = {}
        for row in self.lake.scan("markets").to_pylist():
            self._stored[row["code"]] = Market(
                code=row["code"], name=row["name"], timezone=row["timezone"], country=row["country"],
                currency=row["currency"], gate_closure=dt.time.fromisoformat(row["gate_closure"]),
                prices_published=dt.time.fromisoformat(row["prices_published"]),
                forecasts_issued=dt.time.fromisoformat(row["forecasts_issued"]),
                actuals_delay=dt.timedelta(seconds=row["actuals_delay_s"]), provenance=row["provenance"],
            )
            reg.add(self._stored[row["code"]])
        self._registry = reg
        return reg

    def register_market(self, market: Market, *, properties: dict[str, str] | None = None) -> Commit:
        """Write (or replace) a market's row in the ``markets`` table; no snapshot when it is unchanged."""
        self.registry()
        if self._stored.get(market.code) == market:
            return Commit(table="markets", snapshot_id=None)
        row = to_arrow("markets", pd.DataFrame([{
            "code": market.code, "name": market.name, "timezone": market.timezone, "country": market.country,
            "currency": market.currency, "gate_closure": market.gate_closure.strftime("%H:%M"),
            "prices_published": market.prices_published.strftime("%H:%M"),
            "forecasts_issued": market.forecasts_issued.strftime("%H:%M"),
            "actuals_delay_s": int(market.actuals_delay.total_seconds()), "provenance": market.provenance,
            "updated_at": pd.Timestamp.now(tz="UTC"),
        }]))

        def replace(old: pa.Table | None) -> pa.Table | None:
            if old is None:
                return row
            current = old.filter(pc.field("code") == market.code).drop_columns("updated_at")
            if current.num_rows == 1 and current.to_pylist() == row.drop_columns("updated_at").to_pylist():
                return None  # unchanged: no snapshot
            return pa.concat_tables([old.filter(pc.field("code") != market.code), row])

        self._registry = None
        return self.lake.rewrite("markets", equals(code=market.code), replace, properties=properties)

    # ------------------------------------------------------------ reads

    def prices(self, market: str, start: object = None, end: object = None, *, snapshot_id: int | None = None) -> pd.DataFrame:
        """Price rows of one market with ``start <= delivery_start < end``, sorted by delivery start."""
        return self._read("prices", market, start, end, snapshot_id)

    def fundamentals(self, market: str, start: object = None, end: object = None, *, snapshot_id: int | None = None) -> pd.DataFrame:
        """Fundamentals rows of one market in the window, sorted by delivery start."""
        return self._read("fundamentals", market, start, end, snapshot_id)

    def window(self, market: str, start: object = None, end: object = None) -> pd.DataFrame:
        """Prices and fundamentals of one market side by side, one row per delivery period."""
        p = self.prices(market, start, end)[["delivery_start", "delivery_end", "price", "published_at"]]
        f = self.fundamentals(market, start, end).drop(
            columns=["market", "resolution", "source", "ingested_at", "batch_id", "delivery_end"])
        return p.merge(f, on="delivery_start", how="outer").sort_values("delivery_start").reset_index(drop=True)

    def _read(self, table: str, market: str, start: object, end: object, snapshot_id: int | None) -> pd.DataFrame:
        lo, hi = utc_bound(start), utc_bound(end)
        if lo is not None and hi is not None and hi < lo:
            raise InvalidWindowError(f"window ends ({hi.isoformat()}) before it starts ({lo.isoformat()})")
        rows = self.lake.scan(table, window_filter(market, lo, hi), snapshot_id=snapshot_id)
        if rows.num_rows == 0:
            self.registry().get(market)  # an unknown market is an error, not an empty frame
        return rows.sort_by("delivery_start").to_pandas()

    def quarantine(self, market: str | None = None, batch_id: str | None = None) -> pd.DataFrame:
        """Quarantined records, optionally of one market and one batch."""
        table = self.lake.scan("quarantine", equals(market=market)) if market else self.lake.scan("quarantine")
        rows = table.to_pandas()
        if batch_id:
            rows = rows[rows["batch_id"] == batch_id]
        return rows.sort_values(["quarantined_at", "source_line"]).reset_index(drop=True)

    def batches(self, market: str | None = None, source_sha256: str | None = None) -> pd.DataFrame:
        """Committed ingest batches, oldest first."""
        wanted = {k: v for k, v in (("market", market), ("source_sha256", source_sha256)) if v}
        rows = (self.lake.scan("ingest_batches", equals(**wanted)) if wanted else self.lake.scan("ingest_batches")).to_pandas()
        return rows.sort_values("committed_at").reset_index(drop=True)

    # ------------------------------------------------------------ stats

    def stats(self) -> list[TableStats]:
        """Rows, covered range, gaps, last ingest and current snapshot per table and market."""
        batches = self.batches()
        last_ingest = batches.groupby("market")["committed_at"].max().to_dict() if not batches.empty else {}
        out: list[TableStats] = []
        for table in ("prices", "fundamentals"):
            snap = self.lake.snapshot_id(table)
            t = self.lake.scan(table, columns=("market", "delivery_start", "resolution")).to_pandas()
            for market, g in t.groupby("market", sort=True):
                starts = g["delivery_start"].sort_values()
                step = RESOLUTIONS[g["resolution"].mode().iat[0]]
                expected = int((starts.iat[-1] - starts.iat[0]) / step) + 1
                out.append(TableStats(table, market, len(g), starts.iat[0], starts.iat[-1],
                                      expected - starts.nunique(), last_ingest.get(market), snap))
        for table in ("quarantine", "ingest_batches", "markets"):
            rows = self.lake.scan(table).num_rows
            out.append(TableStats(table, "*", rows, None, None, 0,
                                  batches["committed_at"].max() if not batches.empty else None,
                                  self.lake.snapshot_id(table)))
        return out


def stats_table(stats: list[TableStats]) -> str:
    """Stats as an aligned text table."""
    head = f"{'table':<15} {'market':<10} {'rows':>10} {'first (UTC)':<17} {'last (UTC)':<17} {'gaps':>6} {'last ingest (UTC)':<17} snapshot"
    lines = [head, "-" * len(head)]
    fmt = lambda t: t.strftime("%Y-%m-%d %H:%M") if t is not None and not pd.isna(t) else "-"  # noqa: E731
    for s in stats:
        lines.append(f"{s.table:<15} {s.market:<10} {s.rows:>10,} {fmt(s.first):<17} {fmt(s.last):<17} "
                     f"{s.gaps:>6,} {fmt(s.last_ingest):<17} {s.snapshot_id or '-'}")
    return "\n".join(lines)


def stats_json(stats: list[TableStats]) -> str:
    return json.dumps([{k: (str(v) if isinstance(v, pd.Timestamp) else v) for k, v in s.__dict__.items()} for s in stats],
                      indent=2)
