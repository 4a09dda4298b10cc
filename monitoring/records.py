"""What every monitoring check leaves behind, in the same shape whatever the monitor.

- a JSON summary and an Evidently HTML report under
  ``home/monitoring/reports/<market>/<monitor>_<first day>_<last day>_<run id>.{json,html}``;
- rows of ``monitoring.monitoring_metrics``: one per metric, with the state of the rule that judged it
  (or the ``judged`` label the monitor gives), a ``state`` row with the check's state, and an ``alert``
  row when the state changed (value 1 delivered, 0 failed, null when no webhook is set);
- one MLflow run in the monitoring experiment (nested under ``aurum monitor run``'s run when there is
  one) and ``monitoring.<monitor>.*`` tags on the champion's model version.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from features.settings import AurumSettings
from monitoring import metricstore
from monitoring.alerts import Alert, Delivery, RuleOutcome, State


def clean(value):
    """JSON-safe: non-finite floats become null, numpy scalars plain numbers, tuples lists."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (dt.date, dt.datetime, pd.Timestamp, Path)):
        return str(value)
    return value


def write_json(path: Path, summary: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(clean(summary), indent=2, allow_nan=False))
    tmp.replace(path)


def report_paths(settings: AurumSettings, market: str, monitor: str, start: dt.date, end: dt.date,
                 run_id: str) -> tuple[Path, Path]:
    """The HTML report and JSON summary of a check of the local days ``[start, end)``."""
    folder = settings.home_dir / "monitoring" / "reports" / market
    stem = f"{monitor}_{start}_{end - dt.timedelta(days=1)}_{run_id}"
    return folder / f"{stem}.html", folder / f"{stem}.json"


def metric_rows(*, run_id: str, market: str, timezone: str, model_name: str, model_version: str, monitor: str,
                start: dt.date, end: dt.date, computed_at: dt.datetime, metrics: dict[str, float],
                outcomes: list[RuleOutcome], state: State, alert: Alert | None, delivery: Delivery | None,
                labels: dict[str, str] | None = None) -> pd.DataFrame:
    """The check's rows of monitoring_metrics: each metric with its rule's state (or ``labels[metric]``, or
    ``ok``), the ``state`` row and, on a state change, the ``alert`` row."""
    judged = {o.rule.metric: o.state.label for o in outcomes if o.state is not None}
    labels = labels or {}
    rows = [(k, v, judged.get(k) or labels.get(k, "ok")) for k, v in metrics.items()]
    rows.append((metricstore.STATE, float(state), state.label))
    if alert is not None:
        rows.append(("alert", float(delivery.delivered) if delivery is not None else math.nan, state.label))
    return pd.DataFrame({
        "run_id": run_id, "market": market, "model_name": model_name, "model_version": model_version,
        "monitor": monitor,
        "window_start": pd.Timestamp(start).tz_localize(timezone).tz_convert("UTC"),
        "window_end": pd.Timestamp(end).tz_localize(timezone).tz_convert("UTC"),
        "metric": [r[0] for r in rows],
        "value": [float(r[1]) if r[1] is not None and math.isfinite(r[1]) else None for r in rows],
        "state": [r[2] for r in rows], "computed_at": pd.Timestamp(computed_at),
    })
