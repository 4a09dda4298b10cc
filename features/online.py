"""Online feature lookups without importing Feast: the reader of a feature service's day vectors.

``features.featurestore.OnlineFeatures`` resolves a feature service through Feast once and then reads
Feast's SQLite or Redis online tables directly (see its docstring). Importing Feast costs ~5 s, more
than half of a forecast service's cold start, so everything a lookup needs after that resolution
lives here, free of Feast:

- :class:`OnlineReader`: the day's vectors with their freshness (what the service and tools call);
- :class:`SqliteRows`: one query per lookup on Feast's SQLite layout, values decoded from Feast's
  ``ValueProto`` bytes by :func:`decode_value`, entity keys spliced from one serialised template per
  market;
- the **online plan**: what the resolution found (service, features and their types, TTL, tables,
  key templates) written as JSON beside the registry by ``aurum features apply`` and by the first
  service start after it. A service starts from the plan only while the registry's definitions are
  byte for byte those the plan was made from (:func:`registry_fingerprint` hashes the specs of its
  entities, feature views and feature services, not their materialization metadata); anything else
  (another registry, a changed definition, a market without a template, the Redis store) goes
  through Feast as before.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import sqlite3
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import FeatureStoreError
from features.settings import AurumSettings

PLAN_VERSION = 1


# ---------------------------------------------------------------- values and keys

_INT64 = struct.Struct("<q")
_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")


def _varint(blob: bytes, i: int) -> tuple[int, int]:
    """The varint at ``blob[i:]`` and the index after it."""
    value = shift = 0
    while True:
        byte = blob[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def decode_value(blob: bytes) -> float:
    """A serialised Feast ``ValueProto`` of a number or bool as a float (NaN for null or unset).

    The common encodings are read first (a double: tag 0x29 and 8 bytes; a small int64 or bool: tag
    0x20 or 0x38 and one varint byte); the rest by the wire format: int32 (3), int64 (4), double (5),
    float (6), bool (7), null (19). Any other kind is an error naming its field number.
    """
    n = len(blob)
    if n == 9 and blob[0] == 0x29:
        return _DOUBLE.unpack_from(blob, 1)[0]
    if n == 2 and (blob[0] == 0x20 or blob[0] == 0x38) and blob[1] < 0x80:
        return float(blob[1])
    if n == 0:
        return np.nan
    tag, i = _varint(blob, 0)
    field, wire = tag >> 3, tag & 7
    if field in (3, 4, 7) and wire == 0:
        value, _ = _varint(blob, i)
        return float(value - (1 << 64) if value >= 1 << 63 else value)
    if field == 5 and wire == 1:
        return _DOUBLE.unpack_from(blob, i)[0]
    if field == 6 and wire == 5:
        return _FLOAT.unpack_from(blob, i)[0]
    if field == 19:
        return np.nan
    raise FeatureStoreError(f"online value with ValueProto field {field} (wire type {wire}); expected a number, "
                            "a bool or null (fields 3-7, 19)")


class KeyedRows:
    """What the direct readers share: entity keys spliced from a market's serialised template (Feast's
    key of the market with its 8-byte delivery timestamp cut out), values decoded from ``ValueProto``.

    ``columns`` maps (view, feature) to the column of the answer. Subclasses give ``template``.
    """

    def __init__(self, columns: dict[tuple[str, str], int]):
        self.columns = columns

    def template(self, market: str) -> tuple[bytes, bytes] | None:
        raise NotImplementedError

    def key(self, market: str, seconds: int) -> bytes:
        """One key made without a template (a market whose layout could not be spliced)."""
        raise FeatureStoreError(f"no entity-key template for market {market!r}")

    def keys(self, market: str, hours: pd.DatetimeIndex) -> list[bytes]:
        seconds = (hours.asi8 // 1_000_000_000).tolist()
        template = self.template(market)
        if template is None:
            return [self.key(market, t) for t in seconds]
        prefix, suffix = template
        pack = _INT64.pack
        return [prefix + pack(t) + suffix for t in seconds]

    def empty(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        return np.full((n, len(self.columns)), np.nan), np.full((n, len(self.columns)), np.nan)


class SqliteRows(KeyedRows):
    """Reads Feast's SQLite online tables (one row per entity key and feature) in one query per lookup.

    With ``cache`` > 0, the last ``cache`` lookups of each thread are kept and answered again only while
    the database is unchanged: SQLite's ``PRAGMA data_version`` changes whenever another connection
    (a materialization, in any process) commits, and a change drops them all. An answer therefore
    always equals a fresh read of the store; what is saved is parsing ~600 rows per lookup.
    """

    def __init__(self, path: str | Path, tables: list[str], views: list[str], columns: dict[tuple[str, str], int],
                 *, cache: int = 0):
        super().__init__(columns)
        self.path, self.tables, self.view_names, self.cache = str(path), list(tables), list(views), cache
        self._local = threading.local()  # one connection (and cache) per thread; no type converters: raw epoch ints

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = sqlite3.connect(self.path, check_same_thread=True)
            self._local.version, self._local.kept = None, {}
        return conn

    def read(self, market: str, hours: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
        """Values (hours x features, NaN when absent) and their event times (epoch seconds, NaN)."""
        if not self.cache:
            return self._read(market, hours)
        conn, local = self._connection(), self._local
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != local.version:
            local.version, local.kept = version, {}
        key = (market, hours[0].value, len(hours))
        hit = local.kept.get(key)
        if hit is None:
            hit = self._read(market, hours)
            if len(local.kept) >= self.cache:
                local.kept.pop(next(iter(local.kept)))  # the oldest lookup goes first
            local.kept[key] = hit
        return hit[0].copy(), hit[1].copy()

    def _read(self, market: str, hours: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
        keys = self.keys(market, hours)
        values, stamps = self.empty(len(keys))
        index = {k: i for i, k in enumerate(keys)}
        marks = ",".join("?" * len(keys))
        sql = " UNION ALL ".join(
            f"SELECT {n} AS view, entity_key, feature_name, value, event_ts FROM \"{t}\" WHERE entity_key IN ({marks})"
            for n, t in enumerate(self.tables))
        names = self.view_names
        try:
            rows = self._connection().execute(sql, keys * len(self.tables)).fetchall()
        except sqlite3.OperationalError as exc:  # a table not created yet: nothing materialized
            if "no such table" not in str(exc):
                raise
            return values, stamps
        columns, parse = self.columns, decode_value
        for view, key, feature, blob, ts in rows:
            j = columns.get((names[view], feature))
            if j is not None:
                i = index[key]
                values[i, j] = parse(blob)
                stamps[i, j] = ts
        return values, stamps


# ---------------------------------------------------------------- day vectors


@functools.lru_cache(maxsize=4096)
def day_hours(delivery_day: dt.date, timezone: str, gate_closure: dt.time) -> tuple[pd.DatetimeIndex, pd.Timestamp]:
    """The UTC delivery hours of a local day and its issue time (gate closure on D-1); cached, immutable."""
    day = pd.Timestamp(delivery_day)
    hours = pd.date_range(day.tz_localize(timezone), (day + pd.Timedelta(days=1)).tz_localize(timezone),
                          freq="h", inclusive="left").tz_convert("UTC")
    issue = (day - pd.Timedelta(days=1) + pd.Timedelta(hours=gate_closure.hour, minutes=gate_closure.minute)
             ).tz_localize(timezone).tz_convert("UTC")
    return hours, issue


class OnlineReader:
    """Lookups of one feature service's day vectors with freshness, given how to read its rows."""

    def __init__(self, service: str, names: list[str], kinds: list[str], ttl: dt.timedelta | None, rows):
        self.service, self.names, self.kinds, self.ttl, self.rows = service, names, kinds, ttl, rows

    def vectors(self, market: str, delivery_day: dt.date, timezone: str, *, gate_closure: dt.time = dt.time(12, 0),
                now: pd.Timestamp | None = None) -> DayVectors:
        """The feature vectors of every delivery hour of one local day as arrays, with freshness.

        The lookup itself, for a caller that feeds a model directly; :meth:`day` is the same as a frame.
        """
        hours, issue = day_hours(delivery_day, timezone, gate_closure)
        values, stamps = self.rows.read(market, hours)
        missing = np.isnan(values)
        stamps = np.where(missing, np.nan, stamps)  # a null value has no event time of its own
        as_of = min(issue.value / 1e9, time.time() if now is None else now.value / 1e9)
        newest, oldest = np.fmax.reduce(stamps, axis=1), np.fmin.reduce(stamps, axis=1)  # NaN only if all NaN
        age = as_of - oldest  # seconds; NaN when nothing is known
        n_missing = missing.sum(axis=1)
        fresh = age <= self.ttl.total_seconds() if self.ttl is not None else ~np.isnan(age)
        return DayVectors(market, hours, self.names, self.kinds, values, missing, newest, age, n_missing,
                          (n_missing > 0) | ~fresh)

    def day(self, market: str, delivery_day: dt.date, timezone: str, *, gate_closure: dt.time = dt.time(12, 0),
            now: pd.Timestamp | None = None) -> pd.DataFrame:
        """Feature vectors of every delivery hour of one local day (23, 24 or 25 rows), with freshness.

        Freshness columns: ``known_at`` (the latest time any feature of the row became known),
        ``feature_age`` (the issue time, D-1 gate closure or now if earlier, minus the oldest
        feature time), ``missing_features`` and ``stale`` (a feature missing, or older than the TTL).
        """
        return self.vectors(market, delivery_day, timezone, gate_closure=gate_closure, now=now).frame()


@dataclass(frozen=True)
class DayVectors:
    """One delivery day's feature vectors: ``values[i, j]`` is feature ``names[j]`` of hour ``delivery_start[i]``."""

    market: str
    delivery_start: pd.DatetimeIndex
    names: list[str]
    kinds: list[str]
    values: np.ndarray  # hours x features, NaN where missing
    missing: np.ndarray  # hours x features, bool
    known_at: np.ndarray  # epoch seconds per hour (NaN: nothing known)
    feature_age: np.ndarray  # seconds per hour, at the issue time (NaN: nothing known)
    missing_features: np.ndarray
    stale: np.ndarray

    def frame(self) -> pd.DataFrame:
        columns = {name: _typed(self.values[:, j], self.missing[:, j], kind)
                   for j, (name, kind) in enumerate(zip(self.names, self.kinds))}
        age = pd.to_timedelta(np.round(self.feature_age * 1e6), unit="us")
        return pd.DataFrame({"market": self.market, "delivery_start": self.delivery_start, **columns,
                             "known_at": _utc(self.known_at), "feature_age": age,
                             "missing_features": self.missing_features, "stale": np.asarray(self.stale)})


def _utc(epoch_seconds: np.ndarray) -> pd.DatetimeIndex:
    """Epoch seconds (NaN for unknown) as UTC timestamps (NaT), without pandas' slow unit parsing."""
    nanos = np.where(np.isnan(epoch_seconds), np.iinfo(np.int64).min, np.round(np.nan_to_num(epoch_seconds) * 1e9))
    return pd.DatetimeIndex(nanos.astype(np.int64).view("M8[ns]")).tz_localize("UTC")


def _typed(column: np.ndarray, missing: np.ndarray, kind: str) -> np.ndarray:
    """A feature column in the dtype pandas gives Feast's own online response: NaN/None where missing."""
    if kind == "Float64" or (kind == "Int64" and missing.any()):
        return column
    if kind == "Int64":
        return column.astype(np.int64)
    if kind == "Bool":
        return column.astype(bool) if not missing.any() else np.where(missing, None, column.astype(bool))
    raise FeatureStoreError(f"online feature of type {kind!r}; expected Float64, Int64 or Bool")


# ---------------------------------------------------------------- the online plan


def registry_fingerprint(path: str | Path) -> str | None:
    """A hash of the definitions in a Feast file registry (None if it cannot be read).

    The registry is a serialised ``feast.core.Registry``; its entities (field 1), feature views (6) and
    feature services (7) are each ``{spec = 1; meta = 2}``. The hash covers every spec, sorted, and no
    meta (materialization intervals and timestamps change with every materialization). Read with the
    protobuf wire format alone, so Feast need not be imported.
    """
    try:
        blob = Path(path).read_bytes()
        specs = []
        for field, body in _messages(blob):
            if field in (1, 6, 7):
                specs.extend(bytes([field]) + spec for f, spec in _messages(body) if f == 1)
    except (OSError, IndexError, ValueError):
        return None
    digest = hashlib.sha256()
    for spec in sorted(specs):
        digest.update(len(spec).to_bytes(8, "little") + spec)
    return digest.hexdigest()


def _messages(blob: bytes):
    """The length-delimited fields of one protobuf message as (field number, bytes); others skipped."""
    i, n = 0, len(blob)
    while i < n:
        tag, i = _varint(blob, i)
        field, wire = tag >> 3, tag & 7
        if wire == 2:
            size, i = _varint(blob, i)
            if i + size > n:
                raise ValueError("truncated message")
            yield field, blob[i:i + size]
            i += size
        elif wire == 0:
            _, i = _varint(blob, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def plan_path(feast_dir: Path, service: str) -> Path:
    return Path(feast_dir) / f"online_plan.{service}.json"


def save_plan(path: Path, plan: dict) -> None:
    """Write a plan atomically (a reader sees the old plan or the new one, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"plan_version": PLAN_VERSION, **plan}, indent=1), encoding="utf-8")
    os.replace(tmp, path)


class PlannedRows(SqliteRows):
    """:class:`SqliteRows` with the key templates the plan recorded."""

    def __init__(self, *args, templates: dict[str, tuple[bytes, bytes]], **kwargs):
        super().__init__(*args, **kwargs)
        self.templates = templates

    def template(self, market: str) -> tuple[bytes, bytes] | None:
        found = self.templates.get(market)
        if found is None:
            raise FeatureStoreError(f"market {market!r} has no entity-key template in the online plan "
                                    f"(markets: {sorted(self.templates)}); run `aurum features apply`")
        return found


def load_plan(feast_dir: Path, registry: Path, service: str, markets: list[str], *,
              cache: int = 0) -> tuple[OnlineReader | None, str]:
    """A reader from the saved plan of ``service``, or None and why not (see the module docstring)."""
    path = plan_path(feast_dir, service)
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"no online plan at {path}"
    except (OSError, ValueError) as exc:
        return None, f"unreadable online plan {path}: {exc}"
    if plan.get("plan_version") != PLAN_VERSION or plan.get("service") != service:
        return None, f"online plan {path} is of another version or service"
    if plan.get("fingerprint") != registry_fingerprint(registry):
        return None, f"the registry {registry} has changed since the online plan was made"
    if Path(plan["path"]) != Path(feast_dir) / Path(plan["path"]).name or not Path(plan["path"]).exists():
        return None, f"the online store {plan['path']} of the plan is not this home's"
    templates = {m: (bytes.fromhex(p), bytes.fromhex(s)) for m, (p, s) in plan["templates"].items()}
    absent = sorted(set(markets) - set(templates))
    if absent:
        return None, f"markets {absent} have no entity-key template in the online plan"
    columns = {(view, feature): j for view, feature, j in plan["columns"]}
    rows = PlannedRows(plan["path"], plan["tables"], plan["views"], columns, cache=cache, templates=templates)
    ttl = dt.timedelta(seconds=plan["ttl_seconds"]) if plan["ttl_seconds"] is not None else None
    return OnlineReader(service, plan["names"], plan["kinds"], ttl, rows), "online plan"


def planned_reader(settings: AurumSettings, service: str, markets: list[str], *,
                   cache: int = 0) -> tuple[OnlineReader | None, str]:
    """The Feast-free reader of ``service`` from the home's saved plan (local profile), or None and why not."""
    if settings.profile != "local":
        return None, f"profile {settings.profile!r} keeps its registry in a database"
    feast_dir = settings.home_dir / "feast"
    return load_plan(feast_dir, feast_dir / "registry.db", service, markets, cache=cache)
