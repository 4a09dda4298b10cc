"""The Evidently adapter: the only module of Aurum that imports ``evidently`` (0.7 API).

Three jobs:

- **drift reports**: a drift assessment (:mod:`monitoring.drift`) as an Evidently report:
  ``DataDriftPreset`` over the monitored features with one method and threshold per column, and
  ``ValueDrift`` of the champion's median forecast;
- **performance reports**: the judged hours of a performance check (:mod:`monitoring.performance`)
  as Evidently's regression metrics (mean error, MAE, RMSE, largest error, R², with their plots)
  against the champion's backtest hours, and the mean of each per-hour loss (absolute error, 80 %
  interval hit, pinball loss per level), which equals the engine's metric;
- **the workspace and its UI**: a local Evidently workspace (``evidently.ui.workspace.Workspace``) with
  one project per market whose dashboard plots the monitoring time series, and the Evidently UI
  server on it (:mod:`monitoring.dashboard` decides what goes in).

The drift methods are the engine's own, registered as Evidently stat tests:

- ``aurum_wasserstein_scaled:<scale>``: the Wasserstein distance divided by ``scale`` (the whole
  reference's standard deviation of the column; Evidently's built-in ``wasserstein`` divides by the
  standard deviation of the reference it is given, here the matched season, which would make slowly
  moving features look drifted), computed by :func:`monitoring.drift.wasserstein`;
- ``aurum_total_variation``: the total variation distance of category shares.

The report runs on the very rows the engine scored (``assessment.current``/``.reference``), with
the engine's calibrated thresholds, so its verdicts are the engine's (a test checks they agree).
Import this module lazily: importing Evidently takes seconds.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import warnings

import pandas as pd

with warnings.catch_warnings():  # Evidently 0.7 and its web stack warn about their own deprecations on import
    warnings.simplefilter("ignore", DeprecationWarning)
    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType
    from evidently import Regression
    from evidently.metrics import MAE, RMSE, AbsMaxError, MeanError, MeanValue, R2Score, ValueDrift
    from evidently.presets import DataDriftPreset

from monitoring import drift

TOTAL_VARIATION = "aurum_total_variation"


@functools.cache
def scaled_wasserstein(scale: float) -> str:
    """Name of the registered stat test: Wasserstein distance / ``scale``, drifted at or above the threshold."""
    name = f"aurum_wasserstein_scaled:{scale!r}"

    def test(reference: pd.Series, current: pd.Series, feature_type, threshold: float) -> tuple[float, bool]:
        value = drift.wasserstein(reference.to_numpy(dtype=float), current.to_numpy(dtype=float)) / scale
        return value, bool(value >= threshold)

    register_stattest(StatTest(name=name, display_name=f"Wasserstein distance / reference std ({scale:.4g})",
                               allowed_feature_types=[ColumnType.Numerical], default_threshold=1.0), test)
    return name


@functools.cache
def total_variation() -> str:
    def test(reference: pd.Series, current: pd.Series, feature_type, threshold: float) -> tuple[float, bool]:
        value = drift.total_variation(reference.to_numpy(), current.to_numpy())
        return value, bool(value >= threshold)

    register_stattest(StatTest(name=TOTAL_VARIATION, display_name="Total variation distance",
                               allowed_feature_types=[ColumnType.Categorical], default_threshold=0.1), test)
    return TOTAL_VARIATION


def _method(role: str, scale: float) -> str:
    return total_variation() if role == drift.CATEGORICAL else scaled_wasserstein(float(scale))


@dataclass
class DriftReport:
    """An Evidently snapshot of one check, and the numbers read back from it."""

    snapshot: object

    def _metrics(self) -> list[dict]:
        return self.snapshot.dict()["metrics"]

    def scores(self) -> dict[str, float]:
        """Per-column drift score (ValueDrift values), prediction included."""
        return {m["config"]["column"]: float(m["value"]) for m in self._metrics()
                if m["config"].get("type", "").endswith(":ValueDrift")}

    def drifted(self) -> dict[str, float]:
        """``count`` and ``share`` of drifted features (Evidently's DriftedColumnsCount)."""
        found = next(m for m in self._metrics() if m["config"].get("type", "").endswith(":DriftedColumnsCount"))
        return {k: float(v) for k, v in found["value"].items()}

    def save_html(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.snapshot.save_html(str(path))
        return path

    def as_dict(self) -> dict:
        return self.snapshot.dict()


def drift_report(assessment: drift.DriftAssessment, *, drift_share: float, timestamp: dt.datetime | None = None,
                 tags: Sequence[str] = (), metadata: dict[str, str] | None = None) -> DriftReport:
    """Evidently's data-drift report of a window against its matched reference, with the engine's methods.

    ``timestamp`` (the window's end), ``tags`` and ``metadata`` place the snapshot in a workspace project."""
    # A column without values on one side has no score, and nothing for Evidently to compare either.
    columns = [c for c in (*assessment.columns, assessment.prediction) if c is not None and not math.isnan(c.score)]
    names = [c.column for c in columns]
    definition = DataDefinition(numerical_columns=[c.column for c in columns if c.role == drift.NUMERICAL],
                                categorical_columns=[c.column for c in columns if c.role == drift.CATEGORICAL])
    features = [c for c in columns if c.column != drift.PREDICTION]
    metrics: list = [DataDriftPreset(columns=[c.column for c in features], drift_share=drift_share,
                                     per_column_method={c.column: _method(c.role, c.scale) for c in features},
                                     per_column_threshold={c.column: float(c.threshold) for c in features})]
    p = assessment.prediction
    if p is not None and p in columns:
        metrics.append(ValueDrift(column=p.column, method=_method(p.role, p.scale), threshold=float(p.threshold)))
    current = Dataset.from_pandas(assessment.current[names].reset_index(drop=True), data_definition=definition)
    reference = Dataset.from_pandas(assessment.reference[names].reset_index(drop=True), data_definition=definition)
    return DriftReport(Report(metrics).run(current_data=current, reference_data=reference, timestamp=timestamp,
                                           tags=list(tags), metadata=dict(metadata or {})))


# ---------------------------------------------------------------- performance reports

LOSS_COLUMNS_PREFIXES = ("abs_error", "coverage_", "pinball_")


@dataclass
class PerformanceReport:
    """An Evidently snapshot of one performance check, and the per-hour loss means read back from it."""

    snapshot: object

    def means(self) -> dict[str, float]:
        """``MeanValue`` of every loss column (``abs_error`` = MAE, ``coverage_0.8``, ``pinball_qNN``)."""
        return {m["config"]["column"]: float(m["value"]) for m in self.snapshot.dict()["metrics"]
                if m["config"].get("type", "").endswith(":MeanValue")}

    def save_html(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.snapshot.save_html(str(path))
        return path


def performance_report(current: pd.DataFrame, reference: pd.DataFrame | None, *, timestamp: dt.datetime | None = None,
                       tags: Sequence[str] = (), metadata: dict[str, str] | None = None) -> PerformanceReport:
    """Evidently's regression report of the judged hours (``current``: ``actual``, ``forecast``, ``hour``,
    ``lead_bin`` and the loss columns of :meth:`monitoring.performance.GroupPerformance.per_row`) against
    the champion's backtest hours in the same layout (``reference``; None when the run kept none)."""
    losses = [c for c in current.columns if c.startswith(LOSS_COLUMNS_PREFIXES) and current[c].notna().any()]
    numerical = ["actual", "forecast", *losses]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=["hour", "lead_bin"],
                                regression=[Regression(target="actual", prediction="forecast")])
    metrics: list = [MeanError(), MAE(), RMSE(), AbsMaxError(), R2Score(), *(MeanValue(column=c) for c in losses)]

    def dataset(frame: pd.DataFrame) -> Dataset:
        frame = frame.reindex(columns=[*numerical, "hour", "lead_bin"]).reset_index(drop=True)
        return Dataset.from_pandas(frame, data_definition=definition)

    with warnings.catch_warnings():  # Evidently's error-bias table scores bins of one hour with R² too
        warnings.filterwarnings("ignore", message=r"R\^2 score is not well-defined")
        snapshot = Report(metrics).run(
            current_data=dataset(current),
            reference_data=None if reference is None or reference.empty else dataset(reference),
            timestamp=timestamp, tags=list(tags), metadata=dict(metadata or {}))
    return PerformanceReport(snapshot)


# ---------------------------------------------------------------- the workspace and its UI


@dataclass(frozen=True)
class Panel:
    """A dashboard panel: a line (or bar) plot of some trend columns over the snapshots' timestamps."""

    title: str
    columns: tuple[str, ...]  # trend columns (see trend_snapshot), one line each
    subtitle: str | None = None
    legends: tuple[str, ...] = ()
    kind: str = "line"  # line or bar


def trend_snapshot(values: dict[str, float], *, timestamp: dt.datetime, tags: Sequence[str],
                   metadata: dict[str, str]):
    """A snapshot holding ``values`` as ``MeanValue`` metrics of a one-row dataset (one column per value,
    non-finite values left out), so that a dashboard can plot each over the snapshots' timestamps."""
    kept = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}
    frame = pd.DataFrame({k: [v] for k, v in kept.items()})
    data = Dataset.from_pandas(frame, data_definition=DataDefinition(numerical_columns=list(kept)))
    return Report([MeanValue(column=c) for c in kept]).run(current_data=data, timestamp=timestamp, tags=list(tags),
                                                           metadata=dict(metadata))


class MonitoringWorkspace:
    """A local Evidently workspace (a folder): one project per market, snapshots, dashboards."""

    def __init__(self, path: Path):
        from evidently.ui.workspace import Workspace

        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.workspace = Workspace(str(path))

    def project(self, project_id: str | None, name: str, description: str) -> str:
        """The id of the project ``project_id`` (when it still exists), else of a new one named ``name``."""
        from evidently.sdk.models import ProjectModel

        if project_id is not None and self.workspace.get_project(project_id) is not None:
            return project_id
        return str(self.workspace.add_project(ProjectModel(name=name, description=description)).id)

    def add(self, project_id: str, snapshot, name: str) -> str:
        """Store a snapshot (a Report run) in the project under ``name``; returns its id."""
        return str(self.workspace.add_run(project_id, snapshot, include_data=False, name=name).id)

    def set_dashboard(self, project_id: str, tabs: dict[str, list[Panel]]) -> None:
        """Replace the project's dashboard by ``tabs`` of panels."""
        from evidently.sdk.models import PanelMetric
        from evidently.sdk.panels import bar_plot_panel, line_plot_panel

        dashboard = self.workspace.get_project(project_id).dashboard
        dashboard.clear_dashboard()
        for tab, panels in tabs.items():
            for p in panels:
                legends = p.legends or p.columns
                values = [PanelMetric(legend=legend, metric="MeanValue", metric_labels={"column": c})
                          for c, legend in zip(p.columns, legends)]
                make = bar_plot_panel if p.kind == "bar" else line_plot_panel
                dashboard.add_panel(make(p.title, values, description=p.subtitle, size="half"), tab=tab)


def serve(path: Path, host: str, port: int) -> None:
    """Run the Evidently UI on the workspace at ``path`` until interrupted (blocks). Usage telemetry is
    off: Evidently would otherwise send events to its vendor on every page view."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from evidently.ui.service.app import create_app, get_config
    import uvicorn

    config = get_config(host=host, port=port, workspace=str(path))
    config.telemetry.enabled = False
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
