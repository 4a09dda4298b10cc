"""The monitoring dashboards: an Evidently workspace with one project per market, fed from monitoring_metrics.

``home/monitoring/workspace/`` is a local Evidently workspace (Evidently imported only through
:mod:`monitoring.evidently_adapter`). Each market has a project, ``<MARKET>``, holding:

- the **report** of every check run on this machine (drift, performance), browsable in the UI;
- a **trend snapshot** of every check in ``monitoring.monitoring_metrics``, whatever machine ran it:
  the check's rows of the table as one-row ``MeanValue`` metrics (column ``<monitor>.<metric>``, such
  as ``drift.drift_share`` or ``performance.error_ratio``), stamped with the end of the check's window;
- a **dashboard** whose panels plot those trend columns over the snapshots: drift share, largest
  drift, every feature's drift score, forecast drift, live and backtest MAE, error ratio, coverage,
  pinball loss, rMAE, the states of both monitors and the retrainings. So the pictures are the
  table's time series over runs, not the last run only.

A check adds its own report and trend (:func:`record_check`); ``aurum monitor ui`` first adds the
trends of checks other machines wrote to the shared table (:func:`sync`). ``aurum_index.json`` in the
workspace maps each market to its project and lists the checks already in it; writers take an
exclusive lock (``.aurum.lock``) so concurrent checks on one machine do not lose entries.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from features.lake import Lake
from features.settings import AurumSettings
from monitoring import metricstore

INDEX = "aurum_index.json"
# Per-hour and per-lead metrics stay in the table and MLflow: as trend lines they would bury the rest.
_LEFT_OUT = (".hour_", ".lead_")


def workspace_dir(settings: AurumSettings) -> Path:
    return settings.home_dir / "monitoring" / "workspace"


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[dict]:
    """The workspace index under an exclusive lock; written back when the block ends without error."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".aurum.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = folder / INDEX
        index = json.loads(path.read_text()) if path.exists() else {"markets": {}}
        yield index
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(index, indent=2))
        tmp.replace(path)


def trend_values(rows: pd.DataFrame) -> dict[str, float]:
    """One check's rows of monitoring_metrics as trend columns ``<monitor>.<metric>`` (finite values only)."""
    out = {}
    for monitor, metric, value in zip(rows["monitor"], rows["metric"], rows["value"]):
        if value is None or not math.isfinite(value) or any(s in metric for s in _LEFT_OUT):
            continue
        out[f"{monitor}.{metric}"] = float(value)
    return out


def panels(columns: set[str]) -> dict:
    """The dashboard's tabs and panels for the trend columns a market has (panels without data are left out)."""
    from monitoring.evidently_adapter import Panel

    def have(*cs: str) -> tuple[str, ...]:
        return tuple(c for c in cs if c in columns)

    features = sorted(c for c in columns if c.startswith("drift.drift."))
    pinball = sorted(c for c in columns if c.startswith("performance.pinball_q"))
    drift_tab = [
        Panel("Share of drifted features", have("drift.drift_share"), "share of monitored features at or above "
              "their calibrated threshold (rule drift_share: warn 0.2, alert 0.35 by default)"),
        Panel("Largest feature drift and forecast drift", have("drift.max_drift_ratio", "drift.prediction_drift"),
              "score / calibrated threshold (1 = at the threshold)", ("largest feature", "forecast")),
        Panel("Drift score of every feature", tuple(features), "Wasserstein distance / reference std, or total "
              "variation for categories", tuple(c[len("drift.drift."):] for c in features)),
        Panel("Missing feature values", have("drift.missing_share"), "share of feature values unknown at issue time"),
        Panel("Drift state", have("drift.state"), "0 ok, 1 warn, 2 alert", kind="bar"),
    ]
    performance_tab = [
        Panel("MAE: live and backtest", have("performance.mae", "performance.expected.mae"),
              "live MAE of the champion's archived forecasts; the champion's backtest MAE", ("live", "backtest")),
        Panel("Error ratio", have("performance.error_ratio"), "live MAE / backtest MAE (rule error_ratio: warn "
              "1.25, alert 1.5 by default)"),
        Panel("80 % interval coverage: live and backtest", have("performance.coverage_0.8",
                                                                "performance.expected.coverage_0.8"),
              "share of hours whose price fell inside q10..q90", ("live", "backtest")),
        Panel("Pinball loss", tuple(pinball), "per quantile level", tuple(c[len("performance.pinball_"):] for c in pinball)),
        Panel("rMAE: live and backtest", have("performance.rmae", "performance.expected.rmae"),
              "MAE / MAE of the weekly naive forecast", ("live", "backtest")),
        Panel("Performance state", have("performance.state"), "0 ok, 1 warn, 2 alert", kind="bar"),
        Panel("Retraining on alert", have("retrain.promoted", "retrain.version"),
              "1 = the retrained version became champion, 0 = challenger", ("approved", "version"), kind="bar"),
    ]
    return {tab: [p for p in ps if p.columns] for tab, ps in (("Drift", drift_tab), ("Performance", performance_tab))}


def _project(ws, index: dict, market: str) -> str:
    entry = index["markets"].setdefault(market, {"project_id": None, "checks": [], "columns": []})
    entry["project_id"] = ws.project(entry["project_id"], market,
                                     f"Aurum monitoring of {market}: drift and forecast performance of its champion")
    return entry["project_id"]


def _add_trend(ws, index: dict, market: str, run_id: str, rows: pd.DataFrame) -> None:
    from monitoring import evidently_adapter

    values = trend_values(rows)
    first = rows.iloc[0]
    entry = index["markets"][market]
    end = pd.Timestamp(first["window_end"]).tz_convert("UTC").tz_localize(None).to_pydatetime()
    snapshot = evidently_adapter.trend_snapshot(values, timestamp=end, tags=["trend", str(first["monitor"])],
                                                metadata={"run_id": run_id, "monitor": str(first["monitor"]),
                                                          "model_version": str(first["model_version"])})
    ws.add(entry["project_id"], snapshot, f"trend {first['monitor']} {run_id}")
    entry["checks"].append(run_id)
    entry["columns"] = sorted(set(entry["columns"]) | set(values))


def record_check(settings: AurumSettings, market: str, rows: pd.DataFrame, report=None, report_name: str = "") -> str:
    """Add one check to its market's project: its report (an adapter report object, or None) and the trend
    of its monitoring_metrics ``rows``; refresh the dashboard. Returns the project id."""
    from monitoring.evidently_adapter import MonitoringWorkspace

    folder = workspace_dir(settings)
    with _locked(folder) as index:
        ws = MonitoringWorkspace(folder)
        project = _project(ws, index, market)
        if report is not None:
            ws.add(project, report.snapshot, report_name)
        run_id = str(rows["run_id"].iloc[0])
        if run_id not in index["markets"][market]["checks"]:
            _add_trend(ws, index, market, run_id, rows)
        ws.set_dashboard(project, panels(set(index["markets"][market]["columns"])))
        return project


def sync(settings: AurumSettings, lake: Lake) -> dict[str, str]:
    """Bring every market's project up to date with monitoring_metrics (checks of other machines too);
    returns market -> project id. Markets without any check get no project."""
    from monitoring.evidently_adapter import MonitoringWorkspace

    table = metricstore.read(lake)
    folder = workspace_dir(settings)
    projects = {}
    with _locked(folder) as index:
        ws = MonitoringWorkspace(folder)
        for market, rows in table.groupby("market", sort=True):
            project = _project(ws, index, str(market))
            known = set(index["markets"][market]["checks"])
            for run_id, check in rows.groupby("run_id", sort=False):
                if run_id not in known:
                    _add_trend(ws, index, str(market), str(run_id), check)
            ws.set_dashboard(project, panels(set(index["markets"][market]["columns"])))
            projects[str(market)] = project
    return projects
