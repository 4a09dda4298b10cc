"""The forecast archive: every forecast the platform serves or batch-scores, in the Iceberg table
``serving.forecasts`` (the inference log that monitoring reads).

The contract is the table schema (``features.lake.forecast_table_layout``); :data:`FORECAST_COLUMNS`
lists its columns in order, and :func:`to_forecast_table` checks a frame against it before anything is
queued or written, naming the first bad or missing column. :func:`forecast_frame` builds conforming
rows from a model's quantile output.

Three ways in:

- :class:`ForecastArchive`, for the request path. ``append`` checks the column names, queues the frame
  and returns (about 50 µs); a background thread converts and checks everything queued in one go
  (about 15 µs a row, off the request path) and commits it as one Iceberg append once the oldest
  queued row has waited ``flush_interval / 2`` (or the queue reaches a quarter of ``max_rows``), which
  leaves the other half of the interval for the conversion and the commit (70-150 ms on the local
  catalog for up to 24,000 rows). So a row is in the table within ``flush_interval`` of its append,
  and a crash loses at most the rows of the last ``flush_interval``. Iceberg commits are atomic (a
  catalog pointer swap), so a writer killed mid-commit leaves at worst unreferenced data files, never
  a broken table.
- :func:`write_forecasts`: one synchronous append.
- :func:`write_days`: whole delivery days of one batch job, skipping days the same model version
  already has in the archive, decided inside the commit (so it stays idempotent even when two runs
  race: the loser's commit conflicts, is redone on the fresh table and skips what the winner wrote).

Several processes (service workers, batch jobs) may write at once: a commit that conflicts is redone
on the fresh table state with jittered backoff (``Lake.rewrite``; ``AURUM_COMMIT_RETRIES``). Every
flush leaves at least one small file per (market, month, source) partition it touches; :func:`compact`
rewrites a partition's files into one (batch jobs compact what they touched; a service deployment
runs it periodically).
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import re
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote_plus

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.errors import ArchiveBacklogError, ForecastArchiveError
from features.lake import (
    FORECASTS_TABLE,
    Commit,
    Lake,
    all_of,
    between,
    equals,
    forecast_table_layout,
    one_of,
    window_filter,
)
from features.marketdata import utc_bound
from models.forecaster import quantile_column

log = logging.getLogger(__name__)

_SCHEMA, _SPEC, _ORDER = forecast_table_layout()
ARROW_SCHEMA: pa.Schema = _SCHEMA.as_arrow()
FORECAST_COLUMNS: tuple[str, ...] = tuple(f.name for f in ARROW_SCHEMA)
REQUIRED_COLUMNS: tuple[str, ...] = tuple(f.name for f in ARROW_SCHEMA if not f.nullable)
SOURCES = ("api", "batch", "scenario")
ALIASES = ("champion", "challenger", "baseline")
QUALITIES = ("ok", "degraded")
MEDIAN = 0.5
_SORT = [("market", "ascending"), ("delivery_start", "ascending")]


def ensure_forecasts_table(lake: Lake, table: str = FORECASTS_TABLE) -> None:
    """Create the archive table (and its namespace) unless it exists; safe against concurrent creators."""
    lake.ensure_table(table, _SCHEMA, _SPEC, _ORDER)


# ---------------------------------------------------------------- the contract


def forecast_frame(
    *,
    market: str,
    timezone: str,
    delivery_start: Sequence | pd.Series,
    issued_at: object,
    predictions: pd.DataFrame,
    levels: Iterable[float],
    model_name: str,
    model_version: str,
    request_id: str,
    tenant: str,
    feature_service: str,
    source: str = "api",
    model_alias: str = "champion",
    batch_id: str | None = None,
    served_at: object = None,
    shadow: bool = False,
    scenario: str | None = None,
    feature_snapshot: int | None = None,
    feature_known_at: object = None,
    quality: object = "ok",
    quality_reason: object = None,
) -> pd.DataFrame:
    """Archive rows for one forecast: one row per delivery hour, in the order of ``delivery_start``.

    ``predictions`` is a model's quantile output (columns ``q10``, ``q50``, ``q90`` ... as
    ``models.forecaster.quantile_column`` names them, one row per delivery hour); ``levels`` are the
    levels to archive and must include 0.5 (``forecast`` is the median). ``issued_at``,
    ``feature_known_at``, ``quality`` and ``quality_reason`` are scalars or one value per hour;
    ``served_at`` defaults to now. ``delivery_day`` is the local day of each hour in ``timezone``.
    """
    levels = sorted(float(q) for q in levels)
    missing = [quantile_column(q) for q in levels if quantile_column(q) not in predictions.columns]
    if missing:
        raise ForecastArchiveError(f"predictions lack quantile columns {missing}; they have "
                                   f"{sorted(map(str, predictions.columns))}", column="values")
    if MEDIAN not in levels:
        raise ForecastArchiveError(f"levels {levels} lack 0.5; the archive's forecast column is the median",
                                   column="levels")
    start = pd.Series(pd.to_datetime(pd.Series(delivery_start).to_numpy(), utc=True))
    if len(start) != len(predictions):
        raise ForecastArchiveError(f"{len(predictions)} prediction rows for {len(start)} delivery hours",
                                   column="delivery_start")
    values = predictions[[quantile_column(q) for q in levels]].to_numpy(dtype=float)
    n = len(start)
    served = pd.Timestamp.now(tz="UTC") if served_at is None else served_at
    return pd.DataFrame({
        "request_id": request_id, "batch_id": batch_id, "source": source, "tenant": tenant, "market": market,
        "delivery_day": start.dt.tz_convert(timezone).dt.date.to_numpy(),
        "delivery_start": start.to_numpy(), "issued_at": _broadcast(issued_at, n), "served_at": _broadcast(served, n),
        "levels": [levels] * n, "values": list(values), "forecast": values[:, levels.index(MEDIAN)],
        "model_name": model_name, "model_version": str(model_version), "model_alias": model_alias,
        "shadow": bool(shadow), "scenario": scenario, "feature_service": feature_service,
        "feature_snapshot": feature_snapshot, "feature_known_at": _broadcast(feature_known_at, n),
        "quality": _broadcast(quality, n), "quality_reason": _broadcast(quality_reason, n),
    }, index=range(n))


def _broadcast(value: object, n: int) -> object:
    if isinstance(value, (pd.Series, np.ndarray, pd.Index, list, tuple)):
        if len(value) != n:
            raise ForecastArchiveError(f"{len(value)} values given for {n} delivery hours")
        return np.asarray(value, dtype=object) if not isinstance(value, (pd.Series, pd.Index)) else value.to_numpy()
    return [value] * n


def to_forecast_table(frame: pd.DataFrame | pa.Table) -> pa.Table:
    """Check rows against the archive's contract and return them as an Arrow table of its exact schema.

    Raises:
        ForecastArchiveError: naming the column: missing or unknown; a value of the wrong type; a
            null in a required column; a naive timestamp; ``source``, ``model_alias`` or ``quality``
            outside their values; ``batch_id`` set for a non-batch row or missing for a batch row; a
            degraded row without ``quality_reason``; ``levels`` not increasing inside (0, 1) or
            without 0.5; ``values`` of another length, non-finite or decreasing; ``forecast`` not
            the value at 0.5; ``issued_at`` after ``served_at``.
    """
    if isinstance(frame, pa.Table):
        frame = frame.to_pandas()
    check_columns(frame)
    arrays = [_column(frame[f.name], f) for f in ARROW_SCHEMA]
    for f, arr in zip(ARROW_SCHEMA, arrays):
        if not f.nullable and arr.null_count:
            first = int(np.flatnonzero(pc.is_null(arr).to_numpy(zero_copy_only=False))[0])
            raise ForecastArchiveError(f"column {f.name!r} is null in {arr.null_count} rows (first: row {first}); "
                                       "it is required", column=f.name)
    table = pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)
    _check_rows(table)
    return table


def check_columns(frame: object) -> None:
    """The cheap part of the contract: a DataFrame with exactly the archive's columns (any order).

    Raises:
        ForecastArchiveError: naming the first missing or unknown column.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ForecastArchiveError(f"forecast rows must be a pandas DataFrame, got {type(frame).__name__}")
    if tuple(frame.columns) == FORECAST_COLUMNS:
        return
    missing = [c for c in FORECAST_COLUMNS if c not in frame.columns]
    if missing:
        raise ForecastArchiveError(f"forecast rows lack column {missing[0]!r} (missing: {missing}); expected the "
                                   f"columns of {FORECASTS_TABLE}: {', '.join(FORECAST_COLUMNS)}", column=missing[0])
    unknown = [c for c in frame.columns if c not in FORECAST_COLUMNS]
    if unknown:
        raise ForecastArchiveError(f"unknown column {str(unknown[0])!r} in the forecast rows; expected only the "
                                   f"columns of {FORECASTS_TABLE}: {', '.join(FORECAST_COLUMNS)}",
                                   column=str(unknown[0]))
    if frame.columns.duplicated().any():
        dup = str(frame.columns[frame.columns.duplicated()][0])
        raise ForecastArchiveError(f"column {dup!r} appears twice in the forecast rows", column=dup)


def _column(s: pd.Series, f: pa.Field) -> pa.Array:
    try:
        if pa.types.is_timestamp(f.type):
            if pd.api.types.is_datetime64_any_dtype(s.dtype):
                if not isinstance(s.dtype, pd.DatetimeTZDtype):
                    raise ForecastArchiveError(f"column {f.name!r} holds naive timestamps ({s.dtype}); expected "
                                               "tz-aware (UTC) times", column=f.name)
                return pa.array(s.dt.tz_convert("UTC").astype("datetime64[us, UTC]"), type=f.type, from_pandas=True)
            if s.isna().all():
                return pa.nulls(len(s), type=f.type)
            values = pd.Series(list(s), dtype=object)
            if any(isinstance(v, (pd.Timestamp, dt.datetime)) and v.tzinfo is None for v in values if v is not None):
                raise ForecastArchiveError(f"column {f.name!r} holds naive timestamps; expected tz-aware (UTC) times",
                                           column=f.name)
            return pa.array(pd.to_datetime(values, utc=True).astype("datetime64[us, UTC]"), type=f.type,
                            from_pandas=True)
        if pa.types.is_date(f.type):
            if pd.api.types.is_datetime64_any_dtype(s.dtype):
                if isinstance(s.dtype, pd.DatetimeTZDtype):
                    raise ForecastArchiveError(f"column {f.name!r} must be local calendar days (dates), not "
                                               "tz-aware timestamps", column=f.name)
                s = s.dt.date
            return pa.array(s, type=f.type, from_pandas=True)
        if pa.types.is_large_list(f.type) or pa.types.is_list(f.type):
            return pa.array([None if v is None else np.asarray(v, dtype=float) for v in s], type=f.type)
        return pa.array(s, type=f.type, from_pandas=True)
    except ForecastArchiveError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
        raise ForecastArchiveError(f"column {f.name!r} cannot hold its values as {f.type}: {exc}",
                                   column=f.name) from None


def _check_rows(t: pa.Table) -> None:
    for column, allowed in (("source", SOURCES), ("model_alias", ALIASES), ("quality", QUALITIES)):
        bad = pc.invert(pc.is_in(t[column], value_set=pa.array(allowed, type=t.schema.field(column).type)))
        if pc.any(bad).as_py():
            value = pc.filter(t[column], bad)[0].as_py()
            raise ForecastArchiveError(f"column {column!r} holds {value!r}; expected one of {', '.join(allowed)}",
                                       column=column)
    is_batch = pc.equal(t["source"], "batch")
    has_batch = pc.is_valid(t["batch_id"])
    if pc.any(pc.not_equal(is_batch, has_batch)).as_py():
        raise ForecastArchiveError("column 'batch_id' must be set on rows of source 'batch' and null on the others",
                                   column="batch_id")
    if pc.any(pc.and_(pc.equal(t["quality"], "degraded"), pc.is_null(t["quality_reason"]))).as_py():
        raise ForecastArchiveError("a degraded row has no 'quality_reason'; say which inputs were missing or stale",
                                   column="quality_reason")
    if pc.any(pc.greater(t["issued_at"], t["served_at"])).as_py():
        raise ForecastArchiveError("column 'issued_at' is after 'served_at' in some rows; the knowledge cut-off "
                                   "cannot be later than the forecast", column="issued_at")
    n_levels = pc.list_value_length(t["levels"]).to_numpy(zero_copy_only=False)
    n_values = pc.list_value_length(t["values"]).to_numpy(zero_copy_only=False)
    if (n_levels == 0).any():
        raise ForecastArchiveError("column 'levels' holds an empty list; expected quantile levels such as "
                                   "[0.1, 0.5, 0.9]", column="levels")
    if (n_levels != n_values).any():
        i = int(np.flatnonzero(n_levels != n_values)[0])
        raise ForecastArchiveError(f"row {i}: 'values' has {n_values[i]} entries for {n_levels[i]} 'levels'",
                                   column="values")
    levels = pc.list_flatten(t["levels"]).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(t["values"]).to_numpy(zero_copy_only=False)
    row = np.repeat(np.arange(t.num_rows), n_levels)
    same_row = row[1:] == row[:-1]
    if not ((levels > 0) & (levels < 1)).all() or (np.diff(levels)[same_row] <= 0).any():
        raise ForecastArchiveError("column 'levels' must hold increasing quantile levels strictly inside (0, 1)",
                                   column="levels")
    if not np.isfinite(values).all() or (np.diff(values)[same_row] < 0).any():
        raise ForecastArchiveError("column 'values' must hold finite values that do not decrease with the level",
                                   column="values")
    median = levels == MEDIAN
    if np.bincount(row[median], minlength=t.num_rows).min() != 1:
        raise ForecastArchiveError("column 'levels' must include 0.5 in every row (the forecast is the median)",
                                   column="levels")
    forecast = t["forecast"].to_numpy()
    if not np.allclose(values[median], forecast, rtol=1e-12, atol=1e-9):
        raise ForecastArchiveError("column 'forecast' differs from the value at level 0.5 in some rows",
                                   column="forecast")


# ---------------------------------------------------------------- writes


def write_forecasts(lake: Lake, rows: pa.Table, *, table: str = FORECASTS_TABLE,
                    properties: dict[str, str] | None = None) -> Commit:
    """Append checked rows (:func:`to_forecast_table`) in one atomic commit; conflicts are redone."""
    if rows.num_rows == 0:
        return Commit(table=table, snapshot_id=None)
    rows = rows.sort_by(_SORT)
    props = {"aurum.archive.rows": str(rows.num_rows)} | (properties or {})
    # An empty IN matches no file: nothing is rewritten, the rows are appended.
    return lake.rewrite(table, one_of("market", set()), lambda old: rows, properties=props)


@dataclass(frozen=True)
class DaysWritten:
    """What :func:`write_days` committed: the days written and the days it found already archived."""

    written: tuple[dt.date, ...]
    skipped: tuple[dt.date, ...]
    rows: int
    snapshot_id: int | None


def write_days(lake: Lake, rows: pa.Table, *, table: str = FORECASTS_TABLE,
               properties: dict[str, str] | None = None) -> DaysWritten:
    """Commit batch rows of whole delivery days, except days this model version already has archived.

    ``rows`` (checked, :func:`to_forecast_table`) must be of one market, source ``batch`` and one
    (model_name, model_version), and hold every hour of each of their days. The check for archived
    days happens inside the commit, on the files the commit replaces, so a run racing another one
    (or re-run after a crash) never archives a day twice: one atomic copy-on-write commit, redone
    on the fresh table when it conflicts.
    """
    if rows.num_rows == 0:
        return DaysWritten((), (), 0, None)
    keys = {c: pc.unique(rows[c]).to_pylist() for c in ("market", "source", "model_name", "model_version")}
    if any(len(v) != 1 for v in keys.values()) or keys["source"] != ["batch"]:
        raise ForecastArchiveError(f"write_days takes rows of one market, source 'batch' and one model version; "
                                   f"got {keys}", column="source")
    market, name, version = keys["market"][0], keys["model_name"][0], keys["model_version"][0]
    rows = rows.sort_by(_SORT)
    start = pd.Timestamp(pc.min(rows["delivery_start"]).as_py())
    end = pd.Timestamp(pc.max(rows["delivery_start"]).as_py()) + pd.Timedelta(microseconds=1)
    days = set(pc.unique(rows["delivery_day"]).to_pylist())
    outcome: dict[str, object] = {}

    def add_new_days(old: pa.Table | None) -> pa.Table | None:
        done: set[dt.date] = set()
        if old is not None and old.num_rows:
            same = pc.and_(pc.and_(pc.equal(old["market"], market), pc.equal(old["source"], "batch")),
                           pc.and_(pc.equal(old["model_name"], name), pc.equal(old["model_version"], version)))
            done = set(pc.unique(pc.filter(old["delivery_day"], same)).to_pylist()) & days
        new = rows.filter(pc.invert(pc.is_in(rows["delivery_day"], value_set=pa.array(sorted(done), pa.date32()))))
        outcome.update(written=tuple(sorted(days - done)), skipped=tuple(sorted(done)), rows=new.num_rows)
        if new.num_rows == 0:
            return None
        merged = new if old is None else pa.concat_tables([old, new.cast(old.schema)])
        return merged.sort_by(_SORT)

    props = {"aurum.archive.rows": str(rows.num_rows)} | (properties or {})
    scope = all_of(window_filter(market, start, end), equals(source="batch"))  # batch files only (partitioned)
    commit = lake.rewrite(table, scope, add_new_days, properties=props)
    return DaysWritten(outcome["written"], outcome["skipped"], outcome["rows"], commit.snapshot_id)


@dataclass(frozen=True)
class ArchiveStats:
    """Counters of one :class:`ForecastArchive` (for health checks and metrics)."""

    appended_rows: int
    flushed_rows: int
    pending_rows: int
    flushes: int
    failed_flushes: int
    refused_rows: int
    rejected_rows: int
    last_flush_seconds: float | None
    last_error: str | None
    compactions: int = 0


COMPACTIONS_PER_FLUSH = 2  # partitions compacted after one flush at most (those with the most flushes first)
# The Parquet one of the archive's own merges takes in all (smallest files first). A merge holds its rows
# several times over while it reads, sorts and writes them (~2.3 KB a row at peak, measured: 2 MiB of
# Parquet, ~55,000 rows, took 130 MiB), so this bound is a bound on the archiver's memory. Merging further
# is a maintenance job (`compact`).
COMPACT_BYTES = 2 * 2**20


class ForecastArchive:
    """A buffered, thread-safe writer of forecast rows into ``serving.forecasts``; one per process.

    ``append`` never waits for the lake: it checks the column names and queues the frame, which the
    archive then owns (do not modify it afterwards). A daemon thread converts and checks the queued
    frames (:func:`to_forecast_table`) and commits them as one append when the oldest queued row is
    ``flush_interval / 2`` old or ``max_rows // 4`` rows wait. A frame that fails the full check is
    dropped from the flush, logged with the column at ERROR and counted (``rejected_rows``,
    ``last_error``); the rest is written. A failed commit keeps its rows queued, is logged and retried
    after ``flush_interval``. When ``max_rows`` rows wait (the lake has refused flushes for a while),
    ``append`` raises :class:`ArchiveBacklogError` rather than grow without bound: the caller serves on
    and flags the loss. ``close()`` (also run at interpreter exit) flushes what is left.

    Every flush leaves a small file in each partition it touches, and a table of ever more files makes
    every later commit read (and hold in memory) ever longer manifests. So after ``compact_every``
    flushes into a partition, the same thread merges that partition's smallest files, ``compact_bytes``
    at most in one merge (:func:`compact_small`, a bound on its memory), merging again while two or more
    fit (at most ``compact_every`` merges), at most ``COMPACTIONS_PER_FLUSH`` partitions after one
    flush, so that flushes keep their pace when traffic touches many months at once: a partition keeps
    files of about ``compact_bytes`` and a bounded number of smaller ones, and a commit's
    cost stops growing with the service's uptime (merging further is a maintenance job: :func:`compact`).
    A failed compaction is logged and retried after the next ``compact_every`` flushes; it never holds
    rows back. ``compact_every=0`` turns it off.
    """

    def __init__(self, lake: Lake, *, flush_interval: float = 1.0, max_rows: int = 200_000,
                 table: str = FORECASTS_TABLE, compact_every: int = 16, compact_bytes: int = COMPACT_BYTES):
        if not flush_interval > 0:
            raise ValueError(f"flush_interval {flush_interval!r} must be a positive number of seconds")
        if max_rows < 1:
            raise ValueError(f"max_rows {max_rows!r} must be at least 1")
        if compact_every < 0 or compact_every == 1:
            raise ValueError(f"compact_every {compact_every!r} must be 0 (off) or at least 2 flushes")
        self.lake, self.table = lake, table
        self.flush_interval, self.max_rows = float(flush_interval), int(max_rows)
        self.compact_every, self.compact_bytes = int(compact_every), int(compact_bytes)
        self._touched: dict[tuple[str, str, str], int] = {}  # flushes into each partition since its compaction
        self._early_rows = max(1, self.max_rows // 4)
        ensure_forecasts_table(lake, table)
        self._cond = threading.Condition()
        self._flush_lock = threading.Lock()  # one commit at a time: the thread's or a caller's flush()
        self._pending: list[pd.DataFrame | pa.Table] = []  # frames as appended; tables once converted
        self._pending_rows = 0
        self._oldest: float | None = None  # monotonic time of the oldest queued row
        self._retry_at = 0.0
        self._closed = False
        self._counts = {"appended": 0, "flushed": 0, "flushes": 0, "failed": 0, "refused": 0, "rejected": 0,
                        "compactions": 0}
        self._last_seconds: float | None = None
        self._last_error: str | None = None
        self._inflight = 0  # rows of the commit under way: they count towards max_rows until they land
        self._thread = threading.Thread(target=self._run, name="forecast-archive", daemon=True)
        self._thread.start()
        _flush_at_exit(self)

    # ------------------------------------------------------------ request path

    def append(self, frame: pd.DataFrame) -> int:
        """Queue forecast rows for the next flush; returns how many. Never blocks on the lake.

        Raises:
            ForecastArchiveError: a column is missing or unknown (named in the message).
            ArchiveBacklogError: the archive is closed or ``max_rows`` rows already wait.
        """
        check_columns(frame)
        return self._queue(frame)

    def _queue(self, item: pd.DataFrame) -> int:
        n = len(item)
        with self._cond:
            if self._closed:
                raise ArchiveBacklogError(f"the forecast archive of {self.table!r} is closed; {n} rows not taken")
            if self._pending_rows + self._inflight + n > self.max_rows:
                self._counts["refused"] += n
                raise ArchiveBacklogError(
                    f"the forecast archive holds {self._pending_rows + self._inflight} unflushed rows "
                    f"(max_rows={self.max_rows}); "
                    f"{n} rows not taken; last flush error: {self._last_error or 'none'}")
            if n:
                self._pending.append(item)
                self._pending_rows += n
                self._counts["appended"] += n
                if self._oldest is None:
                    self._oldest = time.monotonic()
                    self._cond.notify()
                elif self._pending_rows >= self._early_rows:
                    self._cond.notify()
        return n

    # ------------------------------------------------------------ flushing

    def flush(self) -> int:
        """Commit everything queued now, in this thread; returns the rows written.

        Raises what the commit raised (the rows stay queued for the next attempt).
        """
        return self._flush_pending()

    def close(self, timeout: float = 60.0) -> None:
        """Stop taking rows, stop the thread and flush what is left (raises if that flush fails)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self._flush_pending()

    def __enter__(self) -> ForecastArchive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stats(self) -> ArchiveStats:
        with self._cond:
            c = self._counts
            return ArchiveStats(c["appended"], c["flushed"], self._pending_rows, c["flushes"], c["failed"],
                                c["refused"], c["rejected"], self._last_seconds, self._last_error, c["compactions"])

    def _at_exit(self) -> None:
        if self._closed and not self._pending_rows:
            return
        try:
            self.close(timeout=10.0)
        except Exception as exc:  # noqa: BLE001 - at exit there is nobody to raise to: say what was lost
            log.error("forecast archive: %d rows not flushed at exit: %s", self._pending_rows, exc)

    def _due(self) -> float | None:
        """Seconds until the next flush is due (<= 0: now), or None when nothing waits."""
        if self._oldest is None:
            return None
        if self._pending_rows >= self._early_rows and time.monotonic() >= self._retry_at:
            return 0.0
        return max(self._oldest + self.flush_interval / 2, self._retry_at) - time.monotonic()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    wait = self._due()
                    if wait is not None and wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._closed:
                    return  # close() flushes the rest in its own thread
            try:
                self._flush_pending()
            except Exception:  # noqa: BLE001, S110 - logged and counted in _flush_pending; the rows stay queued
                pass

    def _convert(self, batch: list[pd.DataFrame | pa.Table]) -> list[pa.Table]:
        """The queued frames as checked tables; a frame that breaks the contract is dropped and reported.

        Frames are converted together (one conversion of the concatenation costs about a twentieth
        of converting 24-row frames one by one); only when that fails are they taken one at a time,
        to keep the good ones.
        """
        tables = [item for item in batch if isinstance(item, pa.Table)]
        frames = [item for item in batch if isinstance(item, pd.DataFrame)]
        if not frames:
            return tables
        try:
            tables.append(to_forecast_table(frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)))
        except ForecastArchiveError:
            for frame in frames:
                try:
                    tables.append(to_forecast_table(frame))
                except ForecastArchiveError as exc:
                    self._reject(len(frame), exc)
        return tables

    def _reject(self, rows: int, exc: Exception) -> None:
        with self._cond:
            self._counts["rejected"] += rows
            self._last_error = f"{type(exc).__name__}: {exc}"
        log.error("forecast archive: %d rows rejected, not archived: %s", rows, exc)

    def _flush_pending(self) -> int:
        with self._flush_lock:
            with self._cond:
                batch, n, oldest = self._pending, self._pending_rows, self._oldest
                self._pending, self._pending_rows, self._oldest = [], 0, None
                self._inflight = n
            if not batch:
                return 0
            t0 = time.perf_counter()
            tables = self._convert(batch)
            rows = sum(t.num_rows for t in tables)
            written = pa.concat_tables(tables) if tables else None
            try:
                if written is not None:
                    write_forecasts(self.lake, written, table=self.table)
            except Exception as exc:  # noqa: BLE001 - whatever failed, the rows must stay queued and be reported
                with self._cond:
                    self._pending[:0] = tables
                    self._pending_rows += rows
                    self._inflight = 0
                    self._oldest = oldest if self._oldest is None else min(oldest, self._oldest)
                    self._retry_at = time.monotonic() + self.flush_interval
                    self._counts["failed"] += 1
                    self._last_error = f"{type(exc).__name__}: {exc}"
                log.warning("forecast archive: flush of %d rows to %s failed, kept for a retry: %s",
                            rows, self.table, exc)
                raise
            with self._cond:
                self._inflight = 0
                self._counts["flushed"] += rows
                self._counts["flushes"] += 1
                self._last_seconds = time.perf_counter() - t0
                if rows == n:
                    self._last_error = None
            if written is not None and self.compact_every:
                self._compact_touched(written)
            return rows

    def _compact_touched(self, written: pa.Table) -> None:
        """Count the flush into each partition it touched; compact those that reached ``compact_every``."""
        for key in partitions_of(written):
            self._touched[key] = self._touched.get(key, 0) + 1
        due = sorted((k for k, n in self._touched.items() if n >= self.compact_every), key=self._touched.get,
                     reverse=True)
        for key in due[:COMPACTIONS_PER_FLUSH]:  # the rest wait for later flushes: appends are not held back
            del self._touched[key]
            try:
                # one merge takes at most compact_bytes (its memory bound); merge again while small files are
                # left, up to one merge per flush counted, so the merges keep pace with the flushes
                for _ in range(self.compact_every):
                    if not compact_small(self.lake, *key, max_bytes=self.compact_bytes, table=self.table):
                        break
                    with self._cond:
                        self._counts["compactions"] += 1
            except Exception as exc:  # noqa: BLE001 - rows are safe either way; a later compaction catches up
                log.warning("forecast archive: compaction of %s failed, retried later: %s", "/".join(key), exc)


def _flush_at_exit(archive: ForecastArchive) -> None:
    """Flush an archive that was not closed when the interpreter exits.

    Registered with ``threading``'s exit hooks rather than ``atexit``: the lake's commits use thread
    pools, which refuse work once ``threading`` has shut down (before ``atexit`` handlers run); hooks
    run newest first, so this one runs before the pools close. Holds the archive weakly.
    """
    ref = weakref.ref(archive)

    def flush() -> None:
        live = ref()
        if live is not None:
            live._at_exit()

    register = getattr(threading, "_register_atexit", None)  # CPython >= 3.9; concurrent.futures uses it too
    try:
        (register or atexit.register)(flush)
    except RuntimeError:  # the interpreter is already shutting down
        pass


# ---------------------------------------------------------------- reads and maintenance


def read_forecasts(
    lake: Lake,
    market: str | None = None,
    start: object = None,
    end: object = None,
    *,
    source: str | None = None,
    batch_id: str | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    model_alias: str | None = None,
    columns: Sequence[str] | None = None,
    table: str = FORECASTS_TABLE,
) -> pd.DataFrame:
    """Archived forecasts with delivery in ``[start, end)`` (UTC; naive bounds are UTC, dates are midnight
    UTC), filtered by the given columns and pushed into the scan; sorted by market, delivery start and
    serving time. ``levels`` and ``values`` come back as arrays. An empty archive gives an empty frame
    with every column."""
    ensure_forecasts_table(lake, table)
    unknown = [c for c in columns or () if c not in FORECAST_COLUMNS]
    if unknown:
        raise ForecastArchiveError(f"unknown column {unknown[0]!r}; {table} has {', '.join(FORECAST_COLUMNS)}",
                                   column=unknown[0])
    lo, hi = utc_bound(start), utc_bound(end)
    eq = {k: v for k, v in (("market", market), ("source", source), ("batch_id", batch_id),
                            ("model_name", model_name), ("model_version", model_version),
                            ("model_alias", model_alias)) if v is not None}
    terms = [equals(**eq)] if eq else []
    if lo is not None or hi is not None:
        terms.append(between("delivery_start", lo, None if hi is None else hi - pd.Timedelta(microseconds=1)))
    wanted = tuple(columns) if columns else FORECAST_COLUMNS
    scanned = lake.scan(table, all_of(*terms), columns=wanted)
    frame = scanned.to_pandas()
    order = [c for c in ("market", "delivery_start", "served_at") if c in frame.columns]
    return frame.sort_values(order, kind="stable").reset_index(drop=True) if order else frame


_PARTITION = re.compile(r"/market=([^/]+)/delivery_month=(\d{4}-\d{2})/source=([^/]+)/")


def partition_files(lake: Lake, *, table: str = FORECASTS_TABLE) -> dict[tuple[str, str, str], int]:
    """Data files per (market, ``YYYY-MM`` month of delivery, source) partition of the archive."""
    ensure_forecasts_table(lake, table)
    counts: dict[tuple[str, str, str], int] = {}
    for path in lake.file_paths(table):
        m = _PARTITION.search(path)
        if m:
            key = (unquote_plus(m.group(1)), m.group(2), unquote_plus(m.group(3)))
            counts[key] = counts.get(key, 0) + 1
    return counts


def partitions_of(rows: pa.Table) -> set[tuple[str, str, str]]:
    """The (market, ``YYYY-MM`` month of delivery in UTC, source) partitions checked archive rows fall in."""
    months = pc.strftime(rows["delivery_start"], format="%Y-%m", locale="C")
    keys = pa.table({"m": rows["market"], "month": months, "s": rows["source"]}).group_by(["m", "month", "s"]).aggregate([])
    return set(zip(keys["m"].to_pylist(), keys["month"].to_pylist(), keys["s"].to_pylist(), strict=True))


def compact_small(lake: Lake, market: str, month: str, source: str, *, max_bytes: int = COMPACT_BYTES,
                  table: str = FORECASTS_TABLE) -> int:
    """Merge the smallest data files of one (market, month, source) partition, ``max_bytes`` in all, into one.

    Files are taken smallest first while their sizes add up to at most ``max_bytes``, so one merge
    never holds more than that much Parquet (its memory is bounded however many flushes came before),
    and files that reached the bound are left alone. One atomic commit, redone on the fresh table if a
    concurrent writer got in first; rows are unchanged. Returns how many files were merged (0: fewer
    than two fit).
    """
    first = pd.Timestamp(f"{month}-01", tz="UTC")
    scope = all_of(window_filter(market, first, first + pd.offsets.MonthBegin(1)), equals(source=source))
    merged = 0

    def small(files: list) -> list:
        nonlocal merged
        picked, total = [], 0
        for f in sorted(files, key=lambda f: f.file_size_in_bytes):  # the scope prunes to the partition
            if total + f.file_size_in_bytes > max_bytes:
                break
            picked.append(f)
            total += f.file_size_in_bytes
        merged = len(picked) if len(picked) >= 2 else 0
        return picked if merged else []

    lake.rewrite(table, scope, lambda old: None if old is None else old.sort_by(_SORT),
                 properties={"aurum.archive.compacted": f"{market}/{month}/{source}"}, select=small)
    return merged


def compact(lake: Lake, *, market: str | None = None, months: Iterable[str] | None = None, min_files: int = 8,
            table: str = FORECASTS_TABLE) -> dict[tuple[str, str, str], int]:
    """Rewrite each (market, month, source) partition holding at least ``min_files`` data files into one.

    ``months`` (``YYYY-MM``) and ``market`` narrow the partitions considered. Rows are unchanged; each
    partition is one atomic commit, redone if a concurrent writer got in first, so appends may go on
    meanwhile. Returns the number of files each compacted partition had.
    """
    wanted = set(months) if months is not None else None
    done: dict[tuple[str, str, str], int] = {}
    for (m, month, source), n in sorted(partition_files(lake, table=table).items()):
        if n < min_files or (market is not None and m != market) or (wanted is not None and month not in wanted):
            continue
        first = pd.Timestamp(f"{month}-01", tz="UTC")
        scope = all_of(window_filter(m, first, first + pd.offsets.MonthBegin(1)), equals(source=source))
        lake.rewrite(table, scope, lambda old: None if old is None else old.sort_by(_SORT),
                     properties={"aurum.archive.compacted": f"{m}/{month}/{source}"})
        done[(m, month, source)] = n
    return done
