"""Ingestion: a source file (or the synthetic market) into the lake, validated, atomically, once.

One call is one batch for one market:

1. read the source (:mod:`features.sources`) and validate it (:mod:`features.validation`);
   a file that cannot be read or mapped raises before anything is written;
2. stamp every value with when it became known, from the source or the market's clock
   (:class:`features.markets.Market`): prices ``published_at``, forecasts ``issued_at``, actuals
   ``load_actual_known_at``;
3. commit, one snapshot per table: ``markets``, ``prices`` and ``fundamentals`` (merged: one row
   per market and delivery period, the newest value winning), ``quarantine`` (this file's records
   replace any earlier ones of the same file), then the ``ingest_batches`` record last.
   If any commit fails, the commits already made are undone, so the lake holds what it held
   before the batch, and :class:`IngestAbortedError` is raised.

Re-ingesting a file whose hash was already committed for the market is a no-op unless ``force``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.columns import ACTUAL_COLUMNS, FORECAST_COLUMNS, FUNDAMENTAL_COLUMNS, PRICE
from features.errors import IngestAbortedError
from features.lake import KEY, SCHEMAS, Commit, Lake, equals, new_batch_id, to_arrow, window_filter
from features.marketdata import MarketData
from features.markets import Market
from features.sources import ParsedSource, SourceMapping, read_entsoe, read_epf, read_source
from features.validation import Validated, raw_json, validate

log = logging.getLogger(__name__)

SourceKind = Literal["epf", "entsoe", "csv"]


@dataclass
class IngestReport:
    """What one batch did; printed by the CLI and kept in ``ingest_batches``."""

    batch_id: str
    market: str
    source: str
    source_file: str
    source_sha256: str
    rows_read: int = 0
    prices_accepted: int = 0
    fundamentals_accepted: int = 0
    quarantined: int = 0
    quarantine_by_reason: dict[str, int] = field(default_factory=dict)
    dst_autumn_split: int = 0
    gaps: int = 0
    gap_ranges: list[tuple[str, str]] = field(default_factory=list)
    snapshots: dict[str, int | None] = field(default_factory=dict)
    skipped: str | None = None

    def render(self) -> str:
        if self.skipped:
            return f"{self.market}: {self.source_file} skipped: {self.skipped}"
        lines = [
            f"{self.market}: batch {self.batch_id} from {self.source_file}",
            f"  rows read             {self.rows_read:>10,}",
            f"  prices accepted       {self.prices_accepted:>10,}",
            f"  fundamentals accepted {self.fundamentals_accepted:>10,}",
            f"  quarantined           {self.quarantined:>10,}",
        ]
        lines += [f"    {reason:<23} {n:>8,}" for reason, n in self.quarantine_by_reason.items()]
        if self.dst_autumn_split:
            lines.append(f"  DST autumn hours split {self.dst_autumn_split:>9,}")
        lines.append(f"  gaps (missing periods) {self.gaps:>9,}")
        lines.append(f"  snapshots             {json.dumps(self.snapshots)}")
        return "\n".join(lines)


def ingest_file(
    lake: Lake, kind: SourceKind, market: str, path: Path, *, mapping: SourceMapping | None = None, force: bool = False
) -> IngestReport:
    """Read, validate and commit one source file for ``market``."""
    data = MarketData(lake)
    m = data.registry().get(market)
    if kind == "epf":
        parsed = read_epf(path)
    elif kind == "entsoe":
        parsed = read_entsoe(path)
    else:
        if mapping is None:
            raise ValueError("a csv ingest needs a mapping")
        parsed = read_source(path, mapping)
    return ingest_parsed(lake, m, parsed, force=force, data=data)


def ingest_parsed(
    lake: Lake, market: Market, parsed: ParsedSource, *, force: bool = False, data: MarketData | None = None
) -> IngestReport:
    """Validate a parsed source for ``market`` and commit it as one batch."""
    data = data or MarketData(lake)
    report = IngestReport(new_batch_id(), market.code, parsed.mapping.source, parsed.path, parsed.sha256,
                          rows_read=len(parsed.frame))
    earlier = data.batches(market=market.code, source_sha256=parsed.sha256)
    if not force and not earlier.empty:
        report.skipped = (f"already ingested in batch {earlier['batch_id'].iloc[-1]} "
                          f"at {earlier['committed_at'].iloc[-1]}; pass --force to ingest it again")
        return report
    validated = validate(parsed, market.timezone, lake.settings.validation)
    _commit_batch(lake, data, market, parsed, validated, report)
    return report


def _known_times(market: Market, rows: pd.DataFrame, column: str, local_time: dt.time) -> pd.Series:
    derived = market.on_day_before(rows["delivery_start"], local_time)
    if column in rows.columns:
        return rows[column].astype("datetime64[us, UTC]").fillna(derived)
    return derived


def build_tables(market: Market, parsed: ParsedSource, v: Validated, batch_id: str, now: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """The rows of each table for one validated batch (pure; no I/O)."""
    rows = v.rows
    source = parsed.mapping.source
    out: dict[str, pd.DataFrame] = {}

    if PRICE in rows.columns:
        p = rows[rows[PRICE].notna()]
        out["prices"] = pd.DataFrame({
            "market": market.code, "delivery_start": p["delivery_start"], "delivery_end": p["delivery_end"],
            "price": p[PRICE], "currency": market.currency, "resolution": v.resolution, "source": source,
            "published_at": _known_times(market, p, "published_at", market.prices_published),
            "ingested_at": now, "batch_id": batch_id,
        })
    present = [c for c in FUNDAMENTAL_COLUMNS if c in rows.columns]
    f = rows[rows[present].notna().any(axis=1)] if present else rows.iloc[0:0]
    fund = pd.DataFrame({"market": market.code, "delivery_start": f["delivery_start"],
                         "delivery_end": f["delivery_end"], "resolution": v.resolution})
    for c in FUNDAMENTAL_COLUMNS:
        fund[c] = f[c] if c in f.columns else float("nan")
    if "wind_forecast_mw" not in present and "wind_onshore_forecast_mw" in present:
        # Total wind is the sum of the parts the source has; unknown when one of them is unknown.
        fund["wind_forecast_mw"] = fund["wind_onshore_forecast_mw"] + (
            fund["wind_offshore_forecast_mw"] if "wind_offshore_forecast_mw" in present else 0.0)
    fund["issued_at"] = _known_times(market, f, "issued_at", market.forecasts_issued)
    fund["load_actual_known_at"] = (fund["delivery_end"] + market.actuals_delay).where(fund["load_actual_mw"].notna())
    fund["source"] = source
    fund["ingested_at"] = now
    fund["batch_id"] = batch_id
    out["fundamentals"] = fund

    q = pd.DataFrame([
        {"batch_id": batch_id, "market": market.code, "source": source, "source_file": parsed.path,
         "source_sha256": parsed.sha256,
         "source_line": None if r.index is None else int(parsed.frame["source_line"].get(r.index, r.index + 2)),
         "target": r.target, "column": r.column, "reason": r.reason, "detail": r.detail,
         "delivery_start": r.delivery_start, "raw": raw_json(parsed, r.index), "quarantined_at": now}
        for r in v.rejections
    ], columns=SCHEMAS["quarantine"].column_names)
    q["source_line"] = q["source_line"].astype("Int64")
    out["quarantine"] = q
    return out


KNOWN_AT_GROUPS: dict[str, dict[str, tuple[str, ...]]] = {
    "prices": {"published_at": (PRICE,)},
    "fundamentals": {"issued_at": FORECAST_COLUMNS, "load_actual_known_at": ACTUAL_COLUMNS},
}


def _stamp_late_values(old: pd.DataFrame, new: pd.DataFrame, name: str) -> pd.DataFrame:
    """Stamp revised and late-arriving values with the time Aurum learned them.

    A value that replaces a different stored value, or fills one that was missing, was not public
    at the clock-derived time of its period: it became known when it arrived. Its known-at column
    becomes ``max(known-at, ingested_at)``, so a training set as of an earlier time cannot see it.
    """
    stored = new[list(KEY)].merge(old, on=list(KEY), how="left")
    out = new.copy()
    for known_at, columns in KNOWN_AT_GROUPS[name].items():
        late = pd.Series(False, index=new.index)
        for c in columns:
            late |= new[c].notna().to_numpy() & ~(stored[c].to_numpy() == new[c].to_numpy())
        late &= stored["ingested_at"].notna().to_numpy()  # the period was stored before
        if late.any():
            out.loc[late, known_at] = out.loc[late, [known_at, "ingested_at"]].max(axis=1)
    return out


def _merge_transform(
    name: str, new: pa.Table, order_by: tuple[str, ...], *, explicit_known_at: bool
) -> Callable[[pa.Table | None], pa.Table]:
    """Keep one row per key; per column the newest non-null value wins (ordered by ``order_by``).

    Unless the source states its own publication times, revised or late values are first stamped
    by :func:`_stamp_late_values`.
    """

    def transform(old: pa.Table | None) -> pa.Table:
        if old is None or old.num_rows == 0:
            return new
        old_df, new_df = old.to_pandas(), new.to_pandas()
        if not explicit_known_at:
            new_df = _stamp_late_values(old_df, new_df, name)
        both = pd.concat([old_df, new_df], ignore_index=True).sort_values([*KEY, *order_by], kind="stable")
        merged = both.groupby(list(KEY), sort=True, as_index=False).last()
        return to_arrow(name, merged)

    return transform


def _replace_file_transform(new: pa.Table, market: str, sha256: str) -> Callable[[pa.Table | None], pa.Table | None]:
    """This file's quarantine records replace its earlier ones; no snapshot when nothing changes."""

    def transform(old: pa.Table | None) -> pa.Table | None:
        earlier = None if old is None else (pc.field("market") == market) & (pc.field("source_sha256") == sha256)
        if old is None or old.filter(earlier).num_rows == 0:
            return new if new.num_rows else None
        return pa.concat_tables([old.filter(~earlier), new])

    return transform


def _commit_batch(
    lake: Lake, data: MarketData, market: Market, parsed: ParsedSource, v: Validated, report: IngestReport
) -> None:
    started = pd.Timestamp.now(tz="UTC")
    tables = build_tables(market, parsed, v, report.batch_id, started)
    # Kept short: every snapshot summary is copied into the table metadata (the file is in ingest_batches).
    props = {"aurum.batch_id": report.batch_id, "aurum.market": market.code, "aurum.source_sha256": parsed.sha256}
    commits: list[Commit] = []
    try:
        commits.append(data.register_market(market, properties=props))
        for name, order in (("prices", ("published_at", "ingested_at")), ("fundamentals", ("issued_at", "ingested_at"))):
            explicit = next(iter(KNOWN_AT_GROUPS[name])) in parsed.mapping.columns.values()
            frame = tables.get(name)
            if frame is None or frame.empty:  # a file may carry no prices, or only prices
                continue
            arrow = to_arrow(name, frame.sort_values("delivery_start"))
            start, end = frame["delivery_start"].min(), frame["delivery_start"].max() + pd.Timedelta(microseconds=1)
            commits.append(lake.rewrite(name, window_filter(market.code, start, end),
                                        _merge_transform(name, arrow, order, explicit_known_at=explicit),
                                        properties=props))
        quarantine = to_arrow("quarantine", tables["quarantine"])
        commits.append(lake.rewrite("quarantine", equals(market=market.code, source_sha256=parsed.sha256),
                                    _replace_file_transform(quarantine, market.code, parsed.sha256), properties=props))
        report.prices_accepted = len(tables.get("prices", ()))
        report.fundamentals_accepted = len(tables["fundamentals"])
        report.quarantined = len(tables["quarantine"])
        report.quarantine_by_reason = v.by_reason()
        report.dst_autumn_split = v.dst_autumn_split
        report.gaps = v.gap_count
        report.gap_ranges = [(a.isoformat(), b.isoformat()) for a, b in v.gaps]
        report.snapshots = {c.table: c.snapshot_id for c in commits if c.snapshot_id is not None}
        batch = pd.DataFrame([{
            **{k: val for k, val in asdict(report).items() if k not in ("skipped",)},
            "quarantine_by_reason": json.dumps(report.quarantine_by_reason),
            "gap_ranges": json.dumps(report.gap_ranges),
            "snapshots": json.dumps(report.snapshots),
            "started_at": started, "committed_at": pd.Timestamp.now(tz="UTC"),
        }])
        commits.append(lake.append_compacted("ingest_batches", to_arrow("ingest_batches", batch), properties=props))
    except Exception as exc:
        for c in reversed(commits):
            lake.undo(c)
        raise IngestAbortedError(
            f"ingest of {parsed.path!r} for {market.code} failed ({type(exc).__name__}: {exc}); "
            f"{len(commits)} table commit(s) were undone, the lake is unchanged"
        ) from exc


def synthetic_source(frame: pd.DataFrame, code: str, params: dict) -> ParsedSource:
    """Wrap a generated synthetic market frame as a parsed source (UTC timestamps)."""
    ident = json.dumps({"market": code, **params}, sort_keys=True, default=str)
    values = [c for c in frame.columns if c != "delivery_start"]
    mapping = SourceMapping(source="synthetic", timestamp="delivery_start", convention="utc",
                            columns={c: c for c in values})
    parsed_frame = frame.rename(columns={"delivery_start": "timestamp"}).reset_index(drop=True)
    parsed_frame.insert(0, "source_line", range(2, len(parsed_frame) + 2))
    raw = pd.DataFrame(index=parsed_frame.index)  # generated rows have no text form; quarantine shows {}
    return ParsedSource(path=f"synthetic:{ident}", sha256=hashlib.sha256(ident.encode()).hexdigest(),
                        mapping=mapping, frame=parsed_frame, raw=raw)


def ingest_synthetic(
    lake: Lake,
    markets: list[str],
    start: dt.date,
    end: dt.date,
    *,
    seed: int = 0,
    shift: object | None = None,
    force: bool = False,
) -> list[IngestReport]:
    """Generate the synthetic market for ``markets`` over local days ``[start, end)`` and ingest it."""
    from features.synthetic import generate_market

    data = MarketData(lake)
    registry = data.registry()
    reports = []
    for code in markets:
        market = registry.get(code)
        frame = generate_market(code, start, end, seed=seed, shift=shift)
        params = {"start": start, "end": end, "seed": seed, "shift": shift.model_dump() if shift else None}
        reports.append(ingest_parsed(lake, market, synthetic_source(frame, code, params), force=force, data=data))
    return reports
