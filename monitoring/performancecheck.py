"""A performance check of a market's serving champion: what ``aurum monitor performance`` runs.

In order, so that a bad request leaves nothing behind:

1. resolve the market, check the forecast archive's columns (:mod:`monitoring.forecastlog`), the
   champion and its backtest expectation (:mod:`monitoring.expectation`); an unknown market, a
   missing archive or column, no champion, a champion whose run recorded no backtest errors is an
   error before anything is written;
2. read the window's archived forecasts and the market's prices, keep what counts, one forecast per
   model version and hour, and score the hours whose price is published (:mod:`monitoring.performance`);
   a window without the champion's forecasts or without any published price is an error;
3. judge the performance rules (``error_ratio``; ``coverage``, its bands widened to what sampling
   explains over the window's days) and compare the state with the previous performance check's;
4. write the Evidently report (regression metrics of the live hours against the backtest hours) and
   a JSON summary under ``home/monitoring/reports/<market>/performance_<first>_<last>_<run id>.*``;
5. POST an alert to the webhook when the state changed;
6. append the check's metrics to ``monitoring.monitoring_metrics``;
7. log the check to MLflow (one run, nested under ``aurum monitor run``'s when active; metrics,
   ``mae_by_hour`` per step, tables per hour and lead time, the report and summary) and the latest
   state as ``monitoring.performance.*`` tags on the champion's version;
8. add the report and the check's trend to the market's Evidently workspace project.

Importing this module does not import Feast: a performance check reads Iceberg and MLflow only.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.errors import MonitoringDataError
from features.lake import MONITORING_METRICS_TABLE, Lake
from features.marketdata import MarketData
from features.markets import Market
from features.settings import AurumSettings
from models import mlflow_model as ml
from monitoring import alerts, dashboard, forecastlog, metricstore, records
from monitoring.alerts import Alert, Delivery, RuleOutcome, State
from monitoring.champion import Champion, champion
from monitoring.expectation import Expectation
from monitoring.performance import COVERAGE, LEAD_BIN_HOURS, GroupPerformance, PerformanceAssessment, assess

MONITOR = "performance"
DEDUPLICATION = ("one forecast per (model name, version, delivery hour): the latest issued by gate closure on D-1 "
                 "(the most informed forecast available for the auction); among equal issue times the first "
                 "served; scenario rows never count; shadow and challenger rows are judged apart")


@dataclass
class PerformanceCheck:
    """The outcome of one performance check."""

    run_id: str
    market: str
    champion: Champion
    window_start: dt.date
    window_end: dt.date  # exclusive
    computed_at: dt.datetime
    as_of: pd.Timestamp
    assessment: PerformanceAssessment
    outcomes: list[RuleOutcome]
    state: State
    previous: State | None
    alert: Alert | None
    delivery: Delivery | None
    report_html: Path
    summary_json: Path
    mlflow_run_id: str | None
    summary: dict

    @property
    def exit_code(self) -> int:
        return alerts.EXIT_CODES[self.state]


def local_bounds(market: Market, start: dt.date, end: dt.date) -> tuple[pd.Timestamp, pd.Timestamp]:
    """UTC instants of local midnight of ``start`` and of ``end``."""
    return tuple(pd.Timestamp(d).tz_localize(market.timezone).tz_convert("UTC") for d in (start, end))


def backtest_rows(expectation: Expectation, market: Market) -> pd.DataFrame | None:
    """The champion's backtest hours in the layout of :meth:`GroupPerformance.per_row` (the report's reference)."""
    b = expectation.backtest
    if b is None or b.empty or "actual" not in b.columns or "q50" not in b.columns:
        return None
    rows = b.copy()
    rows["delivery_start"] = pd.to_datetime(rows["delivery_start"], utc=True)
    rows["day"] = pd.to_datetime(rows["day"])
    issued = pd.to_datetime(rows["issued_at"], utc=True) if "issued_at" in rows.columns else rows["delivery_start"]
    lead = (rows["delivery_start"] - issued) / pd.Timedelta(hours=1)
    rows["lead_bin"] = ((lead // LEAD_BIN_HOURS) * LEAD_BIN_HOURS).astype("int64")
    rows = rows[rows["actual"].notna()].reset_index(drop=True)
    return GroupPerformance(expectation.run_id, "", "backtest", False, rows, 0, 0).per_row()


class PerformanceMonitor:
    """One market's champion, its backtest expectation and the lake; open once, check many windows."""

    def __init__(self, settings: AurumSettings, market: Market, champion: Champion, expectation: Expectation,
                 lake: Lake):
        self.settings = settings
        self.market = market
        self.champion = champion
        self.expectation = expectation
        self.lake = lake

    @classmethod
    def open(cls, settings: AurumSettings, market: str) -> PerformanceMonitor:
        """Resolve the market, check the archive, find the champion and its backtest expectation.

        Raises:
            UnknownMarketError, MonitoringDataError (no archive), ForecastArchiveError (columns missing),
            NoChampionError, LineageError (no run or no backtest metrics), RegistryUnavailableError.
        """
        lake = Lake.open(settings, create=False)
        m = MarketData(lake).registry().get(market)
        forecastlog.check_archive(lake, m.code)
        champ = champion(settings, m.code, lineage=False)
        return cls(settings, m, champ, Expectation.of(settings, champ), lake)

    def default_end(self, as_of: pd.Timestamp) -> dt.date:
        """The day after the market's latest local delivery day with a price published by ``as_of``."""
        prices = MarketData(self.lake).prices(self.market.code, end=as_of + pd.Timedelta(days=3))
        published = prices[pd.to_datetime(prices["published_at"], utc=True) <= as_of]
        if published.empty:
            raise MonitoringDataError(f"market {self.market.code!r} has no price published by {as_of.isoformat()} "
                                      "in the lake; ingest prices first")
        last = pd.Timestamp(published["delivery_start"].max()).tz_convert(self.market.timezone).date()
        return last + dt.timedelta(days=1)

    def assess(self, start: dt.date, end: dt.date, as_of: pd.Timestamp) -> PerformanceAssessment:
        """The performance of the champion's archived forecasts for the local days ``[start, end)``."""
        lo, hi = local_bounds(self.market, start, end)
        rows = forecastlog.read_window(self.lake, self.market.code, lo, hi)
        prices = MarketData(self.lake).prices(self.market.code, lo - pd.Timedelta(days=8), hi)
        prices["delivery_start"] = pd.to_datetime(prices["delivery_start"], utc=True)
        where = f"market {self.market.code!r}, local days {start} .. {end - dt.timedelta(days=1)}"
        return assess(rows, prices, self.market, self.champion.model_name, self.champion.version, self.expectation,
                      window_days=(end - start).days, as_of=as_of, where=where,
                      days=(start, end - dt.timedelta(days=1)))

    def rules(self, days: int) -> list[alerts.Rule]:
        """The performance rules of the market, the coverage bands widened for a window of ``days`` days."""
        ms = self.settings.monitoring
        return [alerts.widen_for_sampling(r, days, warn_z=ms.coverage_warn_z, alert_z=ms.coverage_alert_z)
                for r in alerts.rules_for(self.settings, self.market.code, MONITOR)]

    def check(self, days: int, end: dt.date | None = None, *, as_of: dt.datetime | None = None,
              webhook_url: str | None = None, progress: Callable[[str], None] | None = None) -> PerformanceCheck:
        """Run one performance check of the local days ``[end - days, end)`` (see the module docstring).

        ``as_of`` (default now): prices published later count as not yet arrived.
        """
        say = progress or (lambda msg: None)
        settings, code, champ = self.settings, self.market.code, self.champion
        url = webhook_url or settings.monitoring.webhook_url
        if url:
            alerts.check_webhook_url(url)
        as_of_ts = pd.Timestamp(as_of or dt.datetime.now(dt.timezone.utc))
        as_of_ts = as_of_ts.tz_localize("UTC") if as_of_ts.tzinfo is None else as_of_ts.tz_convert("UTC")
        end = end or self.default_end(as_of_ts)
        start = end - dt.timedelta(days=days)
        say(f"archived forecasts of {champ.model_name} v{champ.version} for {code} {start} .. "
            f"{end - dt.timedelta(days=1)}, and the prices published by {as_of_ts.isoformat(timespec='minutes')}")
        a = self.assess(start, end, as_of_ts)
        metrics = a.metrics()
        outcomes = alerts.evaluate(self.rules(a.champion.days), metrics)
        state = alerts.overall(outcomes)
        last = metricstore.last_state(self.lake, code, MONITOR)
        previous = State.parse(last["state"]) if last is not None else None
        run_id = uuid.uuid4().hex[:16]
        computed_at = dt.datetime.now(dt.timezone.utc)
        html, summary_path = records.report_paths(settings, code, MONITOR, start, end, run_id)

        say("Evidently report")
        from monitoring import evidently_adapter  # seconds to import: only when a report is made

        window_end = local_bounds(self.market, start, end)[1].tz_localize(None).to_pydatetime()
        current = a.champion.per_row()
        report = evidently_adapter.performance_report(
            current, backtest_rows(self.expectation, self.market), timestamp=window_end, tags=[MONITOR],
            metadata={"run_id": run_id, "market": code, "model_version": champ.version,
                      "window": f"{start}..{end - dt.timedelta(days=1)}"})
        report.save_html(html)
        means = report.means()
        engine = {"abs_error": metrics.get("mae"), COVERAGE: metrics.get(COVERAGE),
                  **{c: metrics.get(c) for c in means if c.startswith("pinball_")}}
        agrees = all(v is not None and abs(means[k] - v) <= 1e-9 * max(1.0, abs(v)) for k, v in engine.items()
                     if k in means)

        alert = delivery = None
        if alerts.changed(previous, state):
            alert = Alert(code, MONITOR, champ.model_name, champ.version, previous, state, run_id, start, end,
                          computed_at, outcomes, {"report": str(html), "summary": str(summary_path)})
            if url:
                delivery = alerts.deliver(alert, url, settings.monitoring.webhook_timeout_s)
        summary = self._summary(run_id, start, end, computed_at, a, metrics, outcomes, state, previous, alert,
                                delivery, html, means, agrees)
        records.write_json(summary_path, summary)
        rows = records.metric_rows(
            run_id=run_id, market=code, timezone=self.market.timezone, model_name=champ.model_name,
            model_version=champ.version, monitor=MONITOR, start=start, end=end, computed_at=computed_at,
            metrics=metrics, outcomes=outcomes, state=state, alert=alert, delivery=delivery)
        metricstore.append(self.lake, rows)
        mlflow_run_id = self._log_mlflow(run_id, start, end, a, metrics, state, html, summary_path)
        summary["mlflow"]["run_id"] = mlflow_run_id
        say("Evidently workspace")
        summary["workspace"] = {"path": dashboard.workspace_dir(settings), "project_id": dashboard.record_check(
            settings, code, rows, report, f"performance {start}..{end - dt.timedelta(days=1)} ({run_id})")}
        records.write_json(summary_path, summary)
        return PerformanceCheck(run_id, code, champ, start, end, computed_at, as_of_ts, a, outcomes, state, previous,
                                alert, delivery, html, summary_path, mlflow_run_id, records.clean(summary))

    # ---------------------------------------------------------------- records

    def _summary(self, run_id, start, end, computed_at, a: PerformanceAssessment, metrics, outcomes, state,
                 previous, alert, delivery, html, means, agrees) -> dict:
        c = a.champion
        hourly = c.by("hour")
        ratios = a.hourly_ratios()
        hourly["error_ratio"] = hourly["hour"].map(ratios)
        return records.clean({
            "run_id": run_id, "monitor": MONITOR, "market": self.market.code,
            "computed_at": computed_at.isoformat(), "as_of": a.as_of.isoformat(),
            "model": {"name": self.champion.model_name, "version": self.champion.version,
                      "uri": f"models:/{self.champion.model_name}/{self.champion.version}",
                      "training_run_id": self.champion.run_id},
            "window": {"start": start, "end_exclusive": end, "last_day": end - dt.timedelta(days=1),
                       "days": (end - start).days, "days_with_actuals": c.days, "hours": c.hours,
                       "pending_hours": c.pending_hours},
            "expectation": a.expectation.summary(),
            "selection": {**a.selection.counts(), "rule": DEDUPLICATION},
            "method": {"actuals": "prices with published_at at or before as_of",
                       "rmae": "MAE / MAE of the weekly naive forecast (same local hour 7 days earlier) on the same hours",
                       "lead_time": f"delivery_start - issued_at, bins of {LEAD_BIN_HOURS} hours",
                       "error_ratio": "live MAE / backtest MAE",
                       "coverage_rule": "bands widened to 0.8 ± z standard errors over the window's days "
                                        f"(warn z={self.settings.monitoring.coverage_warn_z}, alert "
                                        f"z={self.settings.monitoring.coverage_alert_z})"},
            "metrics": metrics,
            "by_hour": hourly.to_dict("records"),
            "by_lead": c.by("lead_bin").to_dict("records"),
            "challengers": [{"model_name": g.model_name, "version": g.model_version, "alias": g.alias,
                             "shadow": g.shadow, "hours": g.hours, "pending_hours": g.pending_hours,
                             "metrics": g.overall(), **a.versus_champion(g)} for g in a.challengers],
            "rules": [o.as_dict() for o in outcomes],
            "state": state.label, "previous_state": previous.label if previous is not None else None,
            "exit_code": alerts.EXIT_CODES[state],
            "alert": alert.body() if alert is not None else None,
            "delivery": vars(delivery) if delivery is not None else None,
            "evidently": {"html": html, "means": means, "agrees_with_engine": agrees,
                          "reference": "the champion's backtest hours" if a.expectation.backtest is not None else None},
            "table": MONITORING_METRICS_TABLE,
            "mlflow": {"experiment": self.settings.monitoring.experiment, "run_id": None},
        })

    def _log_mlflow(self, run_id, start, end, a: PerformanceAssessment, metrics, state: State, html: Path,
                    summary: Path) -> str:
        settings, champ = self.settings, self.champion
        ml.configure(settings.mlflow_tracking_uri())  # this market's store, whatever the process opened since
        experiment = ml.experiment(settings.monitoring.experiment, settings.mlflow_artifact_root())
        last = end - dt.timedelta(days=1)
        tags = {"monitor": MONITOR, "market": self.market.code, "model_name": champ.model_name,
                "model_version": champ.version, "window_start": str(start), "window_last_day": str(last),
                "state": state.label, "aurum_run_id": run_id, "training_run_id": champ.run_id or ""}
        with ml.run(experiment, f"performance {self.market.code} {start}..{last}", tags=tags,
                    nested=True) as mlflow_run_id:
            ml.log_params({"window_days": (end - start).days, "as_of": a.as_of.isoformat(),
                           "backtest_window": "..".join(map(str, a.expectation.window or ())) or "unknown",
                           "lead_bin_hours": LEAD_BIN_HOURS, "deduplication": DEDUPLICATION[:250]})
            ml.log_metrics({k: v for k, v in metrics.items() if ".hour_" not in k} | {"state": float(state)})
            for hour, value in a.champion.by("hour").set_index("hour")["mae"].items():
                ml.log_metrics({"mae_by_hour": value}, step=int(hour))
            with tempfile.TemporaryDirectory() as tmp:
                for key, name in (("hour", "by_hour.csv"), ("lead_bin", "by_lead_time.csv")):
                    path = Path(tmp) / name
                    a.champion.by(key).to_csv(path, index=False)
                    ml.log_artifact(path, "monitoring")
            ml.log_artifact(html, "monitoring")
            ml.log_artifact(summary, "monitoring")
        ml.set_version_tags(champ.model_name, champ.version, {
            "monitoring.performance.state": state.label, "monitoring.performance.window": f"{start}..{last}",
            "monitoring.performance.error_ratio": f"{metrics.get('error_ratio', math.nan):.4f}",
            "monitoring.performance.coverage_0.8": f"{metrics.get(COVERAGE, math.nan):.4f}",
            "monitoring.performance.checked_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "monitoring.performance.run_id": run_id, "monitoring.performance.mlflow_run_id": mlflow_run_id})
        return mlflow_run_id


def run_performance(settings: AurumSettings, market: str, days: int, end: dt.date | None = None, *,
                    as_of: dt.datetime | None = None, webhook_url: str | None = None,
                    progress: Callable[[str], None] | None = None) -> PerformanceCheck:
    """One performance check of ``market``'s champion over the local days ``[end - days, end)`` (default end:
    the day after the latest day with a published price)."""
    if webhook_url or settings.monitoring.webhook_url:
        alerts.check_webhook_url(webhook_url or settings.monitoring.webhook_url)  # before any work
    return PerformanceMonitor.open(settings, market).check(days, end, as_of=as_of, webhook_url=webhook_url,
                                                           progress=progress)
