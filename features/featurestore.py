"""The Feast adapter: the feature store over the derived Iceberg feature tables.

The only module that imports ``feast`` (besides the declarations in ``feature_repo/``, which Feast
executes). It renders the profile's ``feature_repo/feature_store.<profile>.yaml`` through
``${VAR}`` values taken from the settings, so a user never edits paths, and wraps apply, plan,
materialize, training-set retrieval and online lookups.

``PrunedDuckDBOfflineStore`` is Feast's DuckDB offline store with one change: Feast reads an
``IcebergSource`` whole (``table.scan().to_arrow()``) for every request; this store pushes the
requested markets, the delivery window and the event-time window (``known_at`` between the
earliest issue time minus the view's TTL and the latest issue time) into the Iceberg scan and
reads only the needed columns. The point-in-time join itself is Feast's, unchanged.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import importlib.util
import os
import struct
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from feast import FeatureStore
from feast.data_source import DataSource
from feast.errors import FeatureServiceNotFoundException
from feast.feature_view import FeatureView
from feast.infra.data_sources.contrib.iceberg_catalog.iceberg_source import IcebergSource
from feast.infra.offline_stores import duckdb as feast_duckdb
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.offline_stores.ibis import (
    get_historical_features_ibis,
    pull_all_from_table_or_query_ibis,
    pull_latest_from_table_or_query_ibis,
)
from pydantic import StrictStr

from features import online
from features.errors import FeatureStoreError, OnlineStoreUnavailableError
from features.lake import all_of, between, one_of
from features.online import DayVectors, OnlineReader, day_hours
from features.settings import AurumSettings

ENTITY_TIMESTAMP = "event_timestamp"
_day_hours = day_hours  # the name callers used before the Feast-free reader moved to features.online
__all__ = ["DayVectors", "FeatureStoreError", "OnlineFeatures", "OnlineReader"]


def feature_repo_path() -> Path:
    spec = importlib.util.find_spec("feature_repo")
    if spec is None or not spec.submodule_search_locations:
        raise FeatureStoreError("the feature_repo package is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def feast_environment(settings: AurumSettings) -> dict[str, str]:
    """The ``${VAR}`` values of the feature_store yaml and the declarations, from the settings."""
    props = settings.catalog_properties()
    env = {
        "AURUM_FEAST_PROJECT": settings.feast_project,
        "AURUM_ICEBERG_CATALOG": settings.catalog.name,
        "AURUM_ICEBERG_URI": props.get("uri", ""),
        "AURUM_ICEBERG_WAREHOUSE": props.get("warehouse", ""),
        "AURUM_ICEBERG_TYPE": props.get("type", "sql"),
    }
    feast_dir = settings.home_dir / "feast"
    if settings.profile == "local":
        env |= {"AURUM_FEAST_REGISTRY": str(feast_dir / "registry.db"),
                "AURUM_FEAST_ONLINE_PATH": str(feast_dir / "online.db")}
    else:
        redis = settings.redis_url.removeprefix("redis://").split("/", 1)[0]
        env |= {"AURUM_FEAST_REGISTRY": settings.postgres_url, "AURUM_FEAST_REDIS": redis}
    return env


@contextlib.contextmanager
def _environment(settings: AurumSettings) -> Iterator[dict[str, str]]:
    env = feast_environment(settings)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _yaml(settings: AurumSettings) -> Path:
    return feature_repo_path() / f"feature_store.{settings.profile}.yaml"


def open_store(settings: AurumSettings) -> FeatureStore:
    """A FeatureStore on the profile's registry, offline and online stores."""
    if settings.profile == "local":
        (settings.home_dir / "feast").mkdir(parents=True, exist_ok=True)
    with _environment(settings):
        return FeatureStore(repo_path=str(feature_repo_path()), fs_yaml_file=_yaml(settings))


@contextlib.contextmanager
def _in_repo(settings: AurumSettings) -> Iterator[Path]:
    """Feast parses the repo from inside it, importing its files as top-level modules."""
    repo = feature_repo_path()
    cwd = os.getcwd()
    # Declarations read the settings when imported: forget earlier imports so they are read anew.
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).parent == repo and name != "feature_repo":
            del sys.modules[name]
    if str(repo) not in sys.path:
        sys.path.append(str(repo))  # appended, as the feast CLI does, so `features` stays Aurum's package
    with _environment(settings):
        try:
            yield repo
        finally:
            os.chdir(cwd)  # Feast changes into the repo


def apply(settings: AurumSettings) -> FeatureStore:
    """Register the declarations of ``feature_repo/`` (entities, sources, views, services)."""
    from feast.repo_operations import apply_total

    store = open_store(settings)
    with _in_repo(settings) as repo:
        apply_total(store.config, repo, skip_source_validation=False)
    return open_store(settings)


def plan(settings: AurumSettings) -> None:
    """Print what ``apply`` would change."""
    from feast.repo_operations import plan as feast_plan

    store = open_store(settings)
    with _in_repo(settings) as repo:
        feast_plan(store.config, repo, skip_source_validation=False)


def drop_project(store: FeatureStore) -> None:
    """Remove this project's online tables or keys and its registry entry, and nothing else.

    ``FeatureStore.teardown()`` tears down every project of a shared SQL registry.
    """
    store._get_provider().teardown_infra(store.project, store.list_feature_views(), store.list_entities())
    store.registry.delete_project(store.project, commit=True)


def materialize(store: FeatureStore, start: dt.datetime | None = None, end: dt.datetime | None = None) -> None:
    """Load the latest feature rows into the online store: ``[start, end]`` or incrementally up to ``end``."""
    end = end or dt.datetime.now(dt.timezone.utc)
    if start is None:
        store.materialize_incremental(end_date=end)
    else:
        store.materialize(start_date=start, end_date=end)


def _feature_service(store: FeatureStore, service: str):
    """The registry's feature service; an unknown service is a clear error."""
    try:
        return store.get_feature_service(service)
    except FeatureServiceNotFoundException as exc:
        known = sorted(s.name for s in store.list_feature_services())
        raise FeatureStoreError(f"unknown feature service {service!r}; the registry has {known}") from exc


def _refs(fs) -> list[str]:
    return [f"{p.name_to_use()}:{f.name}" for p in fs.feature_view_projections for f in p.features]


def service_features(store: FeatureStore, service: str) -> list[str]:
    """Feature names (``view:feature``) of a feature service; an unknown service is a clear error."""
    return _refs(_feature_service(store, service))


def _selected(refs: list[str], service: str, features: list[str] | None) -> list[str]:
    """The service's feature names, or the requested subset; anything else is a clear error."""
    offered = [f.split(":", 1)[1] for f in refs]
    if features is None:
        return offered
    unknown = [f for f in features if f not in offered]
    if unknown:
        raise FeatureStoreError(f"features {unknown!r} are not offered by service {service!r}; it offers {offered}")
    return list(features)


def training_set(
    store: FeatureStore, service: str, entity_rows: pd.DataFrame, features: list[str] | None = None
) -> pd.DataFrame:
    """Point-in-time features for rows of ``market``, ``delivery_start`` and ``event_timestamp`` (issue time).

    ``missing_features`` counts, per row, the features not known at its issue time (missing values
    are never filled). A request where nothing at all is known is an error, not a frame of NaNs.
    """
    missing = {"market", "delivery_start", ENTITY_TIMESTAMP} - set(entity_rows.columns)
    if missing:
        raise FeatureStoreError(f"entity rows lack columns {sorted(missing)}; expected market, delivery_start, "
                                f"{ENTITY_TIMESTAMP} (the issue time)")
    fs = _feature_service(store, service)  # once: each registry read deserialises the service anew
    names = _selected(_refs(fs), service, features)
    out = store.get_historical_features(entity_df=entity_rows, features=fs).to_df()
    out = out[[*entity_rows.columns, *names]]
    out["missing_features"] = out[names].isna().sum(axis=1)
    if len(out) and (out["missing_features"] == len(names)).all():
        ds = pd.to_datetime(entity_rows["delivery_start"], utc=True)
        raise FeatureStoreError(
            f"no feature of service {service!r} is known for markets {sorted(set(entity_rows['market']))} "
            f"with delivery from {ds.min().isoformat()} to {ds.max().isoformat()} at the issue times given; "
            "compute and apply features for that window first (aurum features compute)")
    return out


class OnlineFeatures(OnlineReader):
    """Online lookups of one feature service, with the registry read once (not on every request).

    Feast deserialises registry objects (with runtime type checks) on each lookup of a service or
    view, and builds its response feature by feature, which costs several times the online read
    itself. A long-lived reader (a service process) resolves the service once and, on the SQLite
    and Redis online stores, reads the rows straight from the store in Feast's own layout (Feast's
    entity-key serialisation, table and hash-field names, ``ValueProto`` values): one query or one
    pipelined round trip per lookup. Other online stores go through ``get_online_features``.
    ``tests/features/test_featurestore*.py`` check both paths give Feast's own answer. The lookups
    themselves are :class:`features.online.OnlineReader`'s, which a service can also build from a saved
    plan without importing Feast (:meth:`plan`).
    """

    def __init__(self, store: FeatureStore, service: str, features: list[str] | None = None, *, direct: bool = True,
                 cache: int = 0):
        self.store = store
        offered = service_features(store, service)
        names = _selected(offered, service, features)
        refs = dict((r.split(":", 1)[1], r) for r in offered)
        self.refs = [refs[n] for n in names]
        wanted = {r.split(":", 1)[0] for r in self.refs}
        views = [v for v in store.list_feature_views() if v.name in wanted]
        ttls = [v.ttl for v in views if v.ttl]
        kinds = {(v.name, f.name): str(f.dtype) for v in views for f in v.features}
        rows = (direct and _direct_rows(store, views, self.refs, cache)) or _FeastRows(store, self.refs)
        super().__init__(service, names, [kinds[tuple(r.split(":", 1))] for r in self.refs],
                         min(ttls) if ttls else None, rows)

    def plan(self, markets: list[str]) -> dict | None:
        """What :func:`features.online.load_plan` needs to read this service without Feast, with the key
        templates of ``markets``; None unless the whole service is read directly from a SQLite file
        registry's online store."""
        rows, registry = self.rows, self.store.config.registry.path
        if type(rows) is not _SqliteRows or not Path(str(registry)).is_file():
            return None
        templates = {}
        for m in markets:
            found = rows.template(m)
            if found is None:
                return None
            templates[m] = [found[0].hex(), found[1].hex()]
        return {"service": self.service, "fingerprint": online.registry_fingerprint(registry),
                "names": self.names, "kinds": self.kinds,
                "ttl_seconds": self.ttl.total_seconds() if self.ttl is not None else None,
                "path": rows.path, "tables": rows.tables, "views": rows.view_names,
                "columns": [[view, feature, j] for (view, feature), j in rows.columns.items()],
                "templates": templates}


def save_online_plan(settings: AurumSettings, reader: OnlineFeatures, markets: list[str]) -> Path | None:
    """Save ``reader``'s plan for Feast-free service starts (local profile); its path, or None if it has none."""
    plan = reader.plan(markets)
    if plan is None:
        return None
    path = online.plan_path(settings.home_dir / "feast", reader.service)
    online.save_plan(path, plan)
    return path


class _FeastRows:
    """Any online store, through ``FeatureStore.get_online_features``."""

    def __init__(self, store: FeatureStore, refs: list[str]):
        self.store, self.refs = store, refs
        self.names = [r.split(":", 1)[1] for r in refs]

    def read(self, market: str, hours: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
        """Values (hours x features, NaN when absent) and their event times (epoch seconds, NaN)."""
        response = self.store.get_online_features(
            features=self.refs, entity_rows={"market": [market] * len(hours),
                                             "delivery_start": list(hours.to_pydatetime())})
        raw = response.to_dict(include_event_timestamps=True)
        values = np.array([[np.nan if v is None else float(v) for v in raw[n]] for n in self.names]).T
        stamps = np.array([raw[f"{n}__ts"] for n in self.names], dtype=float).T
        return values, np.where(np.isnan(values), np.nan, stamps)


def _direct_rows(store: FeatureStore, views: list[FeatureView], refs: list[str], cache: int = 0):
    """A direct reader for the SQLite or Redis online store, or None for any other store; ``cache`` days
    of SQLite rows are kept until the store changes (see :class:`_SqliteRows`)."""
    from feast.infra.online_stores.redis import RedisOnlineStore
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    online = store._get_provider().online_store
    if type(online) is SqliteOnlineStore:
        return _SqliteRows(store, online, views, refs, cache=cache)
    if type(online) is RedisOnlineStore:
        return _RedisRows(store, online, views, refs)
    return None


class _KeyedRows(online.KeyedRows):
    """Feast's side of the direct readers: the views' layout checked, key templates made by Feast's own
    entity-key serialisation."""

    def __init__(self, store: FeatureStore, views: list[FeatureView], refs: list[str]):
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        online.KeyedRows.__init__(self, {tuple(r.split(":", 1)): j for j, r in enumerate(refs)})  # (view, feature) -> column
        self.config = store.config
        self.views = sorted(views, key=lambda v: v.name)
        self._serialize, self._key, self._value = serialize_entity_key, EntityKey, Value
        join_keys = [c.name for c in self.views[0].entity_columns]
        if sorted(join_keys) != ["delivery_start", "market"] or any(
                sorted(c.name for c in v.entity_columns) != sorted(join_keys) for v in self.views):
            raise FeatureStoreError(f"online reader expects views keyed by market and delivery_start; got "
                                    f"{ {v.name: [c.name for c in v.entity_columns] for v in self.views} }")

    def key(self, market: str, seconds: int) -> bytes:
        value = self._value
        return self._serialize(self._key(join_keys=["market", "delivery_start"],
                                         entity_values=[value(string_val=market), value(unix_timestamp_val=seconds)]),
                               entity_key_serialization_version=self.config.entity_key_serialization_version)

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - one template per market, for the reader's lifetime
    def template(self, market: str) -> tuple[bytes, bytes] | None:
        """The market's serialised key around its 8-byte timestamp, or None if that cannot be found.

        Feast serialises the two join keys and values in a fixed layout in which only the packed
        delivery timestamp differs between the hours of one market, so keys are spliced from one
        Feast-made template; checked on two further timestamps before use.
        """
        probe = 0x0123456789ABCDE
        packed = struct.pack("<q", probe)
        key = self.key(market, probe)
        if key.count(packed) != 1:
            return None
        prefix, suffix = key.split(packed)
        for t in (0, 1_700_000_000):
            if self.key(market, t) != prefix + struct.pack("<q", t) + suffix:
                return None
        return prefix, suffix


class _SqliteRows(_KeyedRows, online.SqliteRows):
    """Feast's SQLite online tables read directly (:class:`features.online.SqliteRows`)."""

    def __init__(self, store: FeatureStore, online_store, views: list[FeatureView], refs: list[str], *, cache: int = 0):
        from feast.infra.online_stores.sqlite import _table_id

        _KeyedRows.__init__(self, store, views, refs)
        versioned = self.config.registry.enable_online_feature_view_versioning
        online.SqliteRows.__init__(self, online_store._get_db_path(self.config),
                                   [_table_id(self.config.project, v, versioned) for v in self.views],
                                   [v.name for v in self.views], self.columns, cache=cache)


def _fail_fast(online, config):
    """Feast's Redis client, or for a single Redis server the same connection with short timeouts and no
    retries: a lookup of a store that is down fails within a second instead of the client's three retries
    with backoff (3-6 s, during which a service worker would wait)."""
    from feast.infra.online_stores.redis import RedisType
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    if config.redis_type != RedisType.redis:
        return online._get_client(config)
    nodes, kwargs = online._parse_connection_string(config.connection_string)
    return Redis(**kwargs, host=nodes[0]["host"], port=nodes[0]["port"], socket_connect_timeout=0.5,
                 socket_timeout=2.0, retry=Retry(NoBackoff(), 0))


class _RedisRows(_KeyedRows):
    """Reads Feast's Redis hashes (one per entity key, fields hashed per view and feature) in one pipeline."""

    def __init__(self, store: FeatureStore, online, views: list[FeatureView], refs: list[str]):
        from feast.infra.online_stores.helpers import _mmh3
        from google.protobuf.timestamp_pb2 import Timestamp

        from redis import exceptions as redis_errors

        super().__init__(store, views, refs)
        self.client = _fail_fast(online, self.config.online_store)
        self._outage = (redis_errors.ConnectionError, redis_errors.TimeoutError)
        self.project = self.config.project.encode()
        fields, targets = [], []
        for v in self.views:
            for (view, feature), j in self.columns.items():
                if view == v.name:
                    fields.append(_mmh3(f"{view}:{feature}"))
                    targets.append(j)
        self.n_values = len(fields)
        self.ts_fields = [f"_ts:{v.name}" for v in self.views]
        self.fields = fields + self.ts_fields
        self.targets = targets
        view_of = {v.name: n for n, v in enumerate(self.views)}
        self.target_view = [view_of[view] for (view, _), j in sorted(self.columns.items(), key=lambda kv: kv[1])]
        self._timestamp = Timestamp

    def read(self, market: str, hours: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
        """Values and event times, as :meth:`features.online.SqliteRows.read`.

        Raises:
            OnlineStoreUnavailableError: Redis refused, reset or timed out (a ``ConnectionError``).
        """
        keys = [k + self.project for k in self.keys(market, hours)]
        values, stamps = self.empty(len(keys))
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for k in keys:
                    pipe.hmget(k, self.fields)
                replies = pipe.execute()
        except self._outage as exc:
            raise OnlineStoreUnavailableError(f"the Redis online store does not answer: {type(exc).__name__}: {exc}") from exc
        ts, parse = self._timestamp(), online.decode_value
        for i, reply in enumerate(replies):
            view_ts = []
            for blob in reply[self.n_values:]:
                if blob:
                    ts.ParseFromString(blob)
                    view_ts.append(ts.seconds + ts.nanos / 1e9)
                else:
                    view_ts.append(np.nan)
            for blob, j in zip(reply[:self.n_values], self.targets):
                if blob:
                    values[i, j] = parse(blob)
                    stamps[i, j] = view_ts[self.target_view[j]]
        return values, stamps


def online_day(
    store: FeatureStore, service: str, market: str, delivery_day: dt.date, timezone: str,
    *, gate_closure: dt.time = dt.time(12, 0), features: list[str] | None = None,
    now: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """One lookup through a fresh :class:`OnlineFeatures` (fine for one-off calls)."""
    return OnlineFeatures(store, service, features).day(market, delivery_day, timezone,
                                                        gate_closure=gate_closure, now=now)


# ---------------------------------------------------------------- the pruned offline store


class PrunedDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """Config of :class:`PrunedDuckDBOfflineStore` (Feast finds it by this exact name, in this module)."""

    type: StrictStr = "features.featurestore.PrunedDuckDBOfflineStore"


def _reader(plan: dict[int, tuple]) -> Callable[[DataSource, str], object]:
    """A Feast data-source reader that scans Iceberg sources with the planned filter and columns."""
    import ibis

    def read(source: DataSource, repo_path: str):
        if isinstance(source, IcebergSource) and id(source) in plan and source.catalog_type != "rest":
            row_filter, columns = plan[id(source)]
            table = source.get_catalog_client().load_table(f"{source.namespace}.{source.iceberg_table}")
            kwargs = {"row_filter": row_filter}
            if columns:
                kwargs["selected_fields"] = tuple(dict.fromkeys(columns))
            return ibis.memtable(table.scan(**kwargs).to_arrow())
        return feast_duckdb._read_data_source(source, repo_path)

    return read


class _EntitySummary:
    """Bounds and distinct values of the entity frame's columns, each computed once per request."""

    def __init__(self, entity_df: pd.DataFrame):
        self.df = entity_df
        self._memo: dict[str, tuple] = {}

    def column(self, name: str) -> tuple:
        """``("range", lo, hi)``, ``("values", set)`` or ``("empty",)``."""
        if name not in self._memo:
            values = self.df[name].dropna()
            if values.empty:
                self._memo[name] = ("empty",)
            elif pd.api.types.is_datetime64_any_dtype(values):
                self._memo[name] = ("range", pd.Timestamp(values.min()), pd.Timestamp(values.max()))
            else:
                self._memo[name] = ("values", set(map(str, values.unique())))
        return self._memo[name]

    def issued(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        if ENTITY_TIMESTAMP not in self._memo:
            issued = pd.to_datetime(self.df[ENTITY_TIMESTAMP], utc=True)
            self._memo[ENTITY_TIMESTAMP] = (issued.min(), issued.max())
        return self._memo[ENTITY_TIMESTAMP]


def _view_plan(view: FeatureView, feature_refs: list[str], entities: _EntitySummary):
    source = view.batch_source
    to_source = {v: k for k, v in (source.field_mapping or {}).items()}
    col = lambda c: to_source.get(c, c)  # noqa: E731
    keys = view.projection.join_key_map or {e.name: e.name for e in view.entity_columns}
    terms = []
    for view_key, df_key in keys.items():
        summary = entities.column(df_key)
        if summary[0] == "range":
            terms.append(between(col(view_key), summary[1], summary[2]))
        elif summary[0] == "values":
            terms.append(one_of(col(view_key), summary[1]))
    first, last = entities.issued()
    terms.append(between(source.timestamp_field, first - view.ttl if view.ttl else None, last))
    prefix = view.projection.name_to_use() + ":"
    features = [r.split(":", 1)[1] for r in feature_refs if r.startswith(prefix)]
    columns = [col(k) for k in keys] + [col(f) for f in features] + [source.timestamp_field]
    if source.created_timestamp_column:
        columns.append(source.created_timestamp_column)
    return all_of(*terms), columns


def _time_plan(source: DataSource, timestamp_field: str, start, end) -> dict[int, tuple]:
    return {id(source): (between(timestamp_field, start and pd.Timestamp(start), end and pd.Timestamp(end)), None)}


class PrunedDuckDBOfflineStore(DuckDBOfflineStore):
    """DuckDB offline store whose Iceberg reads follow the request, not the table size."""

    asof_join = True  # point-in-time joins in DuckDB (False: Feast's own ibis join, kept for comparison)

    @staticmethod
    def get_historical_features(config, feature_views, feature_refs, entity_df, registry, project,
                                full_feature_names=False, filter_by_created_timestamp=False):
        if not isinstance(entity_df, pd.DataFrame) or ENTITY_TIMESTAMP not in entity_df.columns:
            return DuckDBOfflineStore.get_historical_features(
                config, feature_views, feature_refs, entity_df, registry, project,
                full_feature_names, filter_by_created_timestamp)
        plan: dict[int, tuple] = {}
        shared: set[int] = set()
        entities = _EntitySummary(entity_df)
        for view in feature_views:
            if isinstance(view.batch_source, IcebergSource):
                key = id(view.batch_source)
                if key in plan:
                    shared.add(key)
                plan[key] = _view_plan(view, feature_refs, entities)
        for key in shared:  # one source behind two views: read it whole rather than for one view only
            del plan[key]
        # Every requested feature belongs to one of these views: no on-demand view is involved.
        plain = {r.split(":", 1)[0] for r in feature_refs} <= {v.projection.name_to_use() for v in feature_views}
        if PrunedDuckDBOfflineStore.asof_join and not filter_by_created_timestamp and plain and \
                all(id(v.batch_source) in plan for v in feature_views):
            return _AsofRetrievalJob(feature_views, feature_refs, entity_df, plan, full_feature_names)
        oc = config.offline_store
        return get_historical_features_ibis(
            config=config, feature_views=feature_views, feature_refs=feature_refs, entity_df=entity_df,
            registry=registry, project=project, full_feature_names=full_feature_names,
            data_source_reader=_reader(plan), data_source_writer=feast_duckdb._write_data_source,
            staging_location=oc.staging_location,
            staging_location_endpoint_override=oc.staging_location_endpoint_override,
            filter_by_created_timestamp=filter_by_created_timestamp,
        )

    @staticmethod
    def pull_latest_from_table_or_query(config, data_source, join_key_columns, feature_name_columns,
                                        timestamp_field, created_timestamp_column, start_date, end_date):
        return pull_latest_from_table_or_query_ibis(**_pull_arguments(
            config, data_source, join_key_columns, feature_name_columns, timestamp_field,
            created_timestamp_column, start_date, end_date))

    @staticmethod
    def pull_all_from_table_or_query(config, data_source, join_key_columns, feature_name_columns,
                                     timestamp_field, created_timestamp_column=None, start_date=None, end_date=None):
        return pull_all_from_table_or_query_ibis(**_pull_arguments(
            config, data_source, join_key_columns, feature_name_columns, timestamp_field,
            created_timestamp_column, start_date, end_date))


class _AsofRetrievalJob(RetrievalJob):
    """Feast's point-in-time join, run as one DuckDB ``ASOF LEFT JOIN`` per view over the pruned scans.

    Same answer as Feast's join (``tests/features/test_featurestore.py`` compares them): for each
    entity row and view, the row with the latest event time at or before the entity timestamp, ties
    broken by the latest created time, and nothing when that row is older than the view's TTL. Rows
    come back in the order of the entity frame.
    """

    def __init__(self, feature_views, feature_refs, entity_df: pd.DataFrame, plan: dict[int, tuple],
                 full_feature_names: bool):
        super().__init__()
        self.views, self.refs, self.plan = feature_views, feature_refs, plan
        self.entity_df = entity_df
        self._full_feature_names = full_feature_names
        issued = pd.to_datetime(entity_df[ENTITY_TIMESTAMP], utc=True)
        self._metadata = RetrievalMetadata(
            features=feature_refs, keys=list(set(entity_df.columns) - {ENTITY_TIMESTAMP}),
            min_event_timestamp=issued.min().to_pydatetime(), max_event_timestamp=issued.max().to_pydatetime())

    def _scan(self, view) -> pa.Table:
        source = view.batch_source
        row_filter, columns = self.plan[id(source)]
        table = source.get_catalog_client().load_table(f"{source.namespace}.{source.iceberg_table}")
        return table.scan(row_filter=row_filter, selected_fields=tuple(dict.fromkeys(columns))).to_arrow()

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        import duckdb

        entities = self.entity_df.copy()
        entities[ENTITY_TIMESTAMP] = pd.to_datetime(entities[ENTITY_TIMESTAMP], utc=True)
        entities["__row"] = np.arange(len(entities))
        # The views' pruned scans run side by side: file reads release the GIL.
        with ThreadPoolExecutor(max_workers=max(1, len(self.views))) as pool:
            scans = list(pool.map(self._scan, self.views))
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.register("e", entities)
            select = ["e.__row"]
            joins = []
            for k, view in enumerate(self.views):
                source = view.batch_source
                con.register(f"raw{k}", scans[k])
                to_source = {v: c for c, v in (source.field_mapping or {}).items()}
                col = lambda c: to_source.get(c, c)  # noqa: E731
                keys = view.projection.join_key_map or {e.name: e.name for e in view.entity_columns}
                ts, created = source.timestamp_field, source.created_timestamp_column
                order = f'"{ts}" DESC' + (f', "{created}" DESC' if created else "")
                partition = ", ".join(f'"{col(key)}"' for key in keys)
                con.execute(f'CREATE TEMP VIEW f{k} AS SELECT * FROM raw{k} QUALIFY row_number() OVER '
                            f'(PARTITION BY {partition}, "{ts}" ORDER BY {order}) = 1')
                on = " AND ".join(f'e."{ek}" = f{k}."{col(vk)}"' for vk, ek in keys.items())
                joins.append(f'ASOF LEFT JOIN f{k} ON {on} AND e."{ENTITY_TIMESTAMP}" >= f{k}."{ts}"')
                fresh = (f'f{k}."{ts}" >= e."{ENTITY_TIMESTAMP}" - INTERVAL {int(view.ttl.total_seconds())} SECOND'
                         if view.ttl else "TRUE")
                prefix = view.projection.name_to_use() + ":"
                name = view.projection.name_alias or view.name
                for ref in self.refs:
                    if ref.startswith(prefix):
                        feature = ref.split(":", 1)[1]
                        out = f"{name}__{feature}" if self._full_feature_names else feature
                        select.append(f'CASE WHEN {fresh} THEN f{k}."{col(feature)}" END AS "{out}"')
            sql = f"SELECT {', '.join(select)} FROM e {' '.join(joins)} ORDER BY e.__row"
            features = con.sql(sql).to_arrow_table().drop_columns(["__row"]).to_pandas()
        finally:
            con.close()
        # The entity columns as given (the timestamp in UTC, as Feast returns it), then the features.
        return pd.concat([entities.drop(columns="__row").reset_index(drop=True), features], axis=1)

    def _to_arrow_internal(self, timeout: int | None = None):
        return pa.Table.from_pandas(self._to_df_internal(timeout), preserve_index=False)

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> list:
        return []

    @property
    def metadata(self) -> RetrievalMetadata:
        return self._metadata

    def persist(self, storage, allow_overwrite: bool = False, timeout: int | None = None):
        import ibis

        feast_duckdb._write_data_source(ibis.memtable(self.to_arrow()), storage.to_data_source(), None,
                                        "overwrite", allow_overwrite)


def _pull_arguments(config, data_source, join_key_columns, feature_name_columns, timestamp_field,
                    created_timestamp_column, start_date, end_date) -> dict:
    """Arguments of Feast's ibis pulls (materialization) with the time window pushed into the scan."""
    oc = config.offline_store
    return dict(
        config=config, data_source=data_source, join_key_columns=join_key_columns,
        feature_name_columns=feature_name_columns, timestamp_field=timestamp_field,
        created_timestamp_column=created_timestamp_column, start_date=start_date, end_date=end_date,
        data_source_reader=_reader(_time_plan(data_source, timestamp_field, start_date, end_date)),
        data_source_writer=feast_duckdb._write_data_source, staging_location=oc.staging_location,
        staging_location_endpoint_override=oc.staging_location_endpoint_override,
    )
