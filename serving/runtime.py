"""The forecast service's work, free of any web framework: look up a day's features, run the
serving model (or the baseline when features are stale), apply scenarios, and feed the archive.

Invariants:
- A forecast for delivery day D uses the online store's features of D's hours, with the calendar
  computed at request time by the same transform as in training, and reports how fresh they were.
- Only the registry's ``champion`` (or a bundled copy of it) answers; when any model input of the
  day is missing or older than the freshness limit, the market's weekly-naive baseline (fitted on
  prices known at the issue time) answers instead, with ``quality: "degraded"`` and the reason.
  There is no silent third path: without either, the request fails with the reason.
- An online store that does not answer (Redis down) is not a server error: every input is then
  unknown, so the baseline answers, with the store named in the reason; without the baseline the
  request is a 503 naming the store. Lookups fail fast while it is down and resume by themselves
  (``OnlineStoreGuard``).
- Forecasts are deterministic in their inputs, so a model keeps recent forecasts keyed by the exact
  feature values (and quantiles): a changed feature is a different key, never a stale answer.
- Archiving is off the request path: the request enqueues, a background thread writes.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from features.errors import AurumError, ForecastRequestError, ForecastUnavailableError, OnlineStoreUnavailableError
from features.lake import Lake
from features.marketdata import MarketData
from features.markets import Market
from features.online import DayVectors, OnlineReader, day_hours, planned_reader
from features.settings import AurumSettings
from features.transforms.calendar import CalendarAdder
from features.transforms.localtime import local_day_and_hour
from features.transforms.price_lags import PriceLagsAdder
from models.featureframe import CALENDAR_FEATURES, FEATURE_SERVICE
from models.forecaster import quantile_column
from models.naive import WeeklyNaive
from serving import archiver
from serving.champions import CHAMPION, ModelBook, ServedModel

log = logging.getLogger(__name__)
BASELINE = "baseline"
BASELINE_WEEKS = 8  # weeks of weekly-naive residuals behind the baseline's intervals
ONLINE_RETRY_S = 1.0  # seconds between background lookups while the online store does not answer


@dataclass
class DayForecast:
    """One computed forecast of one market's delivery day (what the API and the archive report)."""

    market: str
    delivery_day: dt.date
    timezone: str
    issued_at: pd.Timestamp
    delivery_start: pd.DatetimeIndex
    local_hour: np.ndarray
    quantiles: tuple[float, ...]
    values: np.ndarray  # hours x quantiles
    model_name: str
    model_version: str
    model_alias: str
    feature_service: str
    quality: str
    quality_reason: str | None
    known_at: pd.Timestamp | None
    max_age_s: float | None
    stale_hours: int
    missing_inputs: int
    snapshots: dict[str, int] = field(default_factory=dict)
    scenario: str | None = None
    changes: list = field(default_factory=list)
    cached: bool = False
    requested: tuple[float, ...] = ()  # the levels asked for; ``quantiles`` adds the median when missing
    starts: list[str] | None = None  # delivery_start as ISO strings (made once per market and day)
    renders: dict | None = field(default=None, repr=False)  # the hours' JSON by requested levels, shared by a cache entry
    degraded_by: str | None = None  # why the baseline answered: stale_features or online_store_unavailable

    def columns(self) -> list[str]:
        return [quantile_column(q) for q in self.requested or self.quantiles]

    def shown(self) -> np.ndarray:
        """The values of the requested levels (hours x requested quantiles)."""
        if not self.requested or self.requested == self.quantiles:
            return self.values
        return self.values[:, [self.quantiles.index(q) for q in self.requested]]

    def hours(self) -> list[dict]:
        """The per-hour part of the response body."""
        cols = self.columns()
        starts = self.starts or [t.isoformat() for t in self.delivery_start]
        return [{"delivery_start": s, "local_hour": int(h), "values": dict(zip(cols, row))}
                for s, h, row in zip(starts, self.local_hour.tolist(), self.shown().tolist())]

    def to_api(self, request_id: str) -> dict:
        """The JSON-ready response body (``serving.api.ForecastResponse``)."""
        return {**self._head(request_id), "hours": self.hours()}

    def to_json(self, request_id: str) -> bytes:
        """``to_api`` rendered as JSON; the hours of a cached forecast are rendered once per requested levels."""
        head = json.dumps(self._head(request_id), separators=(",", ":"))
        if self.renders is None:
            hours = json.dumps(self.hours(), separators=(",", ":"))
        else:
            hours = self.renders.get(self.requested)
            if hours is None:
                hours = self.renders[self.requested] = json.dumps(self.hours(), separators=(",", ":"))
        return f'{head[:-1]},"hours":{hours}}}'.encode()

    def _head(self, request_id: str) -> dict:
        return {
            "request_id": request_id, "market": self.market, "delivery_day": self.delivery_day.isoformat(),
            "timezone": self.timezone, "issued_at": self.issued_at.isoformat(), "quality": self.quality,
            "quality_reason": self.quality_reason,
            "model": {"name": self.model_name, "version": self.model_version, "alias": self.model_alias,
                      "feature_service": self.feature_service},
            "features": {"service": self.feature_service, "snapshot_id": self.snapshots.get("price_features"),
                         "known_at": self.known_at.isoformat() if self.known_at is not None else None,
                         "max_age_seconds": self.max_age_s, "stale_hours": self.stale_hours,
                         "missing_inputs": self.missing_inputs},
            "scenario": self.scenario,
        }


class ArchiveFeed:
    """Forecasts on their way to the Iceberg ``forecasts`` table: enqueued by requests (a tuple on a queue),
    turned into compact records and sent to the archiver by a background thread every ``interval``
    seconds (``serving.archiver``: a child process in the service, or in this process)."""

    def __init__(self, sink, interval: float = 0.25, max_queued: int = 100_000):
        self.sink, self.interval, self.max_queued = sink, interval, max_queued
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.dropped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="archive-feed", daemon=True)
        self._thread.start()

    def put(self, forecast: DayForecast, *, request_id: str, tenant: str, source: str, shadow: bool = False,
            batch_id: str | None = None) -> None:
        self.queue.put((forecast, request_id, tenant, source, shadow, batch_id, pd.Timestamp.now(tz="UTC")))

    def _drain(self) -> None:
        items = []
        while True:
            try:
                items.append(self.queue.get_nowait())
            except queue.Empty:
                break
        if len(items) > self.max_queued:  # the archiver has refused batches for a long while: bounded memory
            self.dropped += len(items) - self.max_queued
            log.error("forecast archive: %d forecasts dropped, the archiver is not taking them",
                      len(items) - self.max_queued)
            items = items[-self.max_queued:]
        if items:
            records = [_record(*item) for item in items]
            try:
                self.sink.write(records)
            except Exception:
                for item in items:  # kept for the next round
                    self.queue.put(item)
                raise

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._drain()
            except Exception:  # the archive must never take the service down; the rows stay queued
                log.exception("archiving forecasts failed")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._drain()
        self.sink.close()


def _record(f: DayForecast, request_id: str, tenant: str, source: str, shadow: bool, batch_id: str | None,
            served_at: pd.Timestamp) -> tuple:
    """One forecast as an archiver record (``serving.archiver.record``)."""
    scalars = (request_id, batch_id, source, tenant, f.market, f.delivery_day, f.issued_at, served_at,
               f.quantiles, f.model_name, f.model_version, f.model_alias, shadow, f.scenario, f.feature_service,
               f.snapshots.get("price_features"), f.known_at, f.quality, f.quality_reason)
    return archiver.record(scalars, f.delivery_start.as_unit("us").asi8, f.values)


class ForecastRuntime:
    """Everything one service process needs to answer forecast requests (see the module docstring)."""

    def __init__(self, settings: AurumSettings, lake: Lake, online: OnlineReader, book: ModelBook,
                 feed: ArchiveFeed | None = None):
        self.settings, self.lake, self.online, self.book, self.feed = settings, lake, online, book, feed
        self.lookups = OnlineStoreGuard(online, _online_store_name(settings))
        self.registry = MarketData(lake).registry()
        self.stale_after_s = settings.serving.stale_after_s or (online.ttl.total_seconds() if online.ttl else None)
        self.snapshots: dict[str, int] = {}
        self.shadow_pool = ThreadPoolExecutor(1, thread_name_prefix="shadow") if book.shadow else None
        self.scenario_pool = ThreadPoolExecutor(2, thread_name_prefix="scenario")
        self._calendar = CalendarAdder()
        self._baselines: dict[tuple, tuple] = {}
        self.startup: dict[str, float] = {}  # seconds per start-up phase (ForecastRuntime.open)
        self.refresh_snapshots()

    @classmethod
    def open(cls, settings: AurumSettings, *, markets: list[str] | None = None, bundle: Path | None = None,
             archive: bool | None = None, archive_process: bool = False) -> ForecastRuntime:
        """Everything for ``markets`` (default: every market with a champion); ``archive_process`` archives
        through a child process (the service) rather than a thread of this one."""
        clock = _Phases()
        lake = Lake.open(settings)
        registry = MarketData(lake).registry()
        clock.done("lake")
        online = open_online(settings, registry.codes())
        clock.done("online_features_plan" if type(online) is OnlineReader else "online_features_feast")
        wanted = list(markets or settings.serving.markets or registry.codes())
        for m in wanted:
            registry.get(m)  # unknown market: a clear error at start-up
        if not markets and not settings.serving.markets and bundle is None:
            wanted = [m for m in wanted if m in book_markets(settings)]  # every market with a champion
        book = ModelBook(settings, wanted, bundle=bundle, shadow=settings.serving.shadow)
        book.refresh()
        clock.done("models")
        if not markets and not settings.serving.markets and bundle is not None:
            book.markets = [m for m in wanted if book.champion(m) is not None]
            book.states = {m: book.states[m] for m in book.markets}
        feed = None
        if settings.serving.archive if archive is None else archive:
            from serving.archive import ensure_forecasts_table

            if archive_process:
                ensure_forecasts_table(lake)  # readers find the table from the start, not once the child is up
                feed = ArchiveFeed(archiver.ArchiverProcess(nice=settings.serving.archiver_nice))
            else:
                feed = ArchiveFeed(archiver.InProcessArchiver(archiver.open_archive(settings, lake)))
            clock.done("archive")
        runtime = cls(settings, lake, online, book, feed)
        clock.done("snapshots")
        runtime.startup = clock.seconds
        return runtime

    # ------------------------------------------------------------------ state

    def refresh_snapshots(self) -> None:
        for table in ("price_features", "exogenous_features", "exogenous_lag_features", "calendar_features"):
            try:
                sid = self.lake.snapshot_id(f"features.{table}")
            except AurumError:
                sid = None
            if sid is not None:
                self.snapshots[table] = int(sid)

    def ready(self) -> tuple[bool, str]:
        """Ready when every served market has its champion loaded (and with it the online reader and the
        baseline's price source). Feature freshness is reported per answer and in metrics, not gated here: a
        day with stale features is still answered (by the baseline, flagged), so taking the service out of
        rotation for it would turn a degraded answer into none."""
        if not self.book.markets:
            return False, "no market has an approved champion"
        missing = [m for m in self.book.markets if self.book.champion(m) is None]
        if missing:
            return False, f"no champion loaded for {', '.join(missing)}"
        return True, "ok"

    def market(self, code: str) -> Market:
        market = self.registry.get(code)  # UnknownMarketError names the known markets
        if code not in self.book.states:
            raise ForecastUnavailableError(f"market {code!r} has no approved model served here; served markets: "
                                           f"{', '.join(self.book.markets) or 'none'}")
        return market

    def default_day(self, market: Market) -> dt.date:
        return (pd.Timestamp.now(tz=market.timezone) + pd.Timedelta(days=1)).date()

    def check_day(self, market: Market, day: dt.date | None, field_name: str = "delivery_day") -> dt.date:
        day = day or self.default_day(market)
        today = dt.datetime.now(_zone(market.timezone)).date()
        lo = today - dt.timedelta(days=self.settings.serving.max_days_back)
        hi = today + dt.timedelta(days=self.settings.serving.max_days_ahead)
        if not lo <= day <= hi:
            raise ForecastRequestError(f"{field_name} {day.isoformat()} is outside the accepted range "
                                       f"{lo.isoformat()} .. {hi.isoformat()} for {market.code}", field=field_name)
        return day

    # ------------------------------------------------------------------ forecasts

    def forecast(self, code: str, day: dt.date | None, quantiles: tuple[float, ...], *, scenario=None,
                 model: ServedModel | None = None) -> DayForecast:
        """One day's forecast by the champion (or ``model``), falling back to the baseline when stale."""
        market = self.market(code)
        day = self.check_day(market, day)
        served = model or self.book.champion(code)
        if served is None:
            raise ForecastUnavailableError(f"no approved model serves {code} (no champion loaded)")
        self._check_quantiles(served, quantiles)
        requested = quantiles
        quantiles = tuple(sorted({*quantiles, 0.5}))  # the median always: the archive's point forecast
        outage = None
        try:
            vec = self.lookups.vectors(code, day, market.timezone, gate_closure=market.gate_closure)
        except OnlineStoreUnavailableError as exc:  # nothing is known: every input is missing
            vec, outage = self._unknown(market, day), exc
        values, local_hour = self._with_calendar(market, day, vec)
        starts = self._calendar_of(market, day)["starts"]
        inputs = [vec.names.index(c) for c in served.inputs]
        x = values[:, inputs]
        missing = np.isnan(x)
        missing[:, [j for j, c in enumerate(served.inputs) if c in CALENDAR_FEATURES]] = False
        age = vec.feature_age
        too_old = np.zeros(len(age), bool) if self.stale_after_s is None else \
            ~(age <= self.stale_after_s)  # NaN age (nothing known) is stale too
        absent = missing.sum(axis=0) > self.settings.serving.max_missing_hours  # an input gone for the day
        stale = missing[:, absent].any(axis=1) | too_old
        known = np.fmax.reduce(vec.known_at)  # NaN when nothing is known
        known = None if np.isnan(known) else known
        oldest = np.fmax.reduce(age)
        common = dict(market=code, delivery_day=day, timezone=market.timezone, issued_at=_issue(market, day),
                      delivery_start=vec.delivery_start, local_hour=local_hour, quantiles=quantiles, requested=requested,
                      starts=starts,
                      known_at=pd.Timestamp(known, unit="s", tz="UTC") if known is not None else None,
                      max_age_s=None if np.isnan(oldest) else float(oldest),
                      stale_hours=int(stale.sum()), missing_inputs=int(missing.sum()), snapshots=self.snapshots)
        if outage is not None:
            if scenario is not None:
                raise OnlineStoreUnavailableError(f"scenario {scenario.name!r} needs the model's inputs of {code} "
                                                  f"{day}: {outage}") from outage
            try:
                return self._baseline(market, day, quantiles, common, str(outage), cause="online_store_unavailable")
            except ForecastUnavailableError as exc:  # a 503 (the store), not a 404: the data may well exist
                raise OnlineStoreUnavailableError(f"no forecast for {code} {day}: {outage}; and the weekly-naive "
                                                  f"baseline cannot answer either: {exc}") from exc
        if stale.any():
            reason = _stale_reason(served.inputs, missing & absent, too_old, age, self.stale_after_s)
            if scenario is not None:
                raise ForecastUnavailableError(f"scenario {scenario.name!r} needs the model's inputs of {code} "
                                               f"{day}: {reason}")
            return self._baseline(market, day, quantiles, common, reason)
        changes = []
        if scenario is not None:
            from serving.scenarios import apply_vectors

            full, changes = apply_vectors(scenario, vec.names, values, local_hour)
            x = full[:, inputs]
        key = (day.toordinal(), quantiles, x.tobytes())
        entry = served.cached(key)
        cached = entry is not None
        if entry is None:
            frame = pd.DataFrame(x, columns=list(served.inputs))
            frame.insert(0, "delivery_start", vec.delivery_start)
            frame.insert(0, "market", code)
            if "hour" not in frame.columns:
                frame["hour"] = local_hour.astype(float)
            out = served.forecaster.predict(frame, quantiles)[[quantile_column(q) for q in quantiles]].to_numpy()
            entry = (out, {})  # the values and their rendered JSON (filled by DayForecast.to_json)
            served.remember(key, entry)
        return DayForecast(**common, values=entry[0], model_name=served.name, model_version=served.version,
                           model_alias=served.alias, feature_service=served.feature_service, quality="ok",
                           quality_reason=None, scenario=getattr(scenario, "name", None), changes=changes,
                           cached=cached, renders=entry[1])

    def _check_quantiles(self, served: ServedModel, quantiles: tuple[float, ...]) -> None:
        """A calibrated (conformal) model gives exactly its levels; others any level inside their fitted range."""
        levels = served.forecaster.levels() if hasattr(served.forecaster, "levels") else served.quantiles
        if not levels:
            return
        exact = hasattr(served.forecaster, "levels")
        if exact:
            bad = [q for q in quantiles if not any(abs(q - a) < 1e-9 for a in levels)]
        else:
            bad = [q for q in quantiles if q < min(levels) - 1e-9 or q > max(levels) + 1e-9]
        if bad:
            raise ForecastRequestError(f"quantiles {bad!r} are not offered by {served.name} version {served.version}; "
                                       f"it gives {sorted(levels)!r}" + ("" if exact else " and levels between them"),
                                       field="quantiles")

    def _with_calendar(self, market: Market, day: dt.date, vec) -> tuple[np.ndarray, np.ndarray]:
        """The day's feature values with the calendar computed now, as in training, and the local hours."""
        cal = self._calendar_of(market, day)
        values = vec.values.copy()
        for name, column in cal.items():
            if name in vec.names and name != "starts":
                values[:, vec.names.index(name)] = column
        return values, cal["hour"].astype(np.int64)

    @functools.lru_cache(maxsize=2048)  # noqa: B019 - one runtime per process; the calendar never changes
    def _calendar_of(self, market: Market, day: dt.date) -> dict[str, np.ndarray | list[str]]:
        """The day's calendar features, computed by the training transform, and its hours as ISO strings."""
        hours, _ = day_hours(day, market.timezone, market.gate_closure)
        frame = self._calendar.transform(pd.Series(hours), market)
        return {**{c: frame[c].to_numpy(dtype=float) for c in CALENDAR_FEATURES},
                "starts": [t.isoformat() for t in hours]}

    def _unknown(self, market: Market, day: dt.date) -> DayVectors:
        """The day's vectors when the online store does not answer: every feature of every hour unknown."""
        hours, _ = day_hours(day, market.timezone, market.gate_closure)
        n, k = len(hours), len(self.online.names)
        unknown = np.full(n, np.nan)
        return DayVectors(market.code, hours, self.online.names, self.online.kinds, np.full((n, k), np.nan),
                          np.ones((n, k), bool), unknown, unknown, np.full(n, k), np.ones(n, bool))

    def _baseline(self, market: Market, day: dt.date, quantiles: tuple[float, ...], common: dict,
                  reason: str, cause: str = "stale_features") -> DayForecast:
        key = (market.code, day, quantiles)
        hit = self._baselines.get(key)
        if hit is None:
            hit = self._fit_baseline(market, day, quantiles, common["delivery_start"])
            if len(self._baselines) >= 1024:  # bounded: the oldest fit goes first
                self._baselines.pop(next(iter(self._baselines)))
            self._baselines[key] = hit
        values, local_hour = hit
        return DayForecast(**{**common, "local_hour": local_hour}, values=values,
                           model_name=f"weekly_naive_{market.code}", model_version=BASELINE, model_alias=BASELINE,
                           feature_service="market.prices", quality="degraded", degraded_by=cause,
                           quality_reason=f"{reason}; answered by the weekly-naive baseline")

    def _fit_baseline(self, market: Market, day: dt.date, quantiles, hours: pd.DatetimeIndex):
        """Weekly naive (price of the same local hour a week earlier), fitted on the prices public at the
        issue time; its intervals are the last weeks' weekly-naive residuals per hour."""
        issue = _issue(market, day)
        start = pd.Timestamp(day) - pd.Timedelta(days=7 * (BASELINE_WEEKS + 2))
        prices = MarketData(self.lake).prices(market.code, start.tz_localize(market.timezone),
                                              pd.Timestamp(day).tz_localize(market.timezone))
        week_ago = pd.Timestamp(day) - pd.Timedelta(days=7)
        if not prices.empty:
            prices = prices[pd.to_datetime(prices["published_at"], utc=True) <= issue]
        if prices.empty:
            raise ForecastUnavailableError(
                f"no forecast for {market.code} {day}: the features are stale and no prices before it are known "
                f"at the issue time {issue.isoformat()} for the weekly-naive baseline")
        prices = prices.assign(delivery_start=pd.to_datetime(prices["delivery_start"], utc=True))
        lags = PriceLagsAdder().transform(prices, market)
        frame = lags[["market", "delivery_start", "price_lag_P7D"]].merge(
            prices[["delivery_start", "price"]], on="delivery_start", how="inner").dropna()
        target_hours = pd.Series(hours)
        local_day, local_hour = local_day_and_hour(target_hours, market.timezone)
        by_hour = dict(zip(zip(*local_day_and_hour(prices["delivery_start"], market.timezone)), prices["price"]))
        lag = np.array([by_hour.get((week_ago, int(h)), np.nan) for h in local_hour], dtype=float)
        if frame.empty or np.isnan(lag).all():
            raise ForecastUnavailableError(
                f"no forecast for {market.code} {day}: the features are stale and the baseline has no prices of "
                f"{week_ago.date()} known at the issue time {issue.isoformat()}")
        train_day, train_hour = local_day_and_hour(frame["delivery_start"], market.timezone)
        model = WeeklyNaive().fit(frame.drop(columns="price").assign(hour=train_hour.to_numpy()), frame["price"])
        target = pd.DataFrame({"market": market.code, "delivery_start": target_hours,
                               "hour": local_hour.to_numpy(), "price_lag_P7D": lag})
        values = model.predict(target, quantiles)[[quantile_column(q) for q in quantiles]].to_numpy()
        return values, local_hour.to_numpy(dtype=np.int64)

    # ------------------------------------------------------------------ archive, shadow

    def archive(self, forecast: DayForecast, *, request_id: str, tenant: str, source: str) -> None:
        if self.feed is not None:
            self.feed.put(forecast, request_id=request_id, tenant=tenant, source=source)

    def shadow(self, code: str, day: dt.date, quantiles: tuple[float, ...], *, request_id: str, tenant: str) -> None:
        """Score the challenger on the same request off the request path; archived as shadow."""
        if self.shadow_pool is None or self.feed is None:
            return
        challenger = self.book.challenger(code)
        if challenger is None:
            return

        def run() -> None:
            try:
                f = self.forecast(code, day, quantiles, model=challenger)
                self.feed.put(f, request_id=request_id, tenant=tenant, source="api", shadow=True)
            except Exception:  # the shadow never affects the caller
                log.exception("shadow scoring of %s %s failed", code, day)

        self.shadow_pool.submit(run)

    def close(self) -> None:
        self.lookups.close()
        if self.shadow_pool:
            self.shadow_pool.shutdown(wait=True)
        self.scenario_pool.shutdown(wait=True)
        if self.feed:
            self.feed.close()


class OnlineStoreGuard:
    """The online lookups of one process, failing fast while the online store does not answer.

    A lookup the store does not answer (Redis down or restarting: refused, reset, timed out) raises
    :class:`OnlineStoreUnavailableError` naming the store and the cause, and marks the store down. While
    it is down, lookups raise at once instead of each waiting out the client's timeout (about a second, see
    ``features.featurestore._fail_fast``; the lookup holds the worker's event loop meanwhile), and a background thread repeats the failed lookup every ``retry_s`` seconds; its first answer
    marks the store up again. So an outage costs one slow request per process, and the service recovers
    without a restart.
    """

    def __init__(self, reader: OnlineReader, store: str, retry_s: float = ONLINE_RETRY_S):
        self.reader, self.store, self.retry_s = reader, store, retry_s
        self.down: str | None = None  # why the store is down; None while it answers
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._prober: threading.Thread | None = None

    def vectors(self, market: str, day: dt.date, timezone: str, *, gate_closure: dt.time) -> DayVectors:
        down = self.down
        if down is not None:
            raise OnlineStoreUnavailableError(down)
        try:
            return self.reader.vectors(market, day, timezone, gate_closure=gate_closure)
        except _outage_errors() as exc:
            why = self._why(exc)
            self._mark_down(why, (market, day, timezone, gate_closure))
            raise OnlineStoreUnavailableError(why) from exc

    def _why(self, exc: BaseException) -> str:
        cause = exc.__cause__ if isinstance(exc, OnlineStoreUnavailableError) and exc.__cause__ else exc
        return f"the online feature store ({self.store}) does not answer: {type(cause).__name__}: {cause}"

    def _mark_down(self, why: str, lookup: tuple) -> None:
        with self._lock:
            self.down = why
            if self._prober is None:
                log.error("%s; forecasts fall back to the weekly-naive baseline, the store is tried again every "
                          "%g s", why, self.retry_s)
                self._prober = threading.Thread(target=self._probe, args=lookup, name="online-store-probe",
                                                daemon=True)
                self._prober.start()

    def _probe(self, market: str, day: dt.date, timezone: str, gate_closure: dt.time) -> None:
        since = time.monotonic()
        while not self._closed.wait(self.retry_s):
            try:
                self.reader.vectors(market, day, timezone, gate_closure=gate_closure)
            except _outage_errors() as exc:
                self.down = self._why(exc)
                continue
            except Exception:  # noqa: BLE001 - the store answered; a failing lookup is the request path's to report
                log.exception("online feature store (%s): answers again, but the probe's lookup failed", self.store)
            break
        with self._lock:  # cleared together: a failure after this starts a new probe
            self.down, self._prober = None, None
        if not self._closed.is_set():
            log.warning("the online feature store (%s) answers again after %.0f s", self.store,
                        time.monotonic() - since)

    def close(self) -> None:
        self._closed.set()


def _outage_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean the online store did not answer (not that a lookup was wrong): the readers
    raise ``OnlineStoreUnavailableError`` (a ``ConnectionError``) for Redis's own connection errors."""
    return (ConnectionError, TimeoutError)


def _online_store_name(settings: AurumSettings) -> str:
    """The profile's online store in words, for messages: host and port only, never credentials."""
    if settings.profile == "local":
        return "SQLite"
    url = urlsplit(settings.redis_url)
    return f"Redis at {url.hostname}:{url.port or 6379}"


class _Phases:
    """Seconds spent in each named phase, in order (the start-up breakdown ``/v1/models`` reports)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def done(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(now - self._last, 3)
        self._last = now


def open_online(settings: AurumSettings, markets: list[str]) -> OnlineReader:
    """The online reader of the models' feature service: from the saved online plan when it matches the
    registry (no Feast import, half the cold start), else resolved through Feast, whose plan is then
    saved for the next start (``features.online``)."""
    cache = settings.serving.online_cache
    reader, how = (planned_reader(settings, FEATURE_SERVICE, markets, cache=cache) if settings.serving.online_plan
                   else (None, "online_plan is off"))
    if reader is None:
        from features.feastimport import feast_unchecked

        with feast_unchecked():  # a reader builds no declarations: Feast without its runtime type checks
            from features import featurestore
        log.info("online features through Feast: %s", how)
        reader = featurestore.OnlineFeatures(featurestore.open_store(settings), FEATURE_SERVICE, cache=cache)
        try:
            featurestore.save_online_plan(settings, reader, markets)
        except OSError as exc:  # a read-only home still serves; only the next start is slower
            log.warning("online plan not saved: %s", exc)
    return reader


def book_markets(settings: AurumSettings) -> set[str]:
    """Markets whose registered model has a ``champion`` (one registry query)."""
    from models import mlflow_model as ml

    ml.configure(settings.mlflow_tracking_uri())
    prefix = settings.mlflow.model_prefix
    return {name[len(prefix):] for name, aliases in ml.aliases(prefix).items() if CHAMPION in aliases}


@functools.cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _issue(market: Market, day: dt.date) -> pd.Timestamp:
    return day_hours(day, market.timezone, market.gate_closure)[1]


def _stale_reason(inputs: tuple[str, ...], missing: np.ndarray, too_old: np.ndarray, age: np.ndarray,
                  limit: float | None) -> str:
    parts = []
    if missing.any():
        counts = missing.sum(axis=0)
        worst = sorted(((int(n), c) for n, c in zip(counts, inputs) if n), reverse=True)[:3]
        parts.append("features missing: " + ", ".join(f"{c} in {n} of {len(missing)} hours" for n, c in worst))
    if too_old.any():
        known = age[np.isfinite(age)]
        parts.append(f"features older than {limit:.0f} s in {int(too_old.sum())} hours"
                     + (f" (oldest {known.max() / 3600:.1f} h)" if known.size else " (nothing known)"))
    return "; ".join(parts)

