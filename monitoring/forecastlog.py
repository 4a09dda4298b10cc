"""The forecast archive as monitoring reads it: the Iceberg table ``serving.forecasts``, without serving.

The serving stage writes the table (the forecast service, ``aurum score``); its column contract is the
table schema in ``features.lake.forecast_table_layout`` (documented in docs/serving.md). Monitoring may
not import serving, so it reads the table through ``features.lake.Lake.scan`` with the market and the
delivery window pushed into the scan (the table is partitioned by market and month of delivery), and
checks that the columns it relies on are there before it reads a row: an archive written by another
version of serving that lacks one is an error naming the columns, not a silently empty report.
"""

from __future__ import annotations

import pandas as pd

from features.errors import ForecastArchiveError, MonitoringDataError
from features.lake import FORECASTS_TABLE, Lake, window_filter

# The columns the performance monitor reads, in the archive's order.
COLUMNS: tuple[str, ...] = (
    "request_id", "batch_id", "source", "tenant", "market", "delivery_day", "delivery_start", "issued_at",
    "served_at", "levels", "values", "forecast", "model_name", "model_version", "model_alias", "shadow",
    "scenario", "quality",
)


def check_archive(lake: Lake, market: str) -> None:
    """Raise unless ``serving.forecasts`` exists with every column of :data:`COLUMNS`.

    Raises:
        MonitoringDataError: the table does not exist (nothing was ever served or scored).
        ForecastArchiveError: columns are missing (named, with what the table has).
    """
    ident = lake.ident(FORECASTS_TABLE)
    if not lake.catalog.table_exists(ident):
        raise MonitoringDataError(f"market {market!r}: there is no forecast archive {ident!r} yet: nothing was "
                                  "served or batch-scored; archive forecasts first (aurum score --market "
                                  f"{market} --from … --to …, or the forecast service)")
    have = [f.name for f in lake.table(FORECASTS_TABLE).schema().fields]
    missing = [c for c in COLUMNS if c not in have]
    if missing:
        raise ForecastArchiveError(
            f"the forecast archive {ident!r} lacks columns {missing}; it has {have}; expected the columns of "
            "features.lake.forecast_table_layout (docs/serving.md), which the performance monitor reads",
            column=missing[0])


def read_window(lake: Lake, market: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Archived forecasts of ``market`` with delivery in ``[start, end)`` (UTC), every row as written.

    Call :func:`check_archive` first. ``levels`` and ``values`` come back as arrays; timestamps as UTC.
    """
    rows = lake.scan(FORECASTS_TABLE, window_filter(market, start, end), columns=COLUMNS).to_pandas()
    for c in ("delivery_start", "issued_at", "served_at"):
        rows[c] = pd.to_datetime(rows[c], utc=True)
    return rows.sort_values(["delivery_start", "served_at"], kind="stable").reset_index(drop=True)


def versions_present(rows: pd.DataFrame) -> dict[str, int]:
    """Rows per ``model_name v<version> (<alias>[, shadow][, scenario])`` of an archive read, for messages."""
    if rows.empty:
        return {}
    label = (rows["model_name"] + " v" + rows["model_version"] + " (" + rows["model_alias"]
             + rows["shadow"].map({True: ", shadow", False: ""})
             + rows["scenario"].notna().map({True: ", scenario", False: ""}) + ")")
    return {str(k): int(v) for k, v in label.value_counts().sort_index().items()}
