"""A drift check of a market's serving champion: what ``aurum monitor drift`` runs.

In order, so that a bad request leaves nothing behind:

1. resolve the market, its champion and the champion's reference (:mod:`monitoring.reference`);
   an unknown market, no champion, a champion without lineage or a window without features is an
   error before anything is written;
2. read the window's features as known at each issue time and the champion's median forecasts,
   and score them against the reference's matching season (:mod:`monitoring.drift`);
3. judge the drift rules (:mod:`monitoring.alerts`) and compare the state with the previous check's;
4. write the Evidently HTML report and a JSON summary under
   ``home/monitoring/reports/<market>/drift_<first day>_<last day>_<run id>.{html,json}``;
5. POST an alert to the webhook when the state changed;
6. append the check's metrics to the Iceberg table ``monitoring.monitoring_metrics`` (where the
   state persists for the next check);
7. log the check to MLflow: one run per check in the experiment ``aurum-monitoring`` (metrics,
   parameters, the report and summary as artifacts, tags naming the model version; nested under the
   run of ``aurum monitor run`` when one is active), and the latest state as tags
   ``monitoring.drift.*`` on the champion's model version;
8. add the report and the check's trend to the market's Evidently workspace project
   (:mod:`monitoring.dashboard`), which ``aurum monitor ui`` serves.

Steps 3-8 are :func:`monitoring.checkflow.record`, the same for every monitor; this module supplies the
drift assessment, its summary sections, metric labels, report and MLflow details. See
:mod:`monitoring.records` for what every check leaves behind.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from features import featurestore
from features.errors import MonitoringDataError
from features.lake import Lake
from features.marketdata import MarketData
from features.markets import Market
from features.settings import AurumSettings
from monitoring import alerts, checkflow
from monitoring.champion import Champion, champion
from monitoring.drift import DAY, DriftAssessment, assess
from monitoring.reference import Reference
from monitoring.windows import ChampionModel, latest_day, service_frame, with_predictions

MONITOR = "drift"


@dataclass
class DriftCheck(checkflow.Check):
    """The outcome of one drift check."""

    assessment: DriftAssessment


@dataclass(eq=False)
class DriftMonitor:
    """One market's champion, its reference, and the stores a drift check reads; open once, check many windows."""

    settings: AurumSettings
    market: Market
    champion: Champion
    reference: Reference
    lake: Lake
    store: object  # the Feast feature store (features.featurestore.open_store)
    model: ChampionModel

    @classmethod
    def open(cls, settings: AurumSettings, market: str, *, progress: Callable[[str], None] | None = None
             ) -> DriftMonitor:
        """Resolve the market, its champion and reference (built and cached on first use).

        Raises:
            UnknownMarketError, NoChampionError, LineageError, MonitoringDataError, RegistryUnavailableError.
        """
        lake = Lake.open(settings, create=False)
        m = MarketData(lake).registry().get(market)
        champ = champion(settings, market)
        store = featurestore.open_store(settings)
        reference = Reference.for_champion(settings, market, champion=champ, lake=lake, store=store, progress=progress)
        model = ChampionModel.load(champ.model_uri, settings.mlflow_tracking_uri())
        return cls(settings, m, champ, reference, lake, store, model)

    def default_end(self) -> dt.date:
        """The day after the market's latest local delivery day with prices."""
        last = latest_day(self.lake, self.market)
        if last is None:
            raise MonitoringDataError(f"market {self.market.code!r} has no prices in the lake; ingest them first")
        return last + dt.timedelta(days=1)

    def frame(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        """Features (as known at issue time) and the champion's median forecast of the local days ``[start, end)``."""
        service = self.champion.lineage.feature_service
        frame = service_frame(self.store, service, self.market, start, end, lake=self.lake)
        return with_predictions(frame, self.model)

    def assess(self, frame: pd.DataFrame, start: dt.date, end: dt.date) -> DriftAssessment:
        """The drift of the rows of ``frame`` in the local days ``[start, end)``."""
        rows = frame[(frame[DAY] >= pd.Timestamp(start)) & (frame[DAY] < pd.Timestamp(end))]
        if rows.empty:
            raise MonitoringDataError(f"no rows of market {self.market.code!r} in the local days {start} .. "
                                      f"{end - dt.timedelta(days=1)}")
        window_end = pd.Timestamp(end).tz_localize(self.market.timezone).tz_convert("UTC")
        try:
            return assess(self.reference.stats, rows, self.settings.monitoring, window_end=window_end)
        except MonitoringDataError as exc:
            raise MonitoringDataError(f"market {self.market.code!r}, local days {start} .. "
                                      f"{end - dt.timedelta(days=1)}: {exc}") from exc

    def check(self, days: int, end: dt.date | None = None, *, webhook_url: str | None = None,
              progress: Callable[[str], None] | None = None) -> DriftCheck:
        """Run one drift check of the local days ``[end - days, end)`` (see the module docstring)."""
        say = progress or (lambda msg: None)
        url = checkflow.webhook(self.settings, webhook_url)
        end = end or self.default_end()
        start = end - dt.timedelta(days=days)
        champ = self.champion
        say(f"features of {self.market.code} {start} .. {end - dt.timedelta(days=1)} through "
            f"{champ.lineage.feature_service}, and {champ.model_name} v{champ.version}'s forecasts")
        assessment = self.assess(self.frame(start, end), start, end)
        return checkflow.record(self.settings, self.lake, self.market, champ, MONITOR, start, end,
                                self.findings(assessment, start, end), url=url, say=say, result=DriftCheck)

    def findings(self, a: DriftAssessment, start: dt.date, end: dt.date) -> checkflow.Findings:
        """What a drift check records beyond what every check does: the summary's sections (reference, method,
        every feature's score), the feature rows' ``ok``/``drift`` labels, the report and its MLflow details."""
        ms = self.settings.monitoring
        metrics = a.metrics()
        drift_share_alert = alerts.levels_for(self.settings, self.market.code).drift_share_alert

        def report(**place):
            from monitoring import evidently_adapter  # seconds to import: only when a report is made

            return evidently_adapter.drift_report(a, drift_share=drift_share_alert, **place)

        def evidently(report) -> dict:
            ev_scores = report.scores()
            engine = {c.column: c.score for c in (*a.columns, a.prediction) if c is not None}
            agrees = all(abs(ev_scores[k] - v) <= 1e-9 * max(1.0, abs(v)) for k, v in engine.items()
                         if k in ev_scores)
            return {"drifted_features": report.drifted(), "agrees_with_engine": agrees}

        def column(c):
            return {"column": c.column, "role": c.role, "score": c.score, "threshold": c.threshold,
                    "scale": c.scale, "drifted": c.drifted}

        labels = {f"drift.{c.column}": ("drift" if c.drifted else "ok") for c in a.columns}
        if a.prediction is not None:
            labels["prediction_drift_score"] = "drift" if a.prediction.drifted else "ok"
        return checkflow.Findings(
            assessment=a, metrics=metrics, rules=alerts.rules_for(self.settings, self.market.code, MONITOR),
            report=report, evidently=evidently,
            window={"days_with_data": a.window_days, "rows": a.window_rows, "rows_scored": len(a.current)},
            sections={
                "reference": {**self.reference.summary(), "matched_days": a.reference_days,
                              "matched_rows_scored": len(a.reference), "season_gap_days": a.season_gap_days,
                              "window_days_inside_reference": self._overlap(start, end)},
                "method": {"numerical": "Wasserstein distance / whole-reference std, against the reference days "
                                        f"within {ms.season_half_width_days} calendar days of the window's days",
                           "categorical": "total variation distance of category shares",
                           "thresholds": f"{ms.threshold_margin} x the largest week-to-season score of the "
                                         "reference",
                           "calendar_features": "not tested: the seasonal matching holds them equal"},
                "features": [column(c) for c in a.columns],
                "prediction": column(a.prediction) if a.prediction is not None else None,
                "metrics": metrics},
            labels=labels,
            mlflow_params={"reference_first_day": self.reference.first_day,
                           "reference_last_day": self.reference.last_day,
                           "season_half_width_days": ms.season_half_width_days,
                           "threshold_margin": ms.threshold_margin},
            mlflow_metrics=metrics,
            version_tags={"drift_share": f"{metrics['drift_share']:.4f}",
                          "prediction_drift": f"{metrics.get('prediction_drift', math.nan):.4f}"})

    def _overlap(self, start: dt.date, end: dt.date) -> int:
        """Days of the window the champion was trained on (compared with themselves, they look undrifted)."""
        first, last = self.reference.first_day, self.reference.last_day
        return max(0, (min(end - dt.timedelta(days=1), last) - max(start, first)).days + 1)


def run_drift(settings: AurumSettings, market: str, days: int, end: dt.date | None = None, *,
              webhook_url: str | None = None, progress: Callable[[str], None] | None = None) -> DriftCheck:
    """One drift check of ``market``'s champion over the local days ``[end - days, end)`` (default end: the
    day after the latest day with prices)."""
    checkflow.webhook(settings, webhook_url)  # before any work
    return DriftMonitor.open(settings, market, progress=progress).check(days, end, webhook_url=webhook_url,
                                                                          progress=progress)
