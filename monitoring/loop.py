"""The closed loop: ``aurum monitor run`` checks drift and performance, and retrains on a performance alert.

One run, for schedulers (daily or weekly):

1. a drift check and a performance check of the same window (:mod:`monitoring.driftcheck`,
   :mod:`monitoring.performancecheck`), each with all its records; a check that cannot run (no
   forecasts archived yet, say) is reported and the other still runs;
2. with ``--retrain-on-alert``, when the *performance* state is ``alert`` (errors decide; drift alone
   does not retrain, see docs/monitoring.md), the champion's recipe is trained again on fresh data and
   judged by the approval gate against the *served* champion, frozen (``--against served``: is a model
   retrained on fresh data better than the one in service? A rerun of the same recipe, the gate's
   default, would tie with the retrain by construction). Monitoring may not import training, so it runs
   the platform's own CLI in a subprocess, exactly as an operator would::

       aurum train --market M --model <kind> --param <name>=<value> ... --backtest-days B --refit-days R
                   [--train-days T] --against served [--as-of END]

   with the kind and parameters of the champion's ``model_spec`` version tag and its backtest window,
   refit cadence and training window, and reads the run id, version and decision it prints. ``--as-of``
   is the window's end when the lake already holds prices of that day or later (a replay of the past,
   ``--end`` in the past): the retrain then knows only what was known at the end of the alert window,
   not what came after it. A market is retrained at most once per ``retrain_cooldown_hours`` (a
   persisting alert would otherwise retrain on every run). An approved version becomes ``champion``;
   the forecast service picks it up by polling the alias, so nothing here talks to serving;
3. the chain alert -> training run -> decision is recorded: as tags and parameters of the run's own
   MLflow run (the drift and performance runs are nested under it), as ``monitoring.retrain.*`` tags on
   the new model version, as ``retrain`` rows of ``monitoring.monitoring_metrics`` (state = the
   outcome: ``approved``, ``rejected``, ``failed`` or ``skipped``), and in a JSON summary beside the
   reports, with the training output as a log file.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from features.errors import AurumError, LineageError, MonitoringDataError
from features.lake import Lake
from features.marketdata import MarketData
from features.settings import AurumSettings
from models import mlflow_model as ml
from monitoring import alerts, dashboard, metricstore, records
from monitoring.alerts import State
from monitoring.champion import Champion, champion

MONITOR = "retrain"
_RUN = re.compile(r"^run (?P<run_id>[0-9a-f]{32}): (?P<model>\S+) version (?P<version>\d+)$", re.M)
_DECISION = re.compile(r"^approval: (?P<decision>champion|challenger) \((?P<reason>.*)\)$", re.M)


@dataclass
class RetrainOutcome:
    """What the retraining did: ``status`` approved, rejected, failed or skipped, and why."""

    status: str
    reason: str
    command: list[str] = field(default_factory=list)
    exit_code: int | None = None
    training_run_id: str | None = None
    version: str | None = None
    decision: str | None = None  # champion or challenger, as the approval gate decided
    seconds: float = 0.0
    log: Path | None = None
    as_of: dt.date | None = None  # the retrain knew only what was known at this day's issue time (None: everything)

    @property
    def display_command(self) -> str:
        """The command as an operator would type it."""
        args = self.command[3:] if self.command[1:3] == ["-m", "features.cli"] else self.command[1:]
        return shlex.join(["aurum", *args])

    def as_dict(self) -> dict[str, object]:
        return {"status": self.status, "reason": self.reason, "command": self.display_command if self.command else None,
                "exit_code": self.exit_code, "training_run_id": self.training_run_id, "version": self.version,
                "decision": self.decision, "seconds": self.seconds, "log": self.log,
                "as_of": str(self.as_of) if self.as_of else None}


def retrain_command(champ: Champion, python: str = sys.executable, *, as_of: dt.date | None = None) -> list[str]:
    """``aurum train`` of the champion's recipe (its ``model_spec`` tag) with its backtest, refit and training
    windows, judged against the served champion (``--against served``), as of ``as_of`` if given, run by the
    same interpreter.

    Raises:
        LineageError: the version has no readable ``model_spec`` tag.
    """
    where = f"{champ.model_name} version {champ.version}"
    try:
        spec = json.loads(champ.tags["model_spec"])
        kind, params = spec["kind"], dict(spec.get("params") or {})
    except (KeyError, TypeError, ValueError) as exc:
        raise LineageError(f"{where} has no readable model_spec tag ({exc!r}); expected the recipe `aurum train` "
                           "records, such as {\"kind\": \"lgbm\", \"params\": {...}}, to retrain it") from exc
    cmd = [python, "-m", "features.cli", "train", "--market", champ.market, "--model", str(kind)]
    for name, value in sorted(params.items()):
        cmd += ["--param", f"{name}={json.dumps(value)}"]
    tags = champ.tags
    if tags.get("backtest_start") and tags.get("backtest_end"):
        days = (dt.date.fromisoformat(tags["backtest_end"]) - dt.date.fromisoformat(tags["backtest_start"])).days
        cmd += ["--backtest-days", str(days)]
    if tags.get("refit_days"):
        cmd += ["--refit-days", tags["refit_days"]]
    if tags.get("train_days"):
        cmd += ["--train-days", tags["train_days"]]
    cmd += ["--against", "served"]
    if as_of is not None:
        cmd += ["--as-of", as_of.isoformat()]
    return cmd


def retrain_as_of(lake: Lake, market: str, timezone: str, end: dt.date) -> dt.date | None:
    """``end`` when the lake holds prices of that day or later (a replay: the retrain must not learn what came
    after the alert window), else None (everything in the lake is before ``end`` anyway)."""
    try:
        data_end = default_end(lake, market, timezone, pd.Timestamp.now(tz="UTC"))
    except MonitoringDataError:
        return None
    return end if end < data_end else None


def parse_training_output(stdout: str) -> dict[str, str | None]:
    """The run id, version, decision and reason ``aurum train`` prints (None for what is missing)."""
    run, decision = _RUN.search(stdout), _DECISION.search(stdout)
    return {"training_run_id": run["run_id"] if run else None, "version": run["version"] if run else None,
            "decision": decision["decision"] if decision else None, "reason": decision["reason"] if decision else None}


def last_retrain(lake: Lake, market: str) -> pd.Timestamp | None:
    """When the market was last retrained by a monitor run (skipped runs do not count), or None."""
    rows = metricstore.read(lake, market, MONITOR)
    rows = rows[(rows["metric"] == "exit_code")]
    return None if rows.empty else pd.Timestamp(rows["computed_at"].max())


def retrain(settings: AurumSettings, champ: Champion, lake: Lake, *, log: Path, as_of: dt.date | None = None,
            progress: Callable[[str], None] | None = None) -> RetrainOutcome:
    """Run ``aurum train`` on the champion's recipe against the served champion, as of ``as_of`` if given (see
    the module docstring); never raises for a failed training, which is an outcome (``failed``, with the exit
    code and the end of its output)."""
    say = progress or (lambda msg: None)
    cooldown = settings.monitoring.retrain_cooldown_hours
    last = last_retrain(lake, champ.market)
    now = pd.Timestamp.now(tz="UTC")
    if last is not None and now - last < pd.Timedelta(hours=cooldown):
        return RetrainOutcome("skipped", f"{champ.market} was retrained by a monitor run at {last.isoformat()}, less "
                                         f"than retrain_cooldown_hours={cooldown:g} ago")
    cmd = retrain_command(champ, as_of=as_of)
    outcome = RetrainOutcome("failed", "", cmd, log=log, as_of=as_of)
    say(f"retraining: {outcome.display_command}")
    env = dict(os.environ, AURUM_HOME=str(settings.home_dir), AURUM_PROFILE=settings.profile)
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=settings.monitoring.retrain_timeout_s, check=False)
        out, err, outcome.exit_code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        outcome.reason = f"aurum train did not finish within retrain_timeout_s={settings.monitoring.retrain_timeout_s:g}"
    outcome.seconds = time.perf_counter() - t0
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"$ {outcome.display_command}\n# exit code {outcome.exit_code}\n\n--- stdout\n{out}\n--- stderr\n{err}")
    parsed = parse_training_output(out)
    outcome.training_run_id, outcome.version = parsed["training_run_id"], parsed["version"]
    outcome.decision = parsed["decision"]
    if outcome.exit_code == 0 and parsed["decision"] is not None:
        outcome.status = "approved" if parsed["decision"] == "champion" else "rejected"
        outcome.reason = parsed["reason"] or ""
    elif not outcome.reason:
        tail = " | ".join(line for line in err.strip().splitlines()[-3:] if line.strip())
        outcome.reason = (f"aurum train exited with {outcome.exit_code}: {tail}" if outcome.exit_code else
                          "aurum train printed no run and decision; expected lines 'run <id>: <model> version <n>' "
                          "and 'approval: <champion|challenger> (<reason>)'")
    return outcome


@dataclass
class MonitorRun:
    """The outcome of one ``aurum monitor run``."""

    run_id: str
    market: str
    champion: Champion
    window_start: dt.date
    window_end: dt.date
    drift: object | None  # DriftCheck
    performance: object | None  # PerformanceCheck
    errors: dict[str, str]  # monitor -> why it could not run
    retrain: RetrainOutcome | None
    mlflow_run_id: str
    summary_json: Path

    @property
    def exit_code(self) -> int:
        """2 when a check could not run; otherwise the worse check's code (3 alert, 1 warn, 0 ok)."""
        if self.errors:
            return 2
        states = [c.state for c in (self.drift, self.performance) if c is not None]
        return alerts.EXIT_CODES[max(states, default=State.OK)]


def default_end(lake: Lake, market: str, timezone: str, as_of: pd.Timestamp) -> dt.date:
    """The day after the latest local delivery day with a price published by ``as_of``."""
    prices = MarketData(lake).prices(market, end=as_of + pd.Timedelta(days=3))
    published = prices[pd.to_datetime(prices["published_at"], utc=True) <= as_of]
    if published.empty:
        raise MonitoringDataError(f"market {market!r} has no price published by {as_of.isoformat()}; ingest prices first")
    return pd.Timestamp(published["delivery_start"].max()).tz_convert(timezone).date() + dt.timedelta(days=1)


def run_monitors(settings: AurumSettings, market: str, days: int, end: dt.date | None = None, *,
                 retrain_on_alert: bool = False, as_of: dt.datetime | None = None, webhook_url: str | None = None,
                 progress: Callable[[str], None] | None = None) -> MonitorRun:
    """Drift and performance checks of ``market`` over the local days ``[end - days, end)``, and a retraining
    on a performance alert when asked (see the module docstring).

    Raises (before anything is written):
        UnknownMarketError, NoChampionError, RegistryUnavailableError, ConfigurationError (webhook).
    """
    from monitoring.driftcheck import run_drift
    from monitoring.performancecheck import run_performance

    say = progress or (lambda msg: None)
    url = webhook_url or settings.monitoring.webhook_url
    if url:
        alerts.check_webhook_url(url)
    lake = Lake.open(settings, create=False)
    m = MarketData(lake).registry().get(market)
    champ = champion(settings, m.code, lineage=False)
    as_of_ts = pd.Timestamp(as_of or dt.datetime.now(dt.timezone.utc))
    as_of_ts = as_of_ts.tz_localize("UTC") if as_of_ts.tzinfo is None else as_of_ts.tz_convert("UTC")
    end = end or default_end(lake, m.code, m.timezone, as_of_ts)
    start, last = end - dt.timedelta(days=days), end - dt.timedelta(days=1)
    run_id = uuid.uuid4().hex[:16]
    folder = settings.home_dir / "monitoring" / "reports" / m.code
    summary_path = folder / f"run_{start}_{last}_{run_id}.json"
    ml.configure(settings.mlflow_tracking_uri())
    experiment = ml.experiment(settings.monitoring.experiment, settings.mlflow_artifact_root())
    tags = {"monitor": "run", "market": m.code, "model_name": champ.model_name, "model_version": champ.version,
            "window_start": str(start), "window_last_day": str(last), "aurum_run_id": run_id}
    checks: dict[str, object] = {}
    errors: dict[str, str] = {}
    outcome = None
    with ml.run(experiment, f"monitor run {m.code} {start}..{last}", tags=tags) as mlflow_run_id:
        ml.log_params({"window_days": days, "retrain_on_alert": retrain_on_alert, "as_of": as_of_ts.isoformat(),
                       "retrain_cooldown_hours": settings.monitoring.retrain_cooldown_hours})
        for name, run in (("drift", lambda: run_drift(settings, m.code, days, end, webhook_url=webhook_url,
                                                      progress=progress)),
                          ("performance", lambda: run_performance(settings, m.code, days, end, as_of=as_of_ts,
                                                                  webhook_url=webhook_url, progress=progress))):
            say(f"{name} check")
            try:
                checks[name] = run()
            except AurumError as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
                say(f"{name} check could not run: {exc}")
        chain: dict[str, object] = {}
        for name, check in checks.items():
            chain |= {f"{name}.state": check.state.label, f"{name}.run_id": check.run_id,
                      f"{name}.mlflow_run_id": check.mlflow_run_id}
        chain |= {f"{name}.error": why[:500] for name, why in errors.items()}
        perf = checks.get("performance")
        if perf is not None:
            chain["performance.error_ratio"] = f"{perf.summary['metrics'].get('error_ratio') or math.nan:.4f}"
        if retrain_on_alert:
            if perf is not None and perf.state == State.ALERT:
                trigger = "; ".join(f"{o.rule.name} {o.value:.3g} ({o.state.label})" for o in perf.outcomes
                                    if o.state == State.ALERT and o.value is not None)
                chain["retrain.trigger"] = f"performance alert: {trigger}"
                outcome = retrain(settings, champ, lake, log=folder / f"retrain_{start}_{last}_{run_id}.log",
                                  as_of=retrain_as_of(lake, m.code, m.timezone, end), progress=progress)
            else:
                why = ("the performance check could not run" if perf is None else
                       f"the performance state is {perf.state.label}, not alert")
                outcome = RetrainOutcome("not needed", why)
            chain |= {f"retrain.{k}": ("" if v is None else str(v))[:500] for k, v in outcome.as_dict().items()}
            if outcome.log is not None and outcome.log.exists():
                ml.log_artifact(outcome.log, "monitoring")
        ml.set_tags(chain)
        summary = {"run_id": run_id, "monitor": "run", "market": m.code, "as_of": as_of_ts.isoformat(),
                   "model": {"name": champ.model_name, "version": champ.version},
                   "window": {"start": start, "end_exclusive": end, "last_day": last, "days": days},
                   "checks": {name: {"state": c.state.label, "exit_code": c.exit_code, "run_id": c.run_id,
                                     "mlflow_run_id": c.mlflow_run_id, "summary": c.summary_json,
                                     "report": c.report_html} for name, c in checks.items()},
                   "errors": errors, "retrain_on_alert": retrain_on_alert,
                   "retrain": outcome.as_dict() if outcome is not None else None,
                   "mlflow": {"experiment": settings.monitoring.experiment, "run_id": mlflow_run_id}}
        records.write_json(summary_path, summary)
        ml.log_artifact(summary_path, "monitoring")
    if outcome is not None and outcome.status not in ("skipped", "not needed"):
        _record_retrain(settings, lake, m, champ, run_id, start, end, outcome, checks.get("performance"), mlflow_run_id)
    result = MonitorRun(run_id, m.code, champ, start, end, checks.get("drift"), perf, errors, outcome,
                        mlflow_run_id, summary_path)
    return result


def _record_retrain(settings, lake, market, champ: Champion, run_id, start, end, outcome: RetrainOutcome, perf,
                    mlflow_run_id) -> None:
    """The retrain rows of monitoring_metrics (state = outcome) and the trigger on the new version's tags."""
    computed_at = dt.datetime.now(dt.timezone.utc)
    version = float(outcome.version) if outcome.version else math.nan
    promoted = {"approved": 1.0, "rejected": 0.0}.get(outcome.status, math.nan)
    trigger = perf.summary["metrics"].get("error_ratio") if perf is not None else None
    rows = pd.DataFrame({
        "run_id": run_id, "market": market.code, "model_name": champ.model_name, "model_version": champ.version,
        "monitor": MONITOR,
        "window_start": pd.Timestamp(start).tz_localize(market.timezone).tz_convert("UTC"),
        "window_end": pd.Timestamp(end).tz_localize(market.timezone).tz_convert("UTC"),
        "metric": ["exit_code", "version", "promoted", "seconds", "trigger_error_ratio"],
        "value": [float(outcome.exit_code) if outcome.exit_code is not None else None,
                  None if math.isnan(version) else version, None if math.isnan(promoted) else promoted,
                  outcome.seconds, trigger],
        "state": outcome.status, "computed_at": pd.Timestamp(computed_at)})
    metricstore.append(lake, rows)
    if outcome.version:
        ml.configure(settings.mlflow_tracking_uri())
        ml.set_version_tags(champ.model_name, outcome.version, {
            "monitoring.retrain.trigger": f"performance alert of {champ.model_name} v{champ.version} "
                                          f"({start}..{end - dt.timedelta(days=1)})",
            "monitoring.retrain.trigger_run_id": perf.run_id if perf is not None else "",
            "monitoring.retrain.trigger_mlflow_run_id": perf.mlflow_run_id if perf is not None else "",
            "monitoring.retrain.monitor_mlflow_run_id": mlflow_run_id,
            "monitoring.retrain.replaces_version": champ.version,
            "monitoring.retrain.as_of": str(outcome.as_of or ""),
            "monitoring.retrain.decision": outcome.decision or "", "monitoring.retrain.reason": outcome.reason[:500]})
    dashboard.record_check(settings, market.code, rows)
