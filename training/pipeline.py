"""The training pipeline: data through the feature service, backtests, an MLflow run, registration, approval.

``train`` is what ``aurum train`` runs. In order, so that a failure leaves nothing half-done:

1. open the MLflow store (an unreachable registry fails here, before any work); check the as-of
   day against the data and, for the ``served`` gate, load the served champion and check that enough
   of the backtest window lies after its training data;
2. load the market's history through the feature service, point in time (``training.dataset``):
   everything, or (``as_of``) only the delivery days before the as-of day;
3. backtest the candidate and the baselines (weekly naive, LEAR) on the last ``backtest_days``
   days before the end (the as-of day or the day after the data), rolling origin
   (``training.backtest``), with Diebold-Mariano tests between them;
4. fit the candidate on everything known at the end: now, or the as-of day's issue time (gate
   closure on the day before it);
5. log one MLflow run: parameters, metrics overall and by hour, the backtest table, plots, the
   fitted model's feature importance (table and plot), lineage; log the model (pyfunc) and register
   it as a new version of ``day_ahead_<MARKET>`` (tags: recipe, backtest window, as-of day, the days
   it was fitted on);
6. run the approval gate (``training.approval``) against the current champion: its recipe
   backtested again (``against="recipe"``) or the served version, frozen (``"served"``).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features import featurestore
from features.errors import RegistryError, TrainingDataError
from features.lake import Lake
from features.marketdata import MarketData
from features.settings import AurumSettings
from models import mlflow_model as ml
from models.featureframe import FEATURE_SERVICE
from models.forecaster import shared_fits
from training import approval, backtest, dataset, tracking
from training.dataset import TARGET, TrainingData
from training.specs import ModelSpec

BASELINES = ("naive", "lear")
MIN_HISTORY_DAYS = 28


@dataclass
class TrainResult:
    market: str
    run_id: str
    model_name: str
    version: str | None
    decision: approval.Decision | None
    comparison: pd.DataFrame
    backtests: dict[str, backtest.Backtest]


@dataclass
class Session:
    """What one command opens once: settings, the lake, the feature store and the MLflow experiment."""

    settings: AurumSettings
    lake: Lake
    store: object
    experiment_id: str

    @classmethod
    def open(cls, settings: AurumSettings) -> Session:
        experiment_id = tracking.open_tracking(settings)  # first: an unreachable registry fails before any work
        lake = Lake.open(settings, create=False)
        return cls(settings, lake, featurestore.open_store(settings), experiment_id)


def history_window(lake: Lake, market: str) -> tuple[dt.date, dt.date]:
    """Local days ``[first, last + 1)`` with prices of the market (an unknown market is an error)."""
    md = MarketData(lake)
    m = md.registry().get(market)
    prices = md.prices(market)
    if prices.empty:
        raise TrainingDataError(f"market {market!r} has no prices; ingest them first (aurum ingest ...)")
    local = pd.to_datetime(prices["delivery_start"], utc=True).dt.tz_convert(m.timezone)
    # the first week has no weekly lag yet: start after it
    return (local.min() + pd.Timedelta(days=8)).date(), (local.max() + pd.Timedelta(days=1)).date()


def check_as_of(lake: Lake, market: str, as_of: dt.date, backtest_days: int) -> dt.date:
    """``as_of`` if the market's data allows training as of that day (the backtest ends at it, enough history
    before); :class:`TrainingDataError` naming the day and the accepted range otherwise."""
    first, last = history_window(lake, market)
    need = backtest_days + MIN_HISTORY_DAYS
    earliest = first + dt.timedelta(days=need)
    accepted = f"expected a day from {earliest} to {last}" if earliest <= last else \
        f"the market's history ({first} .. {last - dt.timedelta(days=1)}) is too short for any as-of day"
    if as_of > last:
        raise TrainingDataError(
            f"as-of day {as_of} is after the data: market {market!r} has prices up to "
            f"{last - dt.timedelta(days=1)}; {accepted}")
    if as_of < earliest:
        raise TrainingDataError(
            f"as-of day {as_of} leaves {max((as_of - first).days, 0)} days of usable history before it (market "
            f"{market!r} has features from {first}); a {backtest_days}-day backtest needs at least {need}; {accepted}")
    return as_of


def load_data(session: Session, market: str, backtest_days: int, start: dt.date | None = None,
              end: dt.date | None = None) -> TrainingData:
    """The market's training data of the local days ``[start, end)`` (default: all its history)."""
    if start is None or end is None:
        first, last = history_window(session.lake, market)
        start, end = start or first, end or last
    need = backtest_days + MIN_HISTORY_DAYS
    if (end - start).days < need:
        raise TrainingDataError(
            f"market {market!r} has {(end - start).days} days of history from {start} to {end}; a "
            f"{backtest_days}-day backtest needs at least {need} (ingest more or shorten --backtest-days)")
    return dataset.load(session.store, session.lake, market, start, end, service=FEATURE_SERVICE, min_days=need)


def run_backtests(data: TrainingData, spec: ModelSpec, window: backtest.BacktestWindow, *,
                  baselines: tuple[str, ...] = BASELINES, progress: Callable[[str], None] | None = None
                  ) -> tuple[dict[str, backtest.Backtest], pd.DataFrame]:
    """Backtests of the candidate (key ``candidate``) and each baseline on the same window, and their comparison.

    The backtests share fits (``models.forecaster.shared_fits``): a baseline equal to a member of the
    candidate (the LEAR of the ensemble), fitted at the same refit on the same rows, is fitted once.
    """
    results: dict[str, backtest.Backtest] = {}
    # Baselines are judged on their median: built without the conformal wrapper (half the fits).
    with shared_fits():
        for name, s, make in (("candidate", spec, spec.build),
                              *((b, ModelSpec.of(b), functools.partial(ModelSpec.of(b).build, calibrated=False))
                                for b in baselines if b != spec.kind)):
            if progress:
                progress(f"backtest {name} ({s.kind}) {window.start} .. {window.end}, refit every {window.refit_days} days")
            results[name] = backtest.run(data, make, window, name=name)
    return results, backtest.compare(results)


def train(settings: AurumSettings, market: str, spec: ModelSpec, *, backtest_days: int = 28, refit_days: int = 7,
          train_days: int | None = None, baselines: tuple[str, ...] = BASELINES, approve: bool = True,
          as_of: dt.date | None = None, against: str = approval.RECIPE, session: Session | None = None,
          progress: Callable[[str], None] | None = None) -> TrainResult:
    """Train, backtest, log, register and (by default) run the approval gate for one market.

    ``as_of``: train as on that day's issue time (gate closure on the day before): the backtest ends at
    it and only delivery days before it are read, so nothing published later is seen. ``against``: what
    the gate compares the candidate with (:mod:`training.approval`).

    Raises (before anything is registered):
        TrainingDataError: too little history, an as-of day outside the data, or (``served``) a window
            with too few days after the served champion's training data.
    """
    approval.check_against(against)
    say = progress or (lambda msg: None)
    session = session or Session.open(settings)
    first, last = history_window(session.lake, market)
    end = check_as_of(session.lake, market, as_of, backtest_days) if as_of is not None else last
    window = backtest.BacktestWindow(end - dt.timedelta(days=backtest_days), end, refit_days, train_days)
    served = None
    if approve and against == approval.SERVED:  # before any work: a window the gate cannot judge fails here
        served = ServedChampion.current(settings, market)
        if served is not None:
            served.judged_from(window)
            say(f"gate: against the served {served.name} version {served.version} (fitted on days up to "
                f"{served.train_end}), frozen")
    data = load_data(session, market, backtest_days, start=first, end=end)
    results, comparison = run_backtests(data, spec, window, baselines=baselines, progress=say)
    known_at = dataset.issue_time(data.market, end) if as_of is not None else None
    final, rows = fit_final(data, spec, train_days, known_at=known_at)
    fitted = data.days.loc[rows.index]
    train_start, train_end = fitted.min().date(), fitted.max().date()
    say(f"fitted {spec.kind} on {len(rows):,} hours, {train_start} .. {train_end}"
        + (f" (as of {as_of}: targets published by {known_at.isoformat()})" if as_of is not None else ""))
    name = tracking.model_name(settings, market)
    tags = run_tags(data, spec, "train") | {"as_of": str(as_of or "")}
    with ml.run(session.experiment_id, f"train {spec.kind} {market}", tags=tags) as run_id:
        log_run(data, spec, window, results, comparison)
        log_importance(final, market)
        ml.log_params({"as_of": str(as_of or "now"), "approval_against": against if approve else "none"})
        info = ml.log_forecaster(final, backtest.model_inputs(rows.head(48), data.features), name="model",
                                 training_features=backtest.model_inputs(rows, data.features))
        record = ml.register(info.model_uri, name, tags={
            "model_spec": spec.to_json(), "market": market, "feature_service": data.service, "run_id": run_id,
            "backtest_start": str(window.start), "backtest_end": str(window.end), "refit_days": str(refit_days),
            "train_days": str(train_days or ""), "as_of": str(as_of or ""), "train_start": str(train_start),
            "train_end": str(train_end), "git_commit": tracking.git_commit()})
        ml.set_tags({"registered_model": name, "registered_version": record.version})
    say(f"registered {name} version {record.version} (run {run_id})")
    decision = None
    if approve:
        decision = approve_candidate(session, market, record.version, results["candidate"], data=data,
                                     against=against, served=served)
        say(f"approval: {'champion' if decision.promote else 'challenger'}: {decision.reason}")
    return TrainResult(market, run_id, name, record.version, decision, comparison, results)


def fit_final(data: TrainingData, spec: ModelSpec, train_days: int | None, *, known_at: pd.Timestamp | None = None):
    """The candidate fitted on every row whose target is known now, or at ``known_at`` (the last
    ``train_days`` days of those if set)."""
    keep = data.frame[TARGET].notna().to_numpy()
    if known_at is not None:
        keep &= dataset.known_targets(data, known_at)
    if train_days is not None:
        keep &= (data.days >= data.days.max() - pd.Timedelta(days=train_days)).to_numpy()
    rows = data.frame[keep]
    return spec.build().fit(backtest.model_inputs(rows, data.features), rows[TARGET]), rows


def run_tags(data: TrainingData, spec: ModelSpec, stage: str) -> dict[str, str]:
    return {"stage": stage, "market": data.market.code, "model_kind": spec.kind, "feature_service": data.service,
            "git_commit": tracking.git_commit(), "data_start": str(data.first_day()), "data_end": str(data.last_day()),
            **{f"lineage.{k}": str(v) for k, v in data.lineage.items() if k.startswith("snapshot:")}}


def log_run(data: TrainingData, spec: ModelSpec, window: backtest.BacktestWindow,
            results: dict[str, backtest.Backtest], comparison: pd.DataFrame) -> None:
    """Everything a reviewer needs in the MLflow UI: parameters, metrics, tables, plots, lineage."""
    cand = results["candidate"]
    ml.log_params({"market": data.market.code, "model": spec.kind, **{f"model.{k}": v for k, v in spec.params.items()},
                   "feature_service": data.service, "backtest_start": window.start, "backtest_end": window.end,
                   "refit_days": window.refit_days, "train_days": window.train_days or "all",
                   "data_start": data.first_day(), "data_end": data.last_day(), "features": len(data.features)})
    ml.log_metrics(cand.overall())
    for name, bt in results.items():
        if name != "candidate":
            ml.log_metrics({f"{name}.{k}": v for k, v in bt.overall().items()})
            ml.log_metrics({f"dm_p_vs_{name}": comparison.loc["candidate", f"dm_vs_{name}"]})
    for hour, v in cand.by_hour().items():
        ml.log_metrics({"mae_by_hour": v}, step=int(hour))
    ml.log_metrics({"backtest_fits": cand.fits, "backtest_seconds": cand.seconds})
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cand.forecasts.to_csv(d / "backtest.csv", index=False)
        cand.metrics.to_csv(d / "metrics_by_hour.csv", index=False)
        comparison.to_csv(d / "comparison.csv")
        for f in ("backtest.csv", "metrics_by_hour.csv", "comparison.csv"):
            ml.log_artifact(d / f, "backtest")
        for name, bt in results.items():
            if name != "candidate":
                bt.forecasts.to_csv(d / f"{name}.csv", index=False)
                ml.log_artifact(d / f"{name}.csv", "backtest/baselines")
        (d / "lineage.json").write_text(json.dumps(data.lineage, indent=2, default=str))
        ml.log_artifact(d / "lineage.json")
    code = data.market.code
    ml.log_figure(tracking.plot_forecast(cand.forecasts, f"{code}: backtest forecast vs actual"), "plots/forecast_vs_actual.png")
    ml.log_figure(tracking.plot_error_by_hour({n: bt.by_hour() for n, bt in results.items()},
                                              f"{code}: MAE by local hour"), "plots/error_by_hour.png")
    ml.log_figure(tracking.plot_calibration(cand.forecasts, cand.quantile_columns, f"{code}: calibration"),
                  "plots/calibration.png")


def log_importance(model, market: str) -> None:
    """The fitted model's feature importance (``Forecaster.feature_importance``) as a table and a plot."""
    importance = model.feature_importance()
    if importance.empty:  # nothing to weigh (the weekly naive)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "feature_importance.csv"
        importance.to_csv(path, index=False)
        ml.log_artifact(path, "importance")
    ml.log_figure(tracking.plot_importance(importance, f"{market}: feature importance of the registered model"),
                  "plots/feature_importance.png")


@dataclass
class ServedChampion:
    """A market's champion version as it is served: its pyfunc model, loaded from the registry and never
    refitted, and the last local delivery day it was fitted on (its forecasts of days up to then are
    in-sample)."""

    name: str
    version: str
    train_end: dt.date
    model: object  # the pyfunc model (models.mlflow_model.load_forecaster)
    columns: list[str]  # what its signature takes

    @classmethod
    def current(cls, settings: AurumSettings, market: str) -> ServedChampion | None:
        """The version behind ``champion`` (None: there is none yet), loaded.

        Raises:
            RegistryError: its training end is unknown (no ``train_end`` version tag, no ``data_end`` tag
                on its run), so in-sample days could not be told apart.
        """
        name = tracking.model_name(settings, market)
        record = ml.alias_version(name, approval.CHAMPION)
        if record is None:
            return None
        model = ml.load_forecaster(f"models:/{name}/{record.version}")
        return cls(name, record.version, fitted_until(record), model,
                   list(model.metadata.get_input_schema().input_names()))

    def judged_from(self, window: backtest.BacktestWindow) -> dt.date:
        """The first day of ``window`` after this version's training data: its forecasts from then on are
        out of sample.

        Raises:
            TrainingDataError: fewer than ``approval.MIN_JUDGED_DAYS`` such days.
        """
        first = max(window.start, self.train_end + dt.timedelta(days=1))
        if (window.end - first).days < approval.MIN_JUDGED_DAYS:
            raise TrainingDataError(
                f"the served champion {self.name} version {self.version} was fitted on days up to {self.train_end}, "
                f"so {max((window.end - first).days, 0)} days of the backtest window {window.start} .. "
                f"{window.end - dt.timedelta(days=1)} are out of its sample; at least {approval.MIN_JUDGED_DAYS} are "
                "needed to judge it frozen (its forecasts of days it was fitted on are in-sample); expected a window "
                f"ending on or after {first + dt.timedelta(days=approval.MIN_JUDGED_DAYS)} (a later --as-of), or "
                "--against recipe")
        return first

    def predict(self, features: pd.DataFrame, quantiles: tuple[float, ...]) -> pd.DataFrame:
        """Its forecasts of feature rows, through the pyfunc as serving calls it."""
        missing = [c for c in self.columns if c not in features.columns]
        if missing:
            raise TrainingDataError(f"the served champion {self.name} version {self.version} reads {missing}, which "
                                    f"the candidate's training data lacks; expected the same feature service")
        return self.model.predict(ml.pyfunc_input(features[self.columns]), params={"quantiles": list(quantiles)})


def fitted_until(record: ml.VersionRecord) -> dt.date:
    """The last local delivery day a registered version was fitted on: its ``train_end`` tag, or (versions
    registered before that tag) the ``data_end`` tag of its training run, whose data it was fitted on up to
    the end.

    Raises:
        RegistryError: neither tag is there or readable.
    """
    where = f"{record.name} version {record.version}"
    text = record.tags.get("train_end")
    run_id = record.run_id or record.tags.get("run_id")
    if not text and run_id:
        try:
            text = ml.run_record(run_id)["tags"].get("data_end")
        except Exception as exc:  # noqa: BLE001 - the adapter re-raises MLflow's own exception type
            raise RegistryError(f"{where}: its training run {run_id!r} cannot be read ({type(exc).__name__}), so "
                                "its training end is unknown") from exc
    try:
        return dt.date.fromisoformat(text or "")
    except ValueError:
        raise RegistryError(f"{where}: training end {text!r} is not a day; expected a train_end version tag or a "
                            f"data_end tag on its run {run_id!r} (YYYY-MM-DD), which aurum train writes, to tell "
                            "its in-sample days from the others") from None


def approve_candidate(session: Session, market: str, version: str, candidate: backtest.Backtest | None = None,
                      *, data: TrainingData | None = None, against: str = approval.RECIPE,
                      served: ServedChampion | None = None) -> approval.Decision:
    """The approval gate for one registered version (see :mod:`training.approval`).

    ``against="recipe"``: the champion's recipe is backtested again on the version's window;
    ``"served"``: the champion version (``served``, loaded here if not given) forecasts the window frozen,
    and both are judged on the days after its training data only.

    Raises (nothing recorded):
        ConfigurationError: an unknown mode.
        TrainingDataError: (served) fewer than ``approval.MIN_JUDGED_DAYS`` days after the champion's
            training data in the window.
    """
    approval.check_against(against)
    settings = session.settings
    name = tracking.model_name(settings, market)
    record = ml.version(name, version)
    champion = ml.alias_version(name, approval.CHAMPION)
    if champion is not None and champion.version == record.version:
        return approval.Decision(True, f"version {version} already is the champion", against=against,
                                 champion_version=champion.version)
    window = backtest.BacktestWindow(dt.date.fromisoformat(record.tags["backtest_start"]),
                                     dt.date.fromisoformat(record.tags["backtest_end"]),
                                     int(record.tags.get("refit_days") or 7),
                                     int(record.tags["train_days"]) if record.tags.get("train_days") else None)
    last = window.end - dt.timedelta(days=1)
    judged_from = window.start
    if champion is not None and against == approval.SERVED:
        if served is None or served.version != champion.version:
            served = ServedChampion.current(settings, market)
        judged_from = served.judged_from(window)
    needs_data = candidate is None or champion is not None
    if needs_data and data is None:  # what was known up to the window's end (a version trained as of a day)
        data = load_data(session, market, (window.end - window.start).days, end=window.end)
    if candidate is None:
        candidate = backtest.run(data, ModelSpec.from_json(record.tags["model_spec"]).build, window, name="candidate")
    champion_bt, basis = None, ""
    if champion is not None and against == approval.RECIPE:
        spec = ModelSpec.from_json(champion.tags["model_spec"])  # judged on its median and hours: no intervals needed
        champion_bt = backtest.run(data, functools.partial(spec.build, calibrated=False), window, name="champion")
        basis = f"against the recipe of champion v{champion.version} ({spec.kind}) backtested on {window.start} .. {last}"
    elif champion is not None:
        champion_bt = backtest.frozen(data, served.predict, window, name="champion", quantiles=candidate.quantiles)
        basis = (f"against the served champion v{champion.version} (frozen, fitted on days up to {served.train_end}) "
                 f"on {judged_from} .. {last}")
        if judged_from > window.start:  # its forecasts of the days it was fitted on are in-sample: not judged
            candidate, champion_bt = backtest.days_from(candidate, judged_from), backtest.days_from(champion_bt, judged_from)
            basis += (f" ({(judged_from - window.start).days} earlier backtest days are in its training data, "
                      "in-sample: not judged)")
    decision = approval.judge(candidate, champion_bt, settings.approval, against=against, basis=basis)
    decision.champion_version = champion.version if champion is not None else None
    approval.apply_decision(settings, name, record.version, decision)
    return decision


def promote(settings: AurumSettings, market: str, version: str, why: str, who: str | None = None) -> str | None:
    """Make ``version`` the champion by hand; returns the previous champion's version."""
    tracking.open_tracking(settings)
    name = tracking.model_name(settings, market)
    try:
        record = ml.version(name, version)
    except Exception as exc:  # noqa: BLE001 - MLflow raises its own exception type
        raise RegistryError(f"model {name!r} has no version {version!r}; see aurum models list --market {market}") from exc
    previous = ml.alias_version(name, approval.CHAMPION)
    approval.change_alias(settings, name, approval.CHAMPION, record.version, action="promote", why=why, who=who,
                          previous=previous.version if previous else None)
    return previous.version if previous else None


def rollback(settings: AurumSettings, market: str, why: str, who: str | None = None) -> str:
    """Point ``champion`` back at the version it pointed at before the current one; returns it."""
    tracking.open_tracking(settings)
    name = tracking.model_name(settings, market)
    current = ml.alias_version(name, approval.CHAMPION)
    if current is None:
        raise RegistryError(f"model {name!r} has no champion to roll back")
    for entry in approval.history(settings, name):
        if entry["alias"] == approval.CHAMPION and entry["version"] == current.version and entry["previous_version"]:
            target = entry["previous_version"]
            approval.change_alias(settings, name, approval.CHAMPION, target, action="rollback", why=why, who=who,
                                  previous=current.version)
            return target
    raise RegistryError(f"model {name!r}: no earlier champion is recorded before version {current.version}")


def list_versions(settings: AurumSettings, market: str) -> list[ml.VersionRecord]:
    tracking.open_tracking(settings)
    return ml.versions(tracking.model_name(settings, market))
