"""Batch scoring (``aurum score``): every local delivery day of a window forecast with a market's
``champion``, exactly as the forecast service would have on each D-1, and archived in
``serving.forecasts`` with source ``batch``.

For delivery day D the inputs are D's delivery hours with issue time = gate closure on D-1 (the
market's clock), and the features are read point in time from the offline store through the model's
feature service (``features.featurestore.training_set``), so nothing published after the issue time
reaches a forecast. The champion's pyfunc then predicts the quantiles (0.5 always among them: it is
the archived ``forecast``).

A job runs in three phases, whatever the engine:

1. plan (this process): the market, the window, the champion's version, and the days not yet
   archived for that version (a re-run skips those: idempotent per market, day and model version);
2. score: features and forecasts of every pending day, nothing written yet. A day on which one of
   the model's inputs is unknown on every hour cannot be scored (the service would refuse it too):
   the job stops with a ``FeatureStoreError`` naming the days and inputs, and nothing is archived;
3. archive: one atomic commit per chunk of ``chunk_days`` days (``serving.archive.write_days``),
   which also skips days a concurrent run archived meanwhile. A crash loses at most the chunk in
   flight; a re-run archives the rest, without duplicates. The (market, month) batch partitions
   touched are compacted at the end, a year of them per commit (:func:`compact_batch_months`).

Engines: ``local`` (default) scores in this process, reading features for up to ``READ_DAYS`` days at
a time. ``ray`` runs phase 2 on an actor pool (each actor opens the feature store and loads the model
once, then reads its chunks' features from Iceberg through the feature service and scores them) and
phase 3 in a Ray writer actor; the forecasts are the same. Ray is imported only when that engine runs.

Feast and MLflow are imported when scoring starts, not with the module, so a Ray writer actor, which
only commits, does not pay for them (about 7 s of imports here).

Entity rows: the few lines of :func:`issue_rows` repeat what ``training.dataset.delivery_rows`` does
(serving may not import training); the rule itself, the market clock, is ``Market.on_day_before`` in
``features``, so both stages share it. ``tests/serving/test_score.py`` checks both give the same rows.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import pickle
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.errors import AurumError, CommitConflictError, ConfigurationError, InvalidWindowError, RegistryError
from features.featuretables import GROUPS
from features.lake import FORECASTS_TABLE, Lake, all_of, equals, new_batch_id, window_filter
from features.marketdata import MarketData
from features.markets import Market
from features.settings import AurumSettings
from models.featureframe import FEATURE_SERVICE
from models.forecaster import DEFAULT_QUANTILES, check_quantiles
from serving.archive import (
    MEDIAN,
    compact,
    ensure_forecasts_table,
    forecast_frame,
    read_forecasts,
    to_forecast_table,
    write_days,
)

log = logging.getLogger(__name__)

CHAMPION = "champion"
ENGINES = ("local", "ray")
DEFAULT_CHUNK_DAYS = 31  # a commit per month of days: 12 a year (7-day chunks: 53 commits, most of a year's time)
READ_DAYS = 92  # local engine: delivery days per feature read (bounds memory; one read costs ~0.3-0.7 s)
COMPACT_MONTHS = 12  # months of batch partitions rewritten per compaction commit (bounds its memory)
ENTITY_TIMESTAMP = "event_timestamp"  # features.featurestore.ENTITY_TIMESTAMP (feast is imported only when scoring)
BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
FEATURE_SNAPSHOT_TABLE = GROUPS[0].ident  # features.price_features: its revisions move forecasts most

Progress = Callable[[str, int, int], None]  # (phase "score" | "archive", days done, days in the phase)


@dataclass(frozen=True)
class ScorePlan:
    """What a job will do: the market, its champion's version and the days still to score, in chunks."""

    settings: AurumSettings = field(repr=False)
    market: Market
    first_day: dt.date
    last_day: dt.date
    model_name: str
    model_version: str
    levels: tuple[float, ...]
    batch_id: str
    tenant: str
    chunk_days: int
    days: tuple[dt.date, ...]  # to score, increasing
    archived: tuple[dt.date, ...]  # already archived for this model version

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.model_version}"

    def chunks(self) -> list[tuple[dt.date, ...]]:
        """The days to score in archive commits of ``chunk_days`` days each."""
        return [self.days[i:i + self.chunk_days] for i in range(0, len(self.days), self.chunk_days)]

    def request_id(self, chunk: Sequence[dt.date]) -> str:
        """The ``request_id`` of a chunk's rows: the batch and the chunk's first day (engine-independent)."""
        return f"{self.batch_id}/{chunk[0].isoformat()}"


@dataclass
class ScoreResult:
    """What a job archived."""

    batch_id: str
    market: str
    model_name: str
    model_version: str
    engine: str
    first_day: dt.date
    last_day: dt.date
    days_scored: tuple[dt.date, ...]
    days_skipped: tuple[dt.date, ...]  # archived before the job, or by a concurrent run meanwhile
    rows: int
    degraded_rows: int
    seconds: float

    def render(self) -> str:
        return (f"batch {self.batch_id}: {self.market} with {self.model_name} version {self.model_version} "
                f"({CHAMPION}), engine {self.engine}\n"
                f"  days {self.first_day} .. {self.last_day}: {len(self.days_scored)} scored, "
                f"{len(self.days_skipped)} already archived; {self.rows:,} rows ({self.degraded_rows:,} degraded) "
                f"in {self.seconds:.1f} s")


# ---------------------------------------------------------------- phase 1: plan


def model_name(settings: AurumSettings, market: str) -> str:
    """The registered model of a market (the naming rule of the training stage)."""
    return f"{settings.mlflow.model_prefix}{market}"


def open_registry(settings: AurumSettings) -> None:
    """Point MLflow at the profile's store and check that it answers.

    Raises:
        RegistryError: a local SQLite store that does not exist yet (nothing was ever trained).
        RegistryUnavailableError: the store does not answer.
    """
    from models import mlflow_model as ml

    uri = settings.mlflow_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise RegistryError(f"no model registry at {uri[len('sqlite:///'):]!r}; train and approve a model first "
                            "(aurum train --market ...)")
    ml.configure(uri)
    ml.ping(_display(uri))


def _display(uri: str) -> str:
    """A store URI without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(uri).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a SQLAlchemy URL (a file path, http): nothing to hide
        return uri


def local_day_hours(market: Market, days: Sequence[dt.date]) -> pd.Series:
    """UTC delivery hours of the given local days of the market (23, 24 or 25 per day), increasing."""
    days = sorted(set(days))
    lo = pd.Timestamp(days[0]).tz_localize(market.timezone)
    hi = pd.Timestamp(days[-1] + dt.timedelta(days=1)).tz_localize(market.timezone)
    hours = pd.Series(pd.date_range(lo, hi, freq="h", inclusive="left").tz_convert("UTC"))
    keep = hours.dt.tz_convert(market.timezone).dt.date.isin(set(days))
    return hours[keep.to_numpy()].reset_index(drop=True)


def issue_rows(market: Market, days: Sequence[dt.date]) -> pd.DataFrame:
    """Entity rows of a feature-service read: every delivery hour of ``days`` with its issue time
    (gate closure on D-1, local), as the service issues day D."""
    hours = local_day_hours(market, days)
    return pd.DataFrame({"market": market.code, "delivery_start": hours,
                         ENTITY_TIMESTAMP: market.on_day_before(hours, market.gate_closure)})


def archived_days(lake: Lake, market: Market, name: str, version: str, first: dt.date, last: dt.date) -> set[dt.date]:
    """Local days in ``[first, last]`` the archive holds batch forecasts of this model version for.

    Days are committed whole (``write_days``), so a day present at all is complete.
    """
    lo = pd.Timestamp(first).tz_localize(market.timezone)
    hi = pd.Timestamp(last + dt.timedelta(days=1)).tz_localize(market.timezone)
    found = read_forecasts(lake, market.code, lo, hi, source="batch", model_name=name, model_version=version,
                           columns=("delivery_day",))
    return set(found["delivery_day"])


def plan_job(settings: AurumSettings, market: str, first_day: dt.date, last_day: dt.date, *,
             quantiles: Sequence[float] = DEFAULT_QUANTILES, batch_id: str | None = None, tenant: str = "internal",
             chunk_days: int = DEFAULT_CHUNK_DAYS) -> ScorePlan:
    """Check the request and find the champion and the days still to score; writes nothing.

    Raises:
        InvalidWindowError: ``last_day`` before ``first_day``.
        QuantileError: levels outside (0, 1) or repeated.
        ConfigurationError: a bad batch id or chunk size.
        CatalogUnavailableError: no lake (nothing ingested) or it does not answer.
        UnknownMarketError: the market is not registered.
        RegistryError / RegistryUnavailableError: no champion, or the registry does not answer.
    """
    if last_day < first_day:
        raise InvalidWindowError(f"last delivery day {last_day.isoformat()!r} is before the first "
                                 f"{first_day.isoformat()!r}; expected --to on or after --from")
    levels = tuple(sorted(set(check_quantiles(quantiles)) | {MEDIAN}))
    batch_id = batch_id or new_batch_id()
    if not BATCH_ID.match(batch_id):
        raise ConfigurationError(f"batch id {batch_id!r} must be 1-64 letters, digits or _.:- "
                                 "(starting with a letter or digit)")
    if chunk_days < 1:
        raise ConfigurationError(f"chunk_days {chunk_days!r} must be at least 1")
    lake = Lake.open(settings, create=False)
    code = MarketData(lake).registry().get(market)
    name = model_name(settings, code.code)
    open_registry(settings)
    from models import mlflow_model as ml

    champion = ml.alias_version(name, CHAMPION)
    if champion is None:
        raise RegistryError(f"model {name!r} has no {CHAMPION!r} version to score {code.code!r} with; train and "
                            f"approve one first (aurum train --market {code.code})")
    ensure_forecasts_table(lake)
    done = archived_days(lake, code, name, champion.version, first_day, last_day)
    window = [first_day + dt.timedelta(days=i) for i in range((last_day - first_day).days + 1)]
    return ScorePlan(settings, code, first_day, last_day, name, champion.version, levels, batch_id, tenant,
                     chunk_days, tuple(d for d in window if d not in done), tuple(d for d in window if d in done))


# ---------------------------------------------------------------- phase 2: score


class DayScorer:
    """Features and forecasts of delivery days with one model version; open once per process or actor."""

    def __init__(self, plan: ScorePlan):
        from features.feastimport import feast_unchecked
        from models import mlflow_model as ml

        with feast_unchecked():  # scoring builds no declarations: Feast without its runtime type checks
            from features import featurestore

        self._featurestore, self._ml = featurestore, ml
        self.plan = plan
        ml.configure(plan.settings.mlflow_tracking_uri())
        self.model = ml.load_forecaster(plan.model_uri)
        meta = self.model.metadata
        info = meta.metadata or {}
        self.feature_service = info.get("feature_service") or FEATURE_SERVICE
        self.columns = list(meta.get_input_schema().input_names())  # what the pyfunc takes
        keys = ("market", "delivery_start")
        self.inputs = [c for c in (info.get("input_columns") or self.columns) if c not in keys]
        self.store = featurestore.open_store(plan.settings)
        self.lake = Lake.open(plan.settings, create=False)
        self._request = {d: plan.request_id(c) for c in plan.chunks() for d in c}

    def score(self, days: Sequence[dt.date]) -> pa.Table:
        """Archive rows (checked, not written) of every hour of ``days``, forecast as on each D-1.

        Raises:
            FeatureStoreError: a day on which an input of the model is unknown on every hour.
        """
        plan, market = self.plan, self.plan.market
        rows = issue_rows(market, days)
        snapshot = self.lake.snapshot_id(FEATURE_SNAPSHOT_TABLE)  # before the read: never newer than the data
        features = self._featurestore.training_set(self.store, self.feature_service, rows)
        local_day = features["delivery_start"].dt.tz_convert(market.timezone).dt.date
        unscoreable_days(features[self.inputs], local_day, market.code, self.feature_service)
        predictions = self.model.predict(self._ml.pyfunc_input(features[self.columns]),
                                         params={"quantiles": list(plan.levels)})
        quality, reason = input_quality(features[self.inputs])
        frame = forecast_frame(
            market=market.code, timezone=market.timezone, delivery_start=features["delivery_start"],
            issued_at=features[ENTITY_TIMESTAMP], predictions=predictions, levels=plan.levels,
            model_name=plan.model_name, model_version=plan.model_version, request_id="",
            tenant=plan.tenant, feature_service=self.feature_service, source="batch", model_alias=CHAMPION,
            batch_id=plan.batch_id, feature_snapshot=snapshot, quality=quality, quality_reason=reason)
        frame["request_id"] = local_day.map(self._request).to_numpy()
        return to_forecast_table(frame)


def unscoreable_days(inputs: pd.DataFrame, local_day: pd.Series, market: str, service: str) -> None:
    """Raise when an input of the model is unknown on every hour of some day (the service would refuse
    such a day too: a model does not forecast from a feature that is missing all day).

    Raises:
        FeatureStoreError: naming the days and, for each group of days, the inputs they lack.
    """
    all_missing = inputs.isna().groupby(local_day.to_numpy()).all()
    bad = all_missing[all_missing.any(axis=1)]
    if bad.empty:
        return
    from features.featurestore import FeatureStoreError

    groups: dict[tuple[str, ...], list[dt.date]] = {}
    for day, row in bad.iterrows():
        groups.setdefault(tuple(row.index[row.to_numpy()]), []).append(day)

    def days_text(days: list[dt.date]) -> str:
        return ", ".join(d.isoformat() for d in days[:5]) + (f" and {len(days) - 5} more" if len(days) > 5 else "")

    def inputs_text(names: tuple[str, ...]) -> str:
        if len(names) == inputs.shape[1]:
            return "every input"
        return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")

    listed = "; ".join(f"{days_text(days)}: {inputs_text(names)}" for names, days in list(groups.items())[:3])
    more = f"; and {len(groups) - 3} other groups of days" if len(groups) > 3 else ""
    raise FeatureStoreError(
        f"market {market!r}: {len(bad)} delivery days have inputs of feature service {service!r} that were "
        f"unknown at the issue time (gate closure on D-1) on every hour: {listed}{more}. Compute features for "
        f"them first (aurum features compute --markets {market}) or leave them out of --from/--to; nothing was "
        "archived.")


def input_quality(inputs: pd.DataFrame) -> tuple[np.ndarray, list[str | None]]:
    """Per row: ``ok`` or ``degraded``, and for a degraded row which inputs it lacked.

    Offline reads return a feature only when it was known at the issue time and not older than its
    view's TTL, so "missing" covers both unknown and stale.
    """
    missing = inputs.isna().to_numpy()
    names = np.asarray(inputs.columns, dtype=object)
    degraded = missing.any(axis=1)
    reason = [None if not d else "inputs not known at the issue time (missing, or older than the feature TTL): "
              + ", ".join(names[m]) for d, m in zip(degraded, missing)]
    return np.where(degraded, "degraded", "ok"), reason


# ---------------------------------------------------------------- phase 3: archive


@dataclass(frozen=True)
class ChunkArchived:
    """What one chunk's commit did: days written, days found archived meanwhile, rows and degraded rows written."""

    written: tuple[dt.date, ...]
    skipped: tuple[dt.date, ...]
    rows: int
    degraded: int


def archive_chunk(lake: Lake, plan: ScorePlan, rows: pa.Table) -> ChunkArchived:
    """One chunk of scored days in one commit (days a concurrent run archived meanwhile are skipped)."""
    out = write_days(lake, rows, properties={"aurum.batch_id": plan.batch_id, "aurum.source": "batch",
                                             "aurum.model": f"{plan.model_name}/{plan.model_version}"})
    kept = rows.filter(pc.is_in(rows["delivery_day"], value_set=pa.array(out.written, pa.date32())))
    degraded = int(pc.sum(pc.equal(kept["quality"], "degraded")).as_py() or 0)
    return ChunkArchived(out.written, out.skipped, out.rows, degraded)


def _months(days: Sequence[dt.date], market: Market) -> set[str]:
    """``YYYY-MM`` months (UTC, the partition's) of the delivery hours of ``days``."""
    hours = local_day_hours(market, days) if days else pd.Series([], dtype="datetime64[ns, UTC]")
    return set(hours.dt.strftime("%Y-%m"))


def compact_batch_months(lake: Lake, market: str, months: set[str]) -> None:
    """Rewrite the batch partitions of ``market`` from the first to the last of ``months`` into one file
    each, ``COMPACT_MONTHS`` months per commit.

    A job's chunk commits leave a file per chunk in each (market, month) partition they touch, and a
    local day's first hours fall in the previous UTC month, so nearly every month ends with several.
    ``serving.archive.compact`` commits each partition on its own: about 0.2 s a month, more as the
    table grows (120 months after a ten-year job: ~56 s); a year of months per commit takes ~0.6 s.
    Only ``source = batch`` partitions are in scope, which the service never writes, and every row of
    them is kept (other model versions, months in between). When a commit still conflicts after the
    lake's retries (a concurrent batch job of the market), those months are compacted one by one instead.
    """
    ordered = sorted(months)
    for i in range(0, len(ordered), COMPACT_MONTHS):
        group = ordered[i:i + COMPACT_MONTHS]
        lo = pd.Timestamp(f"{group[0]}-01", tz="UTC")
        hi = pd.Timestamp(f"{group[-1]}-01", tz="UTC") + pd.offsets.MonthBegin(1)
        scope = all_of(window_filter(market, lo, hi), equals(source="batch"))
        try:
            lake.rewrite(FORECASTS_TABLE, scope,
                         lambda old: None if old is None else old.sort_by([("market", "ascending"),
                                                                           ("delivery_start", "ascending")]),
                         properties={"aurum.archive.compacted": f"{market}/{group[0]}..{group[-1]}/batch"})
        except CommitConflictError as exc:
            log.warning("compacting the batch partitions of %s %s..%s in one commit kept conflicting (%s); "
                        "compacting them month by month", market, group[0], group[-1], exc)
            compact(lake, market=market, months=group, min_files=2)


# ---------------------------------------------------------------- the job


def score(settings: AurumSettings, market: str, first_day: dt.date, last_day: dt.date, *, engine: str = "local",
          quantiles: Sequence[float] = DEFAULT_QUANTILES, batch_id: str | None = None, tenant: str = "internal",
          chunk_days: int = DEFAULT_CHUNK_DAYS, ray_actors: int = 2, ray_address: str | None = None,
          progress: Progress | None = None) -> ScoreResult:
    """Score and archive every local delivery day in ``[first_day, last_day]`` with the market's champion.

    See the module docstring for the phases and guarantees; ``plan_job`` for the errors raised before
    any work. ``progress`` is called with ("score" | "archive", days done, days in the phase).
    """
    if engine not in ENGINES:
        raise ConfigurationError(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
    t0 = time.perf_counter()
    plan = plan_job(settings, market, first_day, last_day, quantiles=quantiles, batch_id=batch_id, tenant=tenant,
                    chunk_days=chunk_days)
    say = progress or (lambda phase, done, total: None)
    if not plan.days:
        written, skipped, rows, degraded = (), (), 0, 0
    elif engine == "local":
        written, skipped, rows, degraded = _run_local(plan, say)
    else:
        written, skipped, rows, degraded = _run_ray(plan, say, actors=ray_actors, address=ray_address)
    if written:
        compact_batch_months(Lake.open(settings, create=False), plan.market.code, _months(written, plan.market))
    return ScoreResult(plan.batch_id, plan.market.code, plan.model_name, plan.model_version, engine, first_day,
                       last_day, tuple(written), tuple(sorted(set(plan.archived) | set(skipped))), rows, degraded,
                       time.perf_counter() - t0)


def _run_local(plan: ScorePlan, say: Progress):
    scorer = DayScorer(plan)
    scored: list[pa.Table] = []
    say("score", 0, len(plan.days))
    for i in range(0, len(plan.days), READ_DAYS):
        scored.append(scorer.score(plan.days[i:i + READ_DAYS]))
        say("score", min(i + READ_DAYS, len(plan.days)), len(plan.days))
    every = pa.concat_tables(scored)
    done: list[ChunkArchived] = []
    say("archive", 0, len(plan.days))
    for chunk in plan.chunks():
        part = every.filter(pc.is_in(every["delivery_day"], value_set=pa.array(chunk, pa.date32())))
        done.append(archive_chunk(scorer.lake, plan, part))
        say("archive", sum(len(c.written) + len(c.skipped) for c in done), len(plan.days))
    return _totals(done)


def _totals(done: list[ChunkArchived]):
    return (sorted(d for c in done for d in c.written), sorted(d for c in done for d in c.skipped),
            sum(c.rows for c in done), sum(c.degraded for c in done))


# ---------------------------------------------------------------- the Ray engine


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(payload: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(payload)).read_all()


class _RayScorer:
    """Ray actor: a :class:`DayScorer` per actor, one chunk of days per call (rows as Arrow IPC bytes,
    so no block boundary can split a chunk, and a chunk stays one commit).

    A domain error (a day without features) comes back as data, pickled, and the driver raises it:
    Ray re-raises an actor's exception wrapped in its own types, without the original chained.
    """

    def __init__(self, plan: ScorePlan):
        self.scorer = DayScorer(plan)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"chunk": [], "days": [], "rows": [], "forecasts": [], "error": []}
        for chunk, days in zip(batch["chunk"], batch["days"]):
            try:
                table = self.scorer.score([dt.date.fromisoformat(d) for d in str(days).split(",")])
                payload, error = _ipc(table), b""
            except AurumError as exc:
                table, payload, error = None, b"", pickle.dumps(exc)
            out["chunk"].append(int(chunk))
            out["days"].append(str(days))
            out["rows"].append(0 if table is None else table.num_rows)
            out["forecasts"].append(payload)
            out["error"].append(error)
        return out


def _raise_returned(error: bytes) -> None:
    """Raise an error an actor returned as data (a plain AurumError with its message if it cannot be rebuilt)."""
    try:
        exc = pickle.loads(error)
    except Exception as unpickling:  # noqa: BLE001 - an exception class whose constructor does not round-trip
        raise AurumError(f"a scoring actor failed: {unpickling}") from None
    raise exc


class _RayWriter:
    """Ray actor: archives scored chunks, one commit each."""

    def __init__(self, plan: ScorePlan):
        self.plan = plan
        self.lake = Lake.open(plan.settings, create=False)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"written": [], "skipped": [], "rows": [], "degraded": []}
        for payload in batch["forecasts"]:
            c = archive_chunk(self.lake, self.plan, _from_ipc(bytes(payload)))
            out["written"].append(",".join(d.isoformat() for d in c.written))
            out["skipped"].append(",".join(d.isoformat() for d in c.skipped))
            out["rows"].append(c.rows)
            out["degraded"].append(c.degraded)
        return out


def _run_ray(plan: ScorePlan, say: Progress, *, actors: int, address: str | None):
    """Phase 2 on a pool of scoring actors, then phase 3 on a writer actor (see the module docstring).

    A local Ray is started for the job (and stopped after it) unless one is running in this process
    or ``address`` / ``RAY_ADDRESS`` names a cluster. On 2 cores give actors fractional CPUs: a pool
    that takes every CPU leaves none for Ray Data's own tasks (the job hangs).
    """
    if actors < 1:
        raise ConfigurationError(f"ray_actors {actors!r} must be at least 1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local cluster needs no token (Ray writes one to ~/.ray)
    try:
        import ray
    except ImportError as exc:
        raise ConfigurationError("the ray engine needs the ray package with Ray Data (ray[data]); "
                                 "use --engine local or install it") from exc
    own = not ray.is_initialized()
    if own:
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False  # the job shows its own
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        cpus = max(0.1, min(0.5, float(ray.cluster_resources().get("CPU", 1)) / (2 * actors)))
        chunks = plan.chunks()
        items = [{"chunk": i, "days": ",".join(d.isoformat() for d in c)} for i, c in enumerate(chunks)]
        scored = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _RayScorer, fn_constructor_kwargs={"plan": plan}, batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus)
        results, done = [], 0
        say("score", 0, len(plan.days))
        for row in scored.iter_rows():
            if row["error"]:
                _raise_returned(row["error"])
            results.append({"chunk": row["chunk"], "forecasts": row["forecasts"]})
            done += len(row["days"].split(","))
            say("score", done, len(plan.days))
        results.sort(key=lambda r: r["chunk"])
        # Every chunk is scored: only now is anything written (no partial archive on a bad day).
        writes = ray.data.from_items(results, override_num_blocks=len(results)).map_batches(
            _RayWriter, fn_constructor_kwargs={"plan": plan}, batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=1), num_cpus=min(cpus, 0.25))
        done: list[ChunkArchived] = []
        say("archive", 0, len(plan.days))
        for row in writes.iter_rows():
            days = [tuple(dt.date.fromisoformat(d) for d in row[k].split(",") if d) for k in ("written", "skipped")]
            done.append(ChunkArchived(days[0], days[1], int(row["rows"]), int(row["degraded"])))
            say("archive", sum(len(c.written) + len(c.skipped) for c in done), len(plan.days))
        return _totals(done)
    except Exception as exc:
        domain = _domain_error(exc)
        if domain is not None:
            raise domain from None
        raise
    finally:
        if own:
            ray.shutdown()


def _domain_error(exc: BaseException) -> AurumError | None:
    """The Aurum error a Ray failure wraps (Ray re-raises user errors inside its own types), if any."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, AurumError):
            return e
        stack += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None

