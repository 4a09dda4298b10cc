"""The monitoring time series in Iceberg: ``monitoring.monitoring_metrics`` (schema in ``features.lake``).

One row per metric of every check: run id, market, model name and version, monitor, window, metric,
value, state, computed_at. A check's rows are committed at once (a copy-on-write rewrite of its
market's partition), so readers see whole checks. The table is also where alert states persist:
the ``state`` row of the latest check of a market and monitor is the state an alert compares with,
so every machine running checks against the same catalog agrees on it.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from features.lake import MONITORING_METRICS_TABLE, Lake, equals, monitoring_metrics_layout, to_arrow

STATE = "state"  # metric name of a check's overall state row (value 0 ok, 1 warn, 2 alert)
COLUMNS = ("run_id", "market", "model_name", "model_version", "monitor", "window_start", "window_end", "metric",
           "value", "state", "computed_at")


def ensure(lake: Lake) -> None:
    lake.ensure_table(MONITORING_METRICS_TABLE, *monitoring_metrics_layout())


def append(lake: Lake, rows: pd.DataFrame) -> int | None:
    """Commit the rows of one market's check in one snapshot; returns the snapshot id.

    Raises:
        ValueError: rows of several markets, or a column of the table missing.
    """
    markets = rows["market"].unique()
    if len(markets) != 1:
        raise ValueError(f"one check writes rows of one market; got markets {sorted(map(str, markets))}")
    ensure(lake)
    schema = monitoring_metrics_layout()[0]
    new = to_arrow(schema, rows)

    def add(old: pa.Table | None) -> pa.Table:
        return new if old is None else pa.concat_tables([old, new])

    return lake.rewrite(MONITORING_METRICS_TABLE, equals(market=str(markets[0])), add).snapshot_id


def read(lake: Lake, market: str | None = None, monitor: str | None = None) -> pd.DataFrame:
    """Rows of the table (one market's, one monitor's), oldest check first; empty before the first check."""
    ensure(lake)
    filters = {k: v for k, v in (("market", market), ("monitor", monitor)) if v is not None}
    table = lake.scan(MONITORING_METRICS_TABLE, equals(**filters)) if filters else lake.scan(MONITORING_METRICS_TABLE)
    frame = table.to_pandas()
    if frame.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    return frame.sort_values(["computed_at", "run_id"], kind="stable").reset_index(drop=True)


def last_state(lake: Lake, market: str, monitor: str) -> dict[str, object] | None:
    """The ``state`` row of the latest check of ``market`` and ``monitor``, or None before the first one."""
    rows = read(lake, market, monitor)
    rows = rows[rows["metric"] == STATE]
    return None if rows.empty else rows.iloc[-1].to_dict()
