"""The training pipeline: data through the feature service, backtests, an MLflow run, registration, approval.

``train`` is what ``aurum train`` runs. In order, so that a failure leaves nothing half-done:

1. open the MLflow store (an unreachable registry fails here, before any work);
2. load the market's history through the feature service, point in time (``training.dataset``);
3. backtest the candidate and the baselines (weekly naive, LEAR) on the last ``backtest_days``
   days, rolling origin (``training.backtest``), with Diebold-Mariano tests between them;
4. fit the candidate on everything known now;
5. log one MLflow run: parameters, metrics overall and by hour, the backtest table, plots, feature
   importance, lineage; log the model (pyfunc) and register it as a new version of
   ``day_ahead_<MARKET>``;
6. run the approval gate (``training.approval``) against the current champion.
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


def load_data(session: Session, market: str, backtest_days: int, start: dt.date | None = None,
              end: dt.date | None = None) -> TrainingData:
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
          session: Session | None = None, progress: Callable[[str], None] | None = None) -> TrainResult:
    """Train, backtest, log, register and (by default) run the approval gate for one market."""
    say = progress or (lambda msg: None)
    session = session or Session.open(settings)
    data = load_data(session, market, backtest_days)
    end = data.last_day() + dt.timedelta(days=1)
    window = backtest.BacktestWindow(end - dt.timedelta(days=backtest_days), end, refit_days, train_days)
    results, comparison = run_backtests(data, spec, window, baselines=baselines, progress=say)
    final, rows = fit_final(data, spec, train_days)
    say(f"fitted {spec.kind} on {len(rows):,} hours up to {data.last_day()}")
    name = tracking.model_name(settings, market)
    with ml.run(session.experiment_id, f"train {spec.kind} {market}", tags=run_tags(data, spec, "train")) as run_id:
        log_run(data, spec, window, results, comparison)
        info = ml.log_forecaster(final, backtest.model_inputs(rows.head(48), data.features), name="model",
                                 training_features=backtest.model_inputs(rows, data.features))
        record = ml.register(info.model_uri, name, tags={
            "model_spec": spec.to_json(), "market": market, "feature_service": data.service, "run_id": run_id,
            "backtest_start": str(window.start), "backtest_end": str(window.end), "refit_days": str(refit_days),
            "train_days": str(train_days or ""), "git_commit": tracking.git_commit()})
        ml.set_tags({"registered_model": name, "registered_version": record.version})
    say(f"registered {name} version {record.version} (run {run_id})")
    decision = None
    if approve:
        decision = approve_candidate(session, market, record.version, results["candidate"], data=data)
        say(f"approval: {'champion' if decision.promote else 'challenger'}: {decision.reason}")
    return TrainResult(market, run_id, name, record.version, decision, comparison, results)


def fit_final(data: TrainingData, spec: ModelSpec, train_days: int | None):
    """The candidate fitted on every row whose target is known now (the last ``train_days`` days if set)."""
    keep = data.frame[TARGET].notna().to_numpy()
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


def approve_candidate(session: Session, market: str, version: str, candidate: backtest.Backtest | None = None,
                      *, data: TrainingData | None = None) -> approval.Decision:
    """The approval gate for one registered version (see :mod:`training.approval`)."""
    settings = session.settings
    name = tracking.model_name(settings, market)
    record = ml.version(name, version)
    champion = ml.alias_version(name, approval.CHAMPION)
    if champion is not None and champion.version == record.version:
        return approval.Decision(True, f"version {version} already is the champion")
    window = backtest.BacktestWindow(dt.date.fromisoformat(record.tags["backtest_start"]),
                                     dt.date.fromisoformat(record.tags["backtest_end"]),
                                     int(record.tags.get("refit_days") or 7),
                                     int(record.tags["train_days"]) if record.tags.get("train_days") else None)
    needs_data = candidate is None or champion is not None
    if needs_data and data is None:
        data = load_data(session, market, (window.end - window.start).days)
    if candidate is None:
        candidate = backtest.run(data, ModelSpec.from_json(record.tags["model_spec"]).build, window, name="candidate")
    champion_bt = None
    if champion is not None:
        spec = ModelSpec.from_json(champion.tags["model_spec"])  # judged on its median and hours: no intervals needed
        champion_bt = backtest.run(data, functools.partial(spec.build, calibrated=False), window, name="champion")
    decision = approval.judge(candidate, champion_bt, settings.approval)
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
