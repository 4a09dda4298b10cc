"""The Evidently adapter: the only module of Aurum that imports ``evidently`` (0.7 API).

It turns a drift assessment (:mod:`monitoring.drift`) into an Evidently report: ``DataDriftPreset``
over the monitored features with one method and threshold per column, and ``ValueDrift`` of the
champion's median forecast. The methods are the engine's own, registered as Evidently stat tests:

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

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import warnings

import pandas as pd

with warnings.catch_warnings():  # Evidently 0.7 and its web stack warn about their own deprecations on import
    warnings.simplefilter("ignore", DeprecationWarning)
    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType
    from evidently.metrics import ValueDrift
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


def drift_report(assessment: drift.DriftAssessment, *, drift_share: float) -> DriftReport:
    """Evidently's data-drift report of a window against its matched reference, with the engine's methods."""
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
    return DriftReport(Report(metrics).run(current_data=current, reference_data=reference))
