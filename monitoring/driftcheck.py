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

See :mod:`monitoring.records` for what every check leaves behind.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features import featurestore
from features.errors import MonitoringDataError
from features.lake import MONITORING_METRICS_TABLE, Lake
from features.marketdata import MarketData
from features.markets import Market
from features.settings import AurumSettings
from models import mlflow_model as ml
from monitoring import alerts, dashboard, metricstore, records
from monitoring.alerts import Alert, Delivery, RuleOutcome, State
from monitoring.champion import Champion, champion
from monitoring.drift import DAY, DriftAssessment, assess
from monitoring.reference import Reference
from monitoring.windows import ChampionModel, latest_day, service_frame, with_predictions

MONITOR = "drift"


@dataclass
class DriftCheck:
    """The outcome of one drift check."""

    run_id: str
    market: str
    champion: Champion
    window_start: dt.date
    window_end: dt.date  # exclusive
    computed_at: dt.datetime
    assessment: DriftAssessment
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


class DriftMonitor:
    """One market's champion, its reference, and the stores a drift check reads; open once, check many windows."""

    def __init__(self, settings: AurumSettings, market: Market, champion: Champion, reference: Reference,
                 lake: Lake, store, model: ChampionModel):
        self.settings = settings
        self.market = market
        self.champion = champion
        self.reference = reference
        self.lake = lake
        self.store = store
        self.model = model

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
        settings, code = self.settings, self.market.code
        url = webhook_url or settings.monitoring.webhook_url
        if url:
            alerts.check_webhook_url(url)
        end = end or self.default_end()
        start = end - dt.timedelta(days=days)
        champ = self.champion
        say(f"features of {code} {start} .. {end - dt.timedelta(days=1)} through {champ.lineage.feature_service}, "
            f"and {champ.model_name} v{champ.version}'s forecasts")
        assessment = self.assess(self.frame(start, end), start, end)
        outcomes = alerts.evaluate(alerts.rules_for(settings, code, MONITOR), assessment.metrics())
        state = alerts.overall(outcomes)
        last = metricstore.last_state(self.lake, code, MONITOR)
        previous = State.parse(last["state"]) if last is not None else None
        run_id = uuid.uuid4().hex[:16]
        computed_at = dt.datetime.now(dt.timezone.utc)
        html, summary_path = records.report_paths(settings, code, MONITOR, start, end, run_id)

        say("Evidently report")
        from monitoring import evidently_adapter  # seconds to import: only when a report is made

        drift_share_alert = alerts.levels_for(settings, code).drift_share_alert
        window_end = pd.Timestamp(end).tz_localize(self.market.timezone).tz_convert("UTC").tz_localize(None)
        report = evidently_adapter.drift_report(
            assessment, drift_share=drift_share_alert, timestamp=window_end.to_pydatetime(), tags=[MONITOR],
            metadata={"run_id": run_id, "market": code, "model_version": champ.version,
                      "window": f"{start}..{end - dt.timedelta(days=1)}"})
        report.save_html(html)
        ev_scores = report.scores()
        engine = {c.column: c.score for c in (*assessment.columns, assessment.prediction) if c is not None}
        agrees = all(abs(ev_scores[k] - v) <= 1e-9 * max(1.0, abs(v)) for k, v in engine.items() if k in ev_scores)

        alert = delivery = None
        if alerts.changed(previous, state):
            alert = Alert(code, MONITOR, self.champion.model_name, self.champion.version, previous, state, run_id,
                          start, end, computed_at, outcomes, {"report": str(html), "summary": str(summary_path)})
            if url:
                delivery = alerts.deliver(alert, url, settings.monitoring.webhook_timeout_s)
        summary = self._summary(run_id, start, end, computed_at, assessment, outcomes, state, previous, alert,
                                delivery, html, report.drifted(), agrees)
        records.write_json(summary_path, summary)
        rows = self._rows(run_id, start, end, computed_at, assessment, outcomes, state, alert, delivery)
        metricstore.append(self.lake, rows)
        mlflow_run_id = self._log_mlflow(run_id, start, end, assessment, state, html, summary_path)
        summary["mlflow"]["run_id"] = mlflow_run_id
        say("Evidently workspace")
        summary["workspace"] = {"path": dashboard.workspace_dir(settings), "project_id": dashboard.record_check(
            settings, code, rows, report, f"drift {start}..{end - dt.timedelta(days=1)} ({run_id})")}
        records.write_json(summary_path, summary)
        return DriftCheck(run_id, code, self.champion, start, end, computed_at, assessment, outcomes, state, previous,
                          alert, delivery, html, summary_path, mlflow_run_id, summary)

    # ---------------------------------------------------------------- records

    def _summary(self, run_id, start, end, computed_at, a: DriftAssessment, outcomes, state, previous, alert,
                 delivery, html, evidently_drifted, agrees) -> dict:
        ms = self.settings.monitoring
        def column(c):
            return {"column": c.column, "role": c.role, "score": c.score, "threshold": c.threshold,
                    "scale": c.scale, "drifted": c.drifted}

        return records.clean({
            "run_id": run_id, "monitor": MONITOR, "market": self.market.code, "computed_at": computed_at.isoformat(),
            "model": {"name": self.champion.model_name, "version": self.champion.version,
                      "uri": self.champion.model_uri, "training_run_id": self.champion.lineage.run_id},
            "window": {"start": start, "end_exclusive": end, "last_day": end - dt.timedelta(days=1),
                       "days": (end - start).days, "days_with_data": a.window_days, "rows": a.window_rows,
                       "rows_scored": len(a.current)},
            "reference": {**self.reference.summary(), "matched_days": a.reference_days,
                          "matched_rows_scored": len(a.reference), "season_gap_days": a.season_gap_days,
                          "window_days_inside_reference": self._overlap(start, end)},
            "method": {"numerical": "Wasserstein distance / whole-reference std, against the reference days within "
                                    f"{ms.season_half_width_days} calendar days of the window's days",
                       "categorical": "total variation distance of category shares",
                       "thresholds": f"{ms.threshold_margin} x the largest week-to-season score of the reference",
                       "calendar_features": "not tested: the seasonal matching holds them equal"},
            "features": [column(c) for c in a.columns],
            "prediction": column(a.prediction) if a.prediction is not None else None,
            "metrics": a.metrics(),
            "rules": [o.as_dict() for o in outcomes],
            "state": state.label, "previous_state": previous.label if previous is not None else None,
            "exit_code": alerts.EXIT_CODES[state],
            "alert": alert.body() if alert is not None else None,
            "delivery": vars(delivery) if delivery is not None else None,
            "evidently": {"html": html, "drifted_features": evidently_drifted, "agrees_with_engine": agrees},
            "table": MONITORING_METRICS_TABLE,
            "mlflow": {"experiment": ms.experiment, "run_id": None},
        })

    def _overlap(self, start: dt.date, end: dt.date) -> int:
        """Days of the window the champion was trained on (compared with themselves, they look undrifted)."""
        first, last = self.reference.first_day, self.reference.last_day
        return max(0, (min(end - dt.timedelta(days=1), last) - max(start, first)).days + 1)

    def _rows(self, run_id, start, end, computed_at, a: DriftAssessment, outcomes: list[RuleOutcome],
              state: State, alert: Alert | None, delivery: Delivery | None) -> pd.DataFrame:
        drifted = {f"drift.{c.column}": ("drift" if c.drifted else "ok") for c in a.columns}
        if a.prediction is not None:
            drifted["prediction_drift_score"] = "drift" if a.prediction.drifted else "ok"
        return records.metric_rows(
            run_id=run_id, market=self.market.code, timezone=self.market.timezone,
            model_name=self.champion.model_name, model_version=self.champion.version, monitor=MONITOR, start=start,
            end=end, computed_at=computed_at, metrics=a.metrics(), outcomes=outcomes, state=state, alert=alert,
            delivery=delivery, labels=drifted)

    def _log_mlflow(self, run_id, start, end, a: DriftAssessment, state: State, html: Path, summary: Path) -> str:
        settings, champ = self.settings, self.champion
        ml.configure(settings.mlflow_tracking_uri())  # this market's store, whatever the process opened since
        experiment = ml.experiment(settings.monitoring.experiment, settings.mlflow_artifact_root())
        last = end - dt.timedelta(days=1)
        tags = {"monitor": MONITOR, "market": self.market.code, "model_name": champ.model_name,
                "model_version": champ.version, "window_start": str(start), "window_last_day": str(last),
                "state": state.label, "aurum_run_id": run_id, "training_run_id": champ.lineage.run_id}
        # nested: a child of `aurum monitor run`'s run when one is active, a run of its own otherwise
        with ml.run(experiment, f"drift {self.market.code} {start}..{last}", tags=tags, nested=True) as mlflow_run_id:
            ml.log_params({"window_days": (end - start).days, "reference_first_day": self.reference.first_day,
                           "reference_last_day": self.reference.last_day,
                           "season_half_width_days": settings.monitoring.season_half_width_days,
                           "threshold_margin": settings.monitoring.threshold_margin})
            ml.log_metrics({**a.metrics(), "state": float(state)})
            ml.log_artifact(html, "monitoring")
            ml.log_artifact(summary, "monitoring")
        m = a.metrics()
        ml.set_version_tags(champ.model_name, champ.version, {
            "monitoring.drift.state": state.label, "monitoring.drift.window": f"{start}..{last}",
            "monitoring.drift.drift_share": f"{m['drift_share']:.4f}",
            "monitoring.drift.prediction_drift": f"{m.get('prediction_drift', math.nan):.4f}",
            "monitoring.drift.checked_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "monitoring.drift.run_id": run_id, "monitoring.drift.mlflow_run_id": mlflow_run_id})
        return mlflow_run_id


def run_drift(settings: AurumSettings, market: str, days: int, end: dt.date | None = None, *,
              webhook_url: str | None = None, progress: Callable[[str], None] | None = None) -> DriftCheck:
    """One drift check of ``market``'s champion over the local days ``[end - days, end)`` (default end: the
    day after the latest day with prices)."""
    if webhook_url or settings.monitoring.webhook_url:
        alerts.check_webhook_url(webhook_url or settings.monitoring.webhook_url)  # before any work
    return DriftMonitor.open(settings, market, progress=progress).check(days, end, webhook_url=webhook_url,
                                                                          progress=progress)
