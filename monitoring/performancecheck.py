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

Steps 3-8 are :func:`monitoring.checkflow.record`, the same for every monitor; this module supplies the
performance assessment, its summary sections, report and MLflow details.

Importing this module does not import Feast: a performance check reads Iceberg and MLflow only.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from features.errors import MonitoringDataError
from features.lake import Lake
from features.marketdata import MarketData
from features.markets import Market
from features.settings import AurumSettings
from monitoring import alerts, checkflow, forecastlog
from monitoring.champion import Champion, champion
from monitoring.expectation import Expectation
from monitoring.performance import COVERAGE, LEAD_BIN_HOURS, GroupPerformance, PerformanceAssessment, assess

MONITOR = "performance"
DEDUPLICATION = ("one forecast per (model name, version, delivery hour): the latest issued by gate closure on D-1 "
                 "(the most informed forecast available for the auction); among equal issue times the first "
                 "served; scenario rows never count; shadow and challenger rows are judged apart")


@dataclass
class PerformanceCheck(checkflow.Check):
    """The outcome of one performance check."""

    assessment: PerformanceAssessment
    as_of: pd.Timestamp  # prices published later counted as not yet arrived


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


@dataclass(eq=False)
class PerformanceMonitor:
    """One market's champion, its backtest expectation and the lake; open once, check many windows."""

    settings: AurumSettings
    market: Market
    champion: Champion
    expectation: Expectation
    lake: Lake

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
        champ = self.champion
        url = checkflow.webhook(self.settings, webhook_url)
        as_of_ts = pd.Timestamp(as_of or dt.datetime.now(dt.timezone.utc))
        as_of_ts = as_of_ts.tz_localize("UTC") if as_of_ts.tzinfo is None else as_of_ts.tz_convert("UTC")
        end = end or self.default_end(as_of_ts)
        start = end - dt.timedelta(days=days)
        say(f"archived forecasts of {champ.model_name} v{champ.version} for {self.market.code} {start} .. "
            f"{end - dt.timedelta(days=1)}, and the prices published by {as_of_ts.isoformat(timespec='minutes')}")
        a = self.assess(start, end, as_of_ts)
        return checkflow.record(self.settings, self.lake, self.market, champ, MONITOR, start, end, self.findings(a),
                                url=url, say=say, result=PerformanceCheck, as_of=as_of_ts)

    def findings(self, a: PerformanceAssessment) -> checkflow.Findings:
        """What a performance check records beyond what every check does: the summary's sections (expectation,
        selection, method, metrics per hour and lead time, challengers), the report against the backtest hours,
        and per-hour MAE and tables in MLflow."""
        ms = self.settings.monitoring
        c = a.champion
        metrics = a.metrics()

        def report(**place):
            from monitoring import evidently_adapter  # seconds to import: only when a report is made

            return evidently_adapter.performance_report(c.per_row(), backtest_rows(self.expectation, self.market),
                                                        **place)

        def evidently(report) -> dict:
            means = report.means()
            engine = {"abs_error": metrics.get("mae"), COVERAGE: metrics.get(COVERAGE),
                      **{k: metrics.get(k) for k in means if k.startswith("pinball_")}}
            agrees = all(v is not None and abs(means[k] - v) <= 1e-9 * max(1.0, abs(v)) for k, v in engine.items()
                         if k in means)
            return {"means": means, "agrees_with_engine": agrees,
                    "reference": "the champion's backtest hours" if a.expectation.backtest is not None else None}

        hourly = c.by("hour")
        hourly["error_ratio"] = hourly["hour"].map(a.hourly_ratios())
        return checkflow.Findings(
            assessment=a, metrics=metrics, rules=self.rules(c.days), report=report, evidently=evidently,
            head={"as_of": a.as_of.isoformat()},
            window={"days_with_actuals": c.days, "hours": c.hours, "pending_hours": c.pending_hours},
            sections={
                "expectation": a.expectation.summary(),
                "selection": {**a.selection.counts(), "rule": DEDUPLICATION},
                "method": {"actuals": "prices with published_at at or before as_of",
                           "rmae": "MAE / MAE of the weekly naive forecast (same local hour 7 days earlier) on the "
                                   "same hours",
                           "lead_time": f"delivery_start - issued_at, bins of {LEAD_BIN_HOURS} hours",
                           "error_ratio": "live MAE / backtest MAE",
                           "coverage_rule": "bands widened to 0.8 ± z standard errors over the window's days "
                                            f"(warn z={ms.coverage_warn_z}, alert z={ms.coverage_alert_z})"},
                "metrics": metrics,
                "by_hour": hourly.to_dict("records"),
                "by_lead": c.by("lead_bin").to_dict("records"),
                "challengers": [{"model_name": g.model_name, "version": g.model_version, "alias": g.alias,
                                 "shadow": g.shadow, "hours": g.hours, "pending_hours": g.pending_hours,
                                 "metrics": g.overall(), **a.versus_champion(g)} for g in a.challengers]},
            mlflow_params={"as_of": a.as_of.isoformat(),
                           "backtest_window": "..".join(map(str, a.expectation.window or ())) or "unknown",
                           "lead_bin_hours": LEAD_BIN_HOURS, "deduplication": DEDUPLICATION[:250]},
            mlflow_metrics={k: v for k, v in metrics.items() if ".hour_" not in k},
            mlflow_steps={"mae_by_hour": c.by("hour").set_index("hour")["mae"].to_dict()},
            mlflow_tables={"by_hour.csv": c.by("hour"), "by_lead_time.csv": c.by("lead_bin")},
            version_tags={"error_ratio": f"{metrics.get('error_ratio', math.nan):.4f}",
                          "coverage_0.8": f"{metrics.get(COVERAGE, math.nan):.4f}"})


def run_performance(settings: AurumSettings, market: str, days: int, end: dt.date | None = None, *,
                    as_of: dt.datetime | None = None, webhook_url: str | None = None,
                    progress: Callable[[str], None] | None = None) -> PerformanceCheck:
    """One performance check of ``market``'s champion over the local days ``[end - days, end)`` (default end:
    the day after the latest day with a published price)."""
    checkflow.webhook(settings, webhook_url)  # before any work
    return PerformanceMonitor.open(settings, market).check(days, end, as_of=as_of, webhook_url=webhook_url,
                                                           progress=progress)
