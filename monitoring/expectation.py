"""What the champion's backtest promised: the yardstick of the performance monitor.

``aurum train`` backtests every candidate (rolling origin over the last ``--backtest-days`` days) and
records, in the MLflow run that registered the version (``training/pipeline.py``): the overall metrics
(``mae``, ``rmae``, ``smape``, ``rmse``, ``pinball_q10/q50/q90``, ``coverage_0.8``), the artifact
``backtest/metrics_by_hour.csv`` (the same metrics per local hour) and ``backtest/backtest.csv`` (every
backtest hour: ``actual``, ``naive``, ``q10``, ``q50``, ``q90``, ``hour``, ...). Live errors are judged
against these numbers (``error_ratio`` = live MAE / backtest MAE), and the backtest rows are the
reference of the Evidently report.

The artifacts of a version never change, so they are cached under
``home/monitoring/expectation/<model name>/<version>/``. A version whose run has no ``mae`` metric
(registered by hand, or by another tool) has no expectation: a :class:`LineageError`, not a guess.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.errors import LineageError
from features.settings import AurumSettings
from models import mlflow_model as ml
from monitoring.champion import Champion

REQUIRED = ("mae",)
OVERALL = ("mae", "rmae", "smape", "rmse", "pinball_q10", "pinball_q50", "pinball_q90", "coverage_0.8")
ARTIFACTS = {"by_hour": "backtest/metrics_by_hour.csv", "backtest": "backtest/backtest.csv"}


@dataclass
class Expectation:
    """The champion's backtest: overall metrics, metrics per local hour, and the backtest rows.

    ``by_hour`` (columns ``hour``, ``metric``, ``value``) and ``backtest`` are None when the run has no
    such artifact; ``window`` is the backtest's first day and the day after its last (version tags).
    """

    run_id: str
    metrics: dict[str, float]
    by_hour: pd.DataFrame | None
    backtest: pd.DataFrame | None
    window: tuple[dt.date, dt.date] | None

    @property
    def days(self) -> int | None:
        return (self.window[1] - self.window[0]).days if self.window else None

    def hourly(self, metric: str = "mae") -> dict[int, float]:
        """``metric`` per local hour of the backtest ({} without the artifact)."""
        if self.by_hour is None:
            return {}
        rows = self.by_hour[(self.by_hour["hour"].astype(str) != "all") & (self.by_hour["metric"] == metric)]
        return {int(h): float(v) for h, v in zip(rows["hour"], rows["value"])}

    def summary(self) -> dict[str, object]:
        last = self.window[1] - dt.timedelta(days=1) if self.window else None
        return {"training_run_id": self.run_id, "metrics": self.metrics,
                "backtest_window": [str(self.window[0]), str(last)] if self.window else None,
                "backtest_days": self.days, "backtest_rows": None if self.backtest is None else len(self.backtest),
                "by_hour": self.by_hour is not None}

    @classmethod
    def of(cls, settings: AurumSettings, champion: Champion) -> Expectation:
        """The expectation of ``champion`` (MLflow must point at its store).

        Raises:
            LineageError: the version's run cannot be read or records no ``mae``.
        """
        where = f"{champion.model_name} version {champion.version}"
        try:
            record = ml.run_record(champion.run_id)
        except Exception as exc:  # noqa: BLE001 - the adapter re-raises MLflow's own exception type
            raise LineageError(f"{where}: its training run {champion.run_id!r} cannot be read "
                               f"({type(exc).__name__}); it holds the backtest errors the live ones are judged "
                               "against") from exc
        metrics = {k: float(v) for k, v in record["metrics"].items() if k in OVERALL and math.isfinite(v)}
        missing = [k for k in REQUIRED if k not in metrics]
        if missing:
            raise LineageError(f"{where}: its training run {champion.run_id!r} records no backtest metric "
                               f"{missing} (it has {sorted(record['metrics'])}); expected the backtest metrics "
                               "`aurum train` logs, which live errors are judged against")
        folder = settings.home_dir / "monitoring" / "expectation" / champion.model_name / champion.version
        frames = {key: _artifact(champion.run_id, path, folder) for key, path in ARTIFACTS.items()}
        window = None
        tags = champion.tags
        if tags.get("backtest_start") and tags.get("backtest_end"):
            window = (dt.date.fromisoformat(tags["backtest_start"]), dt.date.fromisoformat(tags["backtest_end"]))
        return cls(champion.run_id, metrics, frames["by_hour"], frames["backtest"], window)


def _artifact(run_id: str, path: str, folder: Path) -> pd.DataFrame | None:
    """A CSV artifact of the run, cached in ``folder``; None when the run has no such artifact."""
    cached = folder / Path(path).name
    if not cached.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            try:
                got = ml.download_artifact(run_id, path, tmp)
            except Exception:  # noqa: BLE001 - MLflow raises its own type (or OSError) for an absent artifact
                return None
            shutil.move(str(got), cached)  # whole file or nothing: a concurrent reader never sees half of it
    return pd.read_csv(cached)
