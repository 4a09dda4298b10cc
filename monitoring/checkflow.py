"""The flow every monitoring check shares once its monitor has assessed a window.

A monitor (:mod:`monitoring.driftcheck`, :mod:`monitoring.performancecheck`) resolves its market and
champion and assesses the window; an error up to there leaves nothing behind. It hands :func:`record`
its :class:`Findings`: the metrics, the rules that judge them, how to build its Evidently report and the
parts of the records that are its own. :func:`record` then, in order:

1. judges the rules and compares the state with the previous check's of the same market and monitor
   (the ``state`` row of ``monitoring.monitoring_metrics``);
2. writes the Evidently HTML report and the JSON summary
   (``home/monitoring/reports/<market>/<monitor>_<first day>_<last day>_<run id>.{html,json}``);
3. on a state change, raises one alert, POSTed to the webhook when one is set;
4. appends the check's metric rows to ``monitoring.monitoring_metrics`` (one commit);
5. logs the check to MLflow: one run in the monitoring experiment (nested under the active run of
   ``aurum monitor run``), and the latest state as ``monitoring.<monitor>.*`` tags on the champion's version;
6. adds the report and the check's trend to the market's Evidently workspace project, and rewrites the
   summary with the MLflow run and the project.

See :mod:`monitoring.records` for the shape of what is written.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pandas as pd

from features.lake import MONITORING_METRICS_TABLE, Lake
from features.markets import Market
from features.settings import AurumSettings
from models import mlflow_model as ml
from monitoring import alerts, dashboard, metricstore, records
from monitoring.alerts import Alert, Delivery, Rule, RuleOutcome, State
from monitoring.champion import Champion


@dataclass
class Check:
    """The outcome of one check, whatever the monitor (each monitor's subclass names its assessment's type)."""

    run_id: str
    market: str
    champion: Champion
    window_start: dt.date
    window_end: dt.date  # exclusive
    computed_at: dt.datetime
    assessment: object
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


@dataclass
class Findings:
    """What a monitor hands to :func:`record`: its assessment of the window and what only it knows of the records.

    Everything every check writes the same way (run id, window bounds, model, rules, state, alert, the
    table's ``state`` and ``alert`` rows, the MLflow run's tags and ``window_days``/``state``, the version's
    ``state``/``window``/``checked_at``/``run_id``/``mlflow_run_id`` tags) is :func:`record`'s.
    """

    assessment: object
    metrics: dict[str, float]  # what the rules judge and the table receives
    rules: list[Rule]
    # builds the Evidently report (an adapter report with ``save_html``) from the keywords ``timestamp``,
    # ``tags`` and ``metadata`` that place it in the workspace; it imports the adapter itself (seconds)
    report: Callable[..., object]
    evidently: Callable[[object], dict]  # the built report's entries in the summary's ``evidently``, beside ``html``
    window: dict  # the summary's ``window`` entries after ``start, end_exclusive, last_day, days``
    sections: dict  # the summary's own sections, in order, between ``window`` and ``rules``
    head: dict = field(default_factory=dict)  # summary entries between ``computed_at`` and ``model``
    labels: dict[str, str] | None = None  # the table's state of metrics no rule judges (default ``ok``)
    mlflow_params: dict[str, object] = field(default_factory=dict)  # beside ``window_days``
    mlflow_metrics: dict[str, float] = field(default_factory=dict)  # beside ``state``
    mlflow_steps: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> value per step
    mlflow_tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # CSV artifacts by file name
    version_tags: dict[str, str] = field(default_factory=dict)  # ``monitoring.<monitor>.<key>`` beside the shared


def webhook(settings: AurumSettings, webhook_url: str | None) -> str | None:
    """The webhook a check alerts (``webhook_url``, else the configured one), its URL checked before any work.

    Raises:
        ConfigurationError: not an http(s) URL.
    """
    url = webhook_url or settings.monitoring.webhook_url
    if url:
        alerts.check_webhook_url(url)
    return url


CheckT = TypeVar("CheckT", bound=Check)


def record(settings: AurumSettings, lake: Lake, market: Market, champion: Champion, monitor: str,
           start: dt.date, end: dt.date, findings: Findings, *, url: str | None, say: Callable[[str], None],
           result: type[CheckT], **extra) -> CheckT:
    """Judge, report, alert and record one check of ``monitor`` over the local days ``[start, end)`` (see the
    module docstring); returns ``result`` (a :class:`Check` subclass) built with ``extra`` fields beside."""
    code, last = market.code, end - dt.timedelta(days=1)
    outcomes = alerts.evaluate(findings.rules, findings.metrics)
    state = alerts.overall(outcomes)
    previous_row = metricstore.last_state(lake, code, monitor)
    previous = State.parse(previous_row["state"]) if previous_row is not None else None
    run_id = uuid.uuid4().hex[:16]
    computed_at = dt.datetime.now(dt.timezone.utc)
    html, summary_path = records.report_paths(settings, code, monitor, start, end, run_id)

    say("Evidently report")
    window_end = pd.Timestamp(end).tz_localize(market.timezone).tz_convert("UTC").tz_localize(None)
    report = findings.report(timestamp=window_end.to_pydatetime(), tags=[monitor], metadata={
        "run_id": run_id, "market": code, "model_version": champion.version, "window": f"{start}..{last}"})
    report.save_html(html)
    evidently = {"html": html, **findings.evidently(report)}

    alert = delivery = None
    if alerts.changed(previous, state):
        alert = Alert(code, monitor, champion.model_name, champion.version, previous, state, run_id, start, end,
                      computed_at, outcomes, {"report": str(html), "summary": str(summary_path)})
        if url:
            delivery = alerts.deliver(alert, url, settings.monitoring.webhook_timeout_s)
    summary = records.clean({
        "run_id": run_id, "monitor": monitor, "market": code, "computed_at": computed_at.isoformat(),
        **findings.head,
        "model": {"name": champion.model_name, "version": champion.version, "uri": champion.model_uri,
                  "training_run_id": champion.run_id},
        "window": {"start": start, "end_exclusive": end, "last_day": last, "days": (end - start).days,
                   **findings.window},
        **findings.sections,
        "rules": [o.as_dict() for o in outcomes],
        "state": state.label, "previous_state": previous.label if previous is not None else None,
        "exit_code": alerts.EXIT_CODES[state],
        "alert": alert.body() if alert is not None else None,
        "delivery": vars(delivery) if delivery is not None else None,
        "evidently": evidently,
        "table": MONITORING_METRICS_TABLE,
        "mlflow": {"experiment": settings.monitoring.experiment, "run_id": None},
    })
    records.write_json(summary_path, summary)
    rows = records.metric_rows(
        run_id=run_id, market=code, timezone=market.timezone, model_name=champion.model_name,
        model_version=champion.version, monitor=monitor, start=start, end=end, computed_at=computed_at,
        metrics=findings.metrics, outcomes=outcomes, state=state, alert=alert, delivery=delivery,
        labels=findings.labels)
    metricstore.append(lake, rows)
    mlflow_run_id = _log_mlflow(settings, code, champion, monitor, run_id, start, end, findings, state, html,
                                summary_path)
    summary["mlflow"]["run_id"] = mlflow_run_id
    say("Evidently workspace")
    summary["workspace"] = {"path": dashboard.workspace_dir(settings), "project_id": dashboard.record_check(
        settings, code, rows, report, f"{monitor} {start}..{last} ({run_id})")}
    records.write_json(summary_path, summary)
    return result(run_id=run_id, market=code, champion=champion, window_start=start, window_end=end,
                  computed_at=computed_at, assessment=findings.assessment, outcomes=outcomes, state=state,
                  previous=previous, alert=alert, delivery=delivery, report_html=html, summary_json=summary_path,
                  mlflow_run_id=mlflow_run_id, summary=records.clean(summary), **extra)


def _log_mlflow(settings: AurumSettings, code: str, champion: Champion, monitor: str, run_id: str, start: dt.date,
                end: dt.date, findings: Findings, state: State, html: Path, summary: Path) -> str:
    """One MLflow run of the check, then the latest state as tags on the champion's version; returns the run id."""
    ml.configure(settings.mlflow_tracking_uri())  # this market's store, whatever the process opened since
    experiment = ml.experiment(settings.monitoring.experiment, settings.mlflow_artifact_root())
    last = end - dt.timedelta(days=1)
    tags = {"monitor": monitor, "market": code, "model_name": champion.model_name,
            "model_version": champion.version, "window_start": str(start), "window_last_day": str(last),
            "state": state.label, "aurum_run_id": run_id, "training_run_id": champion.run_id or ""}
    # nested: a child of `aurum monitor run`'s run when one is active, a run of its own otherwise
    with ml.run(experiment, f"{monitor} {code} {start}..{last}", tags=tags, nested=True) as mlflow_run_id:
        ml.log_params({"window_days": (end - start).days, **findings.mlflow_params})
        ml.log_metrics({**findings.mlflow_metrics, "state": float(state)})
        for name, values in findings.mlflow_steps.items():
            for step, value in values.items():
                ml.log_metrics({name: value}, step=int(step))
        if findings.mlflow_tables:
            with tempfile.TemporaryDirectory() as tmp:
                for file_name, table in findings.mlflow_tables.items():
                    path = Path(tmp) / file_name
                    table.to_csv(path, index=False)
                    ml.log_artifact(path, "monitoring")
        ml.log_artifact(html, "monitoring")
        ml.log_artifact(summary, "monitoring")
    prefix = f"monitoring.{monitor}."
    ml.set_version_tags(champion.model_name, champion.version, {
        f"{prefix}state": state.label, f"{prefix}window": f"{start}..{last}",
        **{prefix + k: v for k, v in findings.version_tags.items()},
        f"{prefix}checked_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        f"{prefix}run_id": run_id, f"{prefix}mlflow_run_id": mlflow_run_id})
    return mlflow_run_id
