"""The Iceberg adapter: the market-data lake's catalog, table definitions, commits and reads.

This is the only module that imports ``pyiceberg``. Tables live in one namespace (``market`` by
default):

``prices``        one row per (market, delivery_start): the day-ahead price and when it was published.
``fundamentals``  one row per (market, delivery_start): day-ahead forecasts with ``issued_at`` and
                  actuals with ``load_actual_known_at``.
``quarantine``    every rejected value or row, with the reason, source file, line and batch.
``markets``       the markets the lake knows, with their clocks and provenance.
``ingest_batches`` one row per committed ingest: the file hash, row counts, snapshot ids.

The forecast archive ``serving.forecasts`` (:func:`forecast_table_layout`) lives in its own namespace:
it is written by the serving stage and read by monitoring, not ingested market data.

Market tables are partitioned by ``market`` and ``year(delivery_start)`` and sorted by
``delivery_start``, so reading one market over a window touches one or two files per year of the
window, whatever the table's size.

Writes are copy-on-write per data file: a batch reads the files its rows may fall into, merges
(newest value wins per key) and commits one OVERWRITE (or APPEND) snapshot that swaps the old
files for the new ones. A commit that conflicts with a concurrent writer is redone from a fresh
table state, up to ``commit_retries`` times.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
    ValidationException,
)
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    In,
    LessThan,
    LessThanOrEqual,
)
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table, Transaction
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import IdentityTransform, MonthTransform, YearTransform
from pyiceberg.types import (
    BooleanType,
    DateType,
    DoubleType,
    ListType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)
from sqlalchemy.exc import OperationalError as SqlOperationalError

from features.errors import CatalogUnavailableError, CommitConflictError
from features.settings import AurumSettings

log = logging.getLogger(__name__)

def _fields(*specs: tuple[str, object, bool, str]) -> Schema:
    return Schema(
        *(NestedField(i + 1, name, typ, required=req, doc=doc) for i, (name, typ, req, doc) in enumerate(specs))
    )


_TS = TimestamptzType()
_STR = StringType()
_DBL = DoubleType()
_LONG = LongType()

SCHEMAS: dict[str, Schema] = {
    "prices": _fields(
        ("market", _STR, True, "market code"),
        ("delivery_start", _TS, True, "start of the delivery period, UTC"),
        ("delivery_end", _TS, True, "end of the delivery period (exclusive), UTC"),
        ("price", _DBL, True, "day-ahead clearing price in the market's currency per MWh"),
        ("currency", _STR, True, "ISO 4217 currency"),
        ("resolution", _STR, True, "ISO 8601 length of the delivery period: PT60M or PT15M"),
        ("source", _STR, True, "source kind: epf, entsoe, csv, synthetic"),
        ("published_at", _TS, True, "when the price became public (auction results), UTC"),
        ("ingested_at", _TS, True, "when Aurum stored the value, UTC"),
        ("batch_id", _STR, True, "ingest batch that wrote the row"),
    ),
    "fundamentals": _fields(
        ("market", _STR, True, "market code"),
        ("delivery_start", _TS, True, "start of the delivery period, UTC"),
        ("delivery_end", _TS, True, "end of the delivery period (exclusive), UTC"),
        ("resolution", _STR, True, "PT60M or PT15M"),
        ("load_forecast_mw", _DBL, False, "day-ahead load forecast, MW"),
        ("generation_forecast_mw", _DBL, False, "day-ahead (scheduled) generation forecast, MW"),
        ("wind_forecast_mw", _DBL, False, "day-ahead total wind forecast, MW"),
        ("wind_onshore_forecast_mw", _DBL, False, "day-ahead onshore wind forecast, MW"),
        ("wind_offshore_forecast_mw", _DBL, False, "day-ahead offshore wind forecast, MW"),
        ("solar_forecast_mw", _DBL, False, "day-ahead solar forecast, MW"),
        ("fuel_price_eur_mwh", _DBL, False, "fuel (gas) price known on D-1, EUR/MWh thermal"),
        ("issued_at", _TS, True, "when the day-ahead forecasts of the row were published, UTC"),
        ("load_actual_mw", _DBL, False, "actual load, MW"),
        ("load_actual_known_at", _TS, False, "when the actual load became known, UTC"),
        ("source", _STR, True, "source kind"),
        ("ingested_at", _TS, True, "when Aurum stored the row, UTC"),
        ("batch_id", _STR, True, "ingest batch that last wrote the row"),
    ),
    "quarantine": _fields(
        ("batch_id", _STR, True, "ingest batch that rejected the value"),
        ("market", _STR, True, "market code"),
        ("source", _STR, True, "source kind"),
        ("source_file", _STR, True, "path of the source file"),
        ("source_sha256", _STR, True, "SHA-256 of the source file"),
        ("source_line", _LONG, False, "1-based line of the source file (header is line 1)"),
        ("target", _STR, True, "what was rejected: prices, fundamentals or row"),
        ("column", _STR, False, "canonical column of a rejected value; null for a whole row"),
        ("reason", _STR, True, "machine-readable reason, such as duplicate_conflict"),
        ("detail", _STR, True, "human-readable explanation with the bad value"),
        ("delivery_start", _TS, False, "delivery period when it could be placed, UTC"),
        ("raw", _STR, True, "the source row as JSON, values as read"),
        ("quarantined_at", _TS, True, "when the value was rejected, UTC"),
    ),
    "markets": _fields(
        ("code", _STR, True, "market code"),
        ("name", _STR, True, "human name"),
        ("timezone", _STR, True, "IANA zone of local delivery time"),
        ("country", _STR, True, "ISO 3166-1 alpha-2 country"),
        ("currency", _STR, True, "ISO 4217 currency"),
        ("gate_closure", _STR, True, "day-ahead gate closure, local HH:MM on D-1"),
        ("prices_published", _STR, True, "day-ahead results public by, local HH:MM on D-1"),
        ("forecasts_issued", _STR, True, "day-ahead forecasts public by, local HH:MM on D-1"),
        ("actuals_delay_s", _LONG, True, "seconds after delivery end until actuals are known"),
        ("provenance", _STR, True, "where the data comes from, and its licence"),
        ("updated_at", _TS, True, "when the row was written, UTC"),
    ),
    "ingest_batches": _fields(
        ("batch_id", _STR, True, "batch id"),
        ("market", _STR, True, "market code"),
        ("source", _STR, True, "source kind"),
        ("source_file", _STR, True, "path of the source file"),
        ("source_sha256", _STR, True, "SHA-256 of the source file"),
        ("rows_read", _LONG, True, "data rows in the source"),
        ("prices_accepted", _LONG, True, "price rows written"),
        ("fundamentals_accepted", _LONG, True, "fundamentals rows written"),
        ("quarantined", _LONG, True, "quarantine records written"),
        ("quarantine_by_reason", _STR, True, "JSON object reason -> count"),
        ("dst_autumn_split", _LONG, True, "padded24 autumn values stored for both repeated hours"),
        ("gaps", _LONG, True, "missing delivery periods inside the covered span"),
        ("gap_ranges", _STR, True, "JSON list of [first, last] missing periods"),
        ("snapshots", _STR, True, "JSON object table -> snapshot id committed by the batch"),
        ("started_at", _TS, True, "batch start, UTC"),
        ("committed_at", _TS, True, "batch commit, UTC"),
    ),
}

MARKET_TABLES = ("prices", "fundamentals")
KEY = ("market", "delivery_start")


def _time_partitioned(schema: Schema) -> tuple[PartitionSpec, SortOrder]:
    market = schema.find_field("market").field_id
    start = schema.find_field("delivery_start").field_id
    spec = PartitionSpec(
        PartitionField(source_id=market, field_id=1000, transform=IdentityTransform(), name="market"),
        PartitionField(source_id=start, field_id=1001, transform=YearTransform(), name="delivery_year"),
    )
    return spec, SortOrder(SortField(source_id=market), SortField(source_id=start))


def _layout(name: str) -> tuple[PartitionSpec, SortOrder]:
    schema = SCHEMAS[name]
    if name in MARKET_TABLES:
        return _time_partitioned(schema)
    if name == "quarantine":
        market = schema.find_field("market").field_id
        spec = PartitionSpec(PartitionField(source_id=market, field_id=1000, transform=IdentityTransform(), name="market"))
        return spec, SortOrder()
    return PartitionSpec(), SortOrder()


def feature_table_layout(features: dict[str, str]) -> tuple[Schema, PartitionSpec, SortOrder]:
    """Schema and layout of a derived feature table: key, features, ``known_at``, ``computed_at``.

    ``features`` maps each feature name to ``"double"``, ``"long"`` or ``"boolean"``.
    """
    from pyiceberg.types import BooleanType

    types = {"double": _DBL, "long": _LONG, "boolean": BooleanType()}
    specs = [("market", _STR, True, "market code"), ("delivery_start", _TS, True, "delivery period start, UTC")]
    specs += [(name, types[kind], False, f"feature {name}") for name, kind in features.items()]
    specs += [("known_at", _TS, True, "when every input of the row was public, UTC (the event timestamp)"),
              ("computed_at", _TS, True, "when Aurum computed this version of the row, UTC")]
    schema = _fields(*specs)
    spec, order = _time_partitioned(schema)
    return schema, spec, order


FORECASTS_TABLE = "serving.forecasts"
"""The forecast archive (the inference log): namespace ``serving``, because the serving stage writes it
(the forecast service and ``aurum score``) and monitoring reads it; ``market`` holds ingested market
data only, and a deployment that renames its market namespace keeps the archive where readers expect it."""


def forecast_table_layout() -> tuple[Schema, PartitionSpec, SortOrder]:
    """Schema, partitioning and sort order of ``serving.forecasts``: one row per (request or batch,
    market, delivery hour, model, scenario).

    Invariants the writers keep (``serving.archive`` checks them before anything is queued):
    ``levels`` is strictly increasing inside (0, 1), ``values`` has the same length and order and does
    not decrease, and ``forecast`` is the value at level 0.5; ``issued_at`` (the knowledge cut-off) is
    not after ``served_at``; ``batch_id`` is set exactly when ``source`` is ``batch``.

    Partitioned by ``market``, ``month(delivery_start)`` and ``source``: monitoring reads one market
    over weeks or months of delivery, which then opens one or two months; a day partition would
    multiply the small files every flush leaves (one per partition it touches), a year partition
    would make a compaction rewrite a whole year. ``source`` keeps batch rows in files of their own,
    so a batch job's copy-on-write commits (``serving.archive.write_days``) read and rewrite only
    batch files, never the service's live rows, and stay short when service flushes keep committing
    beside them. Sorted by market and delivery start.
    """
    doubles = "list<double>"  # replaced below by list types whose element ids follow the top-level ids
    specs = [
        ("request_id", _STR, True, "id of the API request or batch chunk that produced the row"),
        ("batch_id", _STR, False, "id of the batch-scoring job (aurum score); null for API requests"),
        ("source", _STR, True, "who asked: api, batch or scenario"),
        ("tenant", _STR, True, "tenant of the API key; 'internal' for batch jobs unless given"),
        ("market", _STR, True, "market code"),
        ("delivery_day", DateType(), True, "local delivery day D of the market"),
        ("delivery_start", _TS, True, "start of the delivery hour, UTC"),
        ("issued_at", _TS, True, "knowledge cut-off of the forecast: gate closure on D-1 (or the request time "
                                 "if earlier), UTC; no input known later was used"),
        ("served_at", _TS, True, "when the forecast was computed and returned or archived, UTC"),
        ("levels", doubles, True, "quantile levels, increasing, such as [0.1, 0.5, 0.9]"),
        ("values", doubles, True, "forecast price at each level of levels, same order, currency/MWh"),
        ("forecast", _DBL, True, "point forecast: the median (level 0.5), currency/MWh"),
        ("model_name", _STR, True, "registered model name, such as day_ahead_SYN_NORTH"),
        ("model_version", _STR, True, "registered model version"),
        ("model_alias", _STR, True, "alias the model was served under: champion, challenger or baseline"),
        ("shadow", BooleanType(), True, "computed beside the served forecast, not returned to the caller"),
        ("scenario", _STR, False, "name of the what-if scenario; null for the base case"),
        ("feature_service", _STR, True, "Feast feature service the inputs came through, such as day_ahead_v1"),
        ("feature_snapshot", _LONG, False, "snapshot id of features.price_features when the inputs were read "
                                           "(the table the online store is loaded from); null if unknown"),
        ("feature_known_at", _TS, False, "latest time any input of the row became known, UTC; null when the "
                                         "lookup does not report it (offline reads: at most issued_at)"),
        ("quality", _STR, True, "ok, or degraded when an input was missing or stale"),
        ("quality_reason", _STR, False, "why the row is degraded: which inputs were missing or stale; null if ok"),
    ]
    element_ids = iter(range(len(specs) + 1, 2 * len(specs) + 1))
    schema = _fields(*((name, ListType(element_id=next(element_ids), element=_DBL, element_required=True)
                        if typ == doubles else typ, req, doc) for name, typ, req, doc in specs))
    market = schema.find_field("market").field_id
    start = schema.find_field("delivery_start").field_id
    source = schema.find_field("source").field_id
    spec = PartitionSpec(
        PartitionField(source_id=market, field_id=1000, transform=IdentityTransform(), name="market"),
        PartitionField(source_id=start, field_id=1001, transform=MonthTransform(), name="delivery_month"),
        PartitionField(source_id=source, field_id=1002, transform=IdentityTransform(), name="source"),
    )
    return schema, spec, SortOrder(SortField(source_id=market), SortField(source_id=start))


@dataclass
class Commit:
    """What one commit swapped in a table, so a failed multi-table ingest can undo it.

    ``snapshot_id`` is None when nothing changed and no snapshot was made.
    """

    table: str
    snapshot_id: int | None
    removed: list[DataFile] = field(default_factory=list)
    added: list[DataFile] = field(default_factory=list)
    rows: int = 0


def window_filter(market: str, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None) -> BooleanExpression:
    """Row filter for one market's delivery periods in ``[start, end)`` (UTC), pushed into the scan."""
    expr: BooleanExpression = EqualTo("market", market)
    if start is not None:
        expr = And(expr, GreaterThanOrEqual("delivery_start", _iso(start)))
    if end is not None:
        expr = And(expr, LessThan("delivery_start", _iso(end)))
    return expr


def between(column: str, lo: object = None, hi: object = None) -> BooleanExpression:
    """Row filter ``lo <= column <= hi`` (either bound optional); timestamps are taken as UTC."""
    lit = lambda v: _iso(v) if isinstance(v, (pd.Timestamp, dt.datetime)) else v  # noqa: E731
    terms = ([GreaterThanOrEqual(column, lit(lo))] if lo is not None else []) + (
        [LessThanOrEqual(column, lit(hi))] if hi is not None else [])
    return all_of(*terms)


def one_of(column: str, values: set[str]) -> BooleanExpression:
    """Row filter ``column IN values``."""
    return In(column, set(values))


def all_of(*terms: BooleanExpression) -> BooleanExpression:
    """Conjunction of row filters (everything when there are none)."""
    if not terms:
        return AlwaysTrue()
    return terms[0] if len(terms) == 1 else And(*terms)


def equals(**values: str) -> BooleanExpression:
    """Row filter ``column == value`` for every keyword, combined with AND."""
    terms = [EqualTo(column, value) for column, value in values.items()]
    return terms[0] if len(terms) == 1 else And(*terms)


def _iso(ts: pd.Timestamp) -> str:
    ts = pd.Timestamp(ts)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.tz_convert("UTC").isoformat()


def to_arrow(name: str | Schema, frame: pd.DataFrame) -> pa.Table:
    """A pandas frame as an Arrow table of exactly a table's schema (µs UTC timestamps).

    ``name`` is a table of ``SCHEMAS`` or an Iceberg schema.
    """
    schema = (SCHEMAS[name] if isinstance(name, str) else name).as_arrow()
    missing = [f.name for f in schema if f.name not in frame.columns]
    if missing:
        raise ValueError(f"frame for table {name!r} lacks columns {missing}")
    cols = {}
    for f in schema:
        s = frame[f.name]
        if pa.types.is_timestamp(f.type):
            if not isinstance(s.dtype, pd.DatetimeTZDtype):
                s = pd.to_datetime(s, utc=True)
            s = s.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
        cols[f.name] = pa.array(s, type=f.type, from_pandas=True)
    return pa.Table.from_pydict(cols, schema=schema)


class Lake:
    """The market-data lake: an Iceberg catalog and the tables of one namespace."""

    def __init__(self, settings: AurumSettings, catalog: Catalog):
        self.settings = settings
        self.catalog = catalog
        self.namespace = settings.namespace

    @classmethod
    def open(cls, settings: AurumSettings, *, create: bool = True) -> Lake:
        """Connect to the profile's catalog; with ``create``, make the namespace and tables if absent."""
        props = settings.catalog_properties()
        if settings.profile == "local" and props["uri"].startswith("sqlite:///"):
            settings.home_dir.mkdir(parents=True, exist_ok=True)
        if props["warehouse"].startswith("file://"):
            from urllib.parse import urlparse

            from pathlib import Path

            Path(urlparse(props["warehouse"]).path).mkdir(parents=True, exist_ok=True)
        try:
            catalog = load_catalog(settings.catalog.name, **props)
            lake = cls(settings, catalog)
            if create:
                lake._ensure_tables()
        except SqlOperationalError as exc:
            raise CatalogUnavailableError(
                f"Iceberg catalog at {_redact(props['uri'])!r} is unreachable: {exc.orig}"
            ) from exc
        return lake

    def _ensure_tables(self) -> None:
        for name, schema in SCHEMAS.items():
            spec, order = _layout(name)
            self.ensure_table(name, schema, spec, order)

    def ensure_table(self, name: str, schema: Schema, spec: PartitionSpec, order: SortOrder) -> None:
        """Create a table (and its namespace) unless it exists; safe against concurrent creators."""
        ident = self.ident(name)
        if self.catalog.table_exists(ident):
            return
        try:
            self.catalog.create_namespace_if_not_exists(ident.rsplit(".", 1)[0])
        except NamespaceAlreadyExistsError:  # a concurrent process created it first
            pass
        self.catalog.create_table_if_not_exists(
            ident,
            schema=schema,
            partition_spec=spec,
            sort_order=order,
            properties={
                "write.parquet.compression-codec": "zstd",
                "format-version": "2",
                # Bound the metadata log and delete replaced metadata files (see _expire).
                "write.metadata.previous-versions-max": "10",
                "write.metadata.delete-after-commit.enabled": "true",
                # Appends merge small manifests, so planning a scan does not grow with every batch.
                "commit.manifest-merge.enabled": "true",
                "commit.manifest.min-count-to-merge": "8",
            },
        )

    def ident(self, name: str) -> str:
        """``namespace.table``; a name that already has a namespace is kept as is."""
        return name if "." in name else f"{self.namespace}.{name}"

    def table(self, name: str) -> Table:
        try:
            return self.catalog.load_table(self.ident(name))
        except NoSuchTableError as exc:
            raise CatalogUnavailableError(f"table {self.ident(name)!r} does not exist; run an ingest first") from exc

    # ---------------------------------------------------------------- writes

    def rewrite(
        self,
        name: str,
        scope: BooleanExpression,
        transform: Callable[[pa.Table | None], pa.Table | None],
        *,
        properties: dict[str, str] | None = None,
        select: Callable[[list[DataFile]], list[DataFile]] | None = None,
    ) -> Commit:
        """Replace the data files that may hold rows in ``scope`` by ``transform(their rows)``.

        ``transform`` gets every row of those files (None when there are none) and returns the
        new content for them; rows outside ``scope`` must be passed through. ``select``, if given,
        narrows those files to the ones it returns (on the fresh table state of every attempt);
        when it returns none, nothing is committed. One snapshot is committed; on a conflict with a
        concurrent writer the whole step is redone.
        """
        retries = self.settings.commit_retries
        for attempt in range(retries + 1):
            table = self.table(name)
            removed: list[DataFile] = []
            old: pa.Table | None = None
            if table.current_snapshot() is not None:
                tasks = list(table.scan(row_filter=scope).plan_files())
                if select is not None:
                    chosen = {f.file_path for f in select([t.file for t in tasks])}
                    tasks = [t for t in tasks if t.file.file_path in chosen]
                    if not tasks:
                        return Commit(table=name, snapshot_id=None)
                removed = [t.file for t in tasks]
                if tasks:
                    old = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(tasks)
            new = transform(old)
            if new is None:
                return Commit(table=name, snapshot_id=None)
            try:
                commit = self._swap(table, removed, new, properties or {})
                commit.table = name
                self._expire(table)
                return commit
            except (CommitFailedException, ValidationException, SqlOperationalError) as exc:
                if attempt == retries:
                    raise CommitConflictError(
                        f"commit to {self.ident(name)!r} still conflicted after {retries} retries: {exc}"
                    ) from exc
                delay = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())
                log.info("commit to %s conflicted (%s); retry %d in %.2fs", name, exc, attempt + 1, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _swap(self, table: Table, removed: list[DataFile], new: pa.Table, properties: dict[str, str]) -> Commit:
        added: list[DataFile] = []
        with _Transaction(table) as tx:
            if removed:
                producer = tx.update_snapshot(snapshot_properties=properties).overwrite()
            else:
                producer = tx.update_snapshot(snapshot_properties=properties).merge_append()
            with _without_dead_manifests(producer) as op:
                for f in removed:
                    op.delete_data_file(f)
                if new.num_rows:
                    for f in _dataframe_to_data_files(tx.table_metadata, new, table.io, write_uuid=op.commit_uuid):
                        f.spec_id = tx.table_metadata.default_spec_id  # needed to undo the commit later
                        op.append_data_file(f)
                        added.append(f)
        snap = table.current_snapshot()
        return Commit(table="", snapshot_id=snap.snapshot_id if snap else None, removed=removed, added=added,
                      rows=new.num_rows)

    def append_compacted(self, name: str, rows: pa.Table, *, properties: dict[str, str] | None = None) -> Commit:
        """Append to a small table by rewriting it whole, so it stays one data file however many appends."""
        return self.rewrite(name, AlwaysTrue(), lambda old: rows if old is None else pa.concat_tables([old, rows]),
                            properties=properties)

    def _expire(self, table: Table) -> None:
        """Expire all but the newest ``snapshot_keep_last`` snapshots; tagged snapshots are kept.

        Table metadata lists every snapshot, and pyiceberg copies it many times per commit, so an
        unbounded history makes every commit and read slower as the table ages. Expiry runs once
        the history reaches twice the limit, to spread its own cost. Data files are not deleted
        here (orphan-file cleanup is a separate maintenance job); time travel reaches the kept
        snapshots and any snapshot tagged for lineage.
        """
        keep = self.settings.snapshot_keep_last
        snaps = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms)
        if len(snaps) < 2 * keep:
            return
        cutoff = snaps[-keep].timestamp_ms
        try:
            table.maintenance.expire_snapshots().older_than(
                dt.datetime.fromtimestamp(cutoff / 1000, tz=dt.timezone.utc)).commit()
        except (CommitFailedException, SqlOperationalError) as exc:  # a later commit will expire them
            log.info("expiring snapshots of %s deferred: %s", table.name(), exc)

    def undo(self, commit: Commit) -> None:
        """Swap a commit's files back: the table holds again what it held before that commit."""
        if not commit.added and not commit.removed:
            return
        for attempt in range(self.settings.commit_retries + 1):
            table = self.table(commit.table)
            try:
                with _Transaction(table) as tx:
                    producer = tx.update_snapshot(snapshot_properties={"aurum.undo": str(commit.snapshot_id)}).overwrite()
                    with _without_dead_manifests(producer) as op:
                        for f in commit.added:
                            op.delete_data_file(f)
                        for f in commit.removed:
                            op.append_data_file(f)
                return
            except (CommitFailedException, ValidationException, SqlOperationalError):
                if attempt == self.settings.commit_retries:
                    raise
                time.sleep(0.05 * 2**attempt)

    # ---------------------------------------------------------------- reads

    def scan(
        self,
        name: str,
        row_filter: BooleanExpression = AlwaysTrue(),
        columns: tuple[str, ...] = ("*",),
        snapshot_id: int | None = None,
    ) -> pa.Table:
        """Rows of a table matching ``row_filter``; filters and columns are pushed into the scan."""
        table = self.table(name)
        return table.scan(row_filter=row_filter, selected_fields=columns, snapshot_id=snapshot_id).to_arrow()

    def snapshot_id(self, name: str) -> int | None:
        snap = self.table(name).current_snapshot()
        return snap.snapshot_id if snap else None

    def snapshot_summary(self, name: str) -> dict[str, str]:
        snap = self.table(name).current_snapshot()
        return dict(snap.summary.additional_properties) | {"operation": snap.summary.operation.value} if snap else {}

    def file_paths(self, name: str, row_filter: BooleanExpression = AlwaysTrue()) -> list[str]:
        """Data files a scan with ``row_filter`` would read (for benchmarks and tests of pruning)."""
        table = self.table(name)
        if table.current_snapshot() is None:
            return []
        return [t.file.file_path for t in table.scan(row_filter=row_filter).plan_files()]


class _Transaction(Transaction):
    """A transaction that computes its pending table metadata once per staged change.

    pyiceberg 0.12 rebuilds (deep-copies) the whole table metadata on every read of
    ``Transaction.table_metadata``, dozens of times per commit. The metadata only changes when
    the table's base metadata or the staged updates change, so it is cached on exactly those.

    It also declines pyiceberg 0.12's own retry of a conflicting commit: that retry re-applies the
    staged snapshot on the newer table (or fails its validation with ``ValidationException``), but
    what ``Lake.rewrite`` stages was decided from rows read before the conflict (a merge, a skip of
    what is already there) and must be recomputed from the new state, which ``rewrite`` does on the
    ``CommitFailedException`` raised here.
    """

    _cached: tuple[object, int, object] | None = None

    def _rebuild_snapshot_updates(self) -> None:
        raise CommitFailedException("the table changed during the commit; redone from the new state")

    @property
    def table_metadata(self):  # type: ignore[override]
        base, n = self._table.metadata, len(self._updates)
        if self._cached is None or self._cached[0] is not base or self._cached[1] != n:
            self._cached = (base, n, super().table_metadata)
        return self._cached[2]


def _without_dead_manifests(producer):
    """Make a snapshot producer leave out manifests of earlier snapshots that list no live file.

    pyiceberg 0.12 carries a manifest that holds only DELETED entries into every later snapshot
    (Java Iceberg drops it), so each overwrite would leave one more manifest to read on every scan
    and commit, forever. Deleted entries matter only to the snapshot that deleted them, so
    manifests of earlier snapshots with no added or existing files are dropped.
    """
    process = producer._process_manifests
    snapshot_id = producer._snapshot_id

    def live_only(manifests):
        kept = [m for m in manifests
                if m.added_snapshot_id == snapshot_id
                or m.added_files_count is None or m.existing_files_count is None
                or m.added_files_count + m.existing_files_count > 0]
        return process(kept)

    producer._process_manifests = live_only
    return producer


SQL_CATALOG_TABLES = ("iceberg_tables", "iceberg_namespace_properties")


def forget_sql_catalog(connection, name: str) -> None:
    """Delete the rows of SQL catalog ``name`` (its tables and namespaces) from a catalog database.

    ``connection``: an open SQLAlchemy connection in a transaction. The catalog's data files stay
    where they are (a test or benchmark removes its warehouse itself). Nothing happens where no catalog
    was ever created in that database (its tables do not exist yet).
    """
    import sqlalchemy

    existing = set(sqlalchemy.inspect(connection).get_table_names())
    for table in SQL_CATALOG_TABLES:
        if table in existing:
            connection.execute(sqlalchemy.text(f"DELETE FROM {table} WHERE catalog_name = :n"), {"n": name})


def new_batch_id() -> str:
    return uuid.uuid4().hex[:16]


def _redact(uri: str) -> str:
    """A connection URI without its password."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}" if ":" in cred else uri
    return uri


# ---------------------------------------------------------------- monitoring metrics (written by the monitoring stage)

MONITORING_METRICS_TABLE = "monitoring.monitoring_metrics"
"""The monitoring time series: namespace ``monitoring``, because the monitoring stage writes it; one row per
metric of every check (``aurum monitor drift`` and later quality checks)."""


def monitoring_metrics_layout() -> tuple[Schema, PartitionSpec, SortOrder]:
    """Schema, partitioning and sort order of ``monitoring.monitoring_metrics``: one row per (check, metric).

    A check (``run_id``) writes all its rows in one commit, so a reader never sees half a check. ``state``
    is the outcome of the row's own test: ``ok`` or ``drift`` for a feature's drift score, ``ok``, ``warn``
    or ``alert`` for a rule and for the check's overall ``state`` row. Partitioned by ``market`` only: a
    check rewrites its market's few rows, which keeps one file per market; sorted by ``computed_at``.
    """
    schema = _fields(
        ("run_id", _STR, True, "id of the monitoring check that wrote the row"),
        ("market", _STR, True, "market code"),
        ("model_name", _STR, True, "registered model monitored, such as day_ahead_SYN_NORTH"),
        ("model_version", _STR, True, "its registered version (the champion at the time of the check)"),
        ("monitor", _STR, True, "what was checked: drift (later: quality)"),
        ("window_start", _TS, True, "start of the window's first local delivery day, UTC"),
        ("window_end", _TS, True, "end of the window's last local delivery day (exclusive), UTC"),
        ("metric", _STR, True, "metric name, such as drift_share, drift.fuel_price_eur_mwh, rule.drift_share, state"),
        ("value", _DBL, False, "metric value; null when it could not be computed"),
        ("state", _STR, True, "outcome of the row's test: ok, drift, warn or alert"),
        ("computed_at", _TS, True, "when the check ran, UTC"),
    )
    market = schema.find_field("market").field_id
    spec = PartitionSpec(PartitionField(source_id=market, field_id=1000, transform=IdentityTransform(), name="market"))
    return schema, spec, SortOrder(SortField(source_id=schema.find_field("computed_at").field_id))
