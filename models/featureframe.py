"""The data contract between the feature service ``day_ahead_v1`` and the forecasters.

A feature frame has one row per (market, delivery hour): ``market``, ``delivery_start`` (UTC),
the features of :data:`FEATURE_NAMES` (any subset a model needs), and optional metadata columns
(:data:`META_COLUMNS`, as a Feast training set or online lookup returns them). Any other column is an
error, so a renamed or misspelt feature fails loudly instead of being ignored.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.errors import FeatureFrameError
from features.transforms import CalendarAdder, ExogenousAdder, ExogenousLagsAdder, PriceLagsAdder

FEATURE_SERVICE = "day_ahead_v1"
PRICE_FEATURES: tuple[str, ...] = tuple(PriceLagsAdder().feature_names)
EXOGENOUS_FEATURES: tuple[str, ...] = tuple(ExogenousAdder().feature_names)
# the forecasts of D-1 and D-7: inputs only of models that ask for them (``exogenous_lags``)
EXOGENOUS_LAG_FEATURES: tuple[str, ...] = tuple(ExogenousLagsAdder().feature_names)
CALENDAR_FEATURES: tuple[str, ...] = tuple(CalendarAdder.feature_names)
FEATURE_NAMES: tuple[str, ...] = PRICE_FEATURES + EXOGENOUS_FEATURES + EXOGENOUS_LAG_FEATURES + CALENDAR_FEATURES
KEY_COLUMNS: tuple[str, ...] = ("market", "delivery_start")
_FEATURE_SET = frozenset(FEATURE_NAMES)
META_COLUMNS: tuple[str, ...] = ("event_timestamp", "known_at", "computed_at", "feature_age", "stale",
                                 "missing_features")


def check_feature_frame(frame: object, required: tuple[str, ...] | list[str] = ()) -> pd.DataFrame:
    """Validate a feature frame and return it with float features and a UTC ``delivery_start``.

    Raises:
        FeatureFrameError: not a DataFrame, empty, a key or ``required`` column missing, an unknown
            column, a naive or unparseable ``delivery_start``, a duplicated (market, delivery_start),
            a non-numeric or infinite feature value.
    """
    if not isinstance(frame, pd.DataFrame):
        raise FeatureFrameError(f"features must be a pandas DataFrame, got {type(frame).__name__}")
    if frame.empty:
        raise FeatureFrameError("features frame has no rows")
    for c in (*KEY_COLUMNS, *required):
        if c not in frame.columns:
            raise FeatureFrameError(f"features frame lacks column {c!r}; it has {sorted(map(str, frame.columns))}",
                                    column=c)
    for c in set(required) & {"hour"}:  # what places a row in its local day and hour cannot be imputed
        gaps = frame[c].isna()
        if gaps.any():
            raise FeatureFrameError(f"column {c!r} is missing in {int(gaps.sum())} rows (first at delivery_start "
                                    f"{frame.loc[gaps, 'delivery_start'].iloc[0]}); this model needs it in every row",
                                    column=c)
    known = set(FEATURE_NAMES) | set(KEY_COLUMNS) | set(META_COLUMNS)
    unknown = [c for c in frame.columns if c not in known]
    if unknown:
        raise FeatureFrameError(f"unknown column {unknown[0]!r} in the features frame; expected features of "
                                f"{FEATURE_SERVICE!r} ({', '.join(FEATURE_NAMES)}) and {', '.join(KEY_COLUMNS + META_COLUMNS)}",
                                column=str(unknown[0]))
    ds = frame["delivery_start"]
    if not isinstance(ds.dtype, pd.DatetimeTZDtype):
        raise FeatureFrameError(f"delivery_start must be a tz-aware (UTC) timestamp column, got dtype {ds.dtype}",
                                column="delivery_start")
    ds = ds.dt.tz_convert("UTC")
    dup = pd.DataFrame({"market": frame["market"].to_numpy(), "delivery_start": ds.array}).duplicated()
    if dup.any():
        first = frame.loc[dup.to_numpy(), "market"].iloc[0], ds[dup.to_numpy()].iloc[0]
        raise FeatureFrameError(f"duplicated row for market {first[0]!r} delivery_start {first[1].isoformat()}")
    feats = [c for c in frame.columns if c in _FEATURE_SET]
    if all(frame[c].dtype.kind in "biuf" for c in feats):
        values = frame[feats].to_numpy(dtype="float64")  # one conversion for the common, all-numeric frame
    else:
        values = np.column_stack([_numeric(frame[c], c) for c in feats]) if feats else np.empty((len(frame), 0))
    if np.isinf(values).any():
        c = feats[int(np.nonzero(np.isinf(values).any(axis=0))[0][0])]
        raise FeatureFrameError(f"feature {c!r} holds an infinite value", column=c)
    rest = [c for c in frame.columns if c not in _FEATURE_SET and c != "delivery_start"]
    out = pd.concat([frame[rest].assign(delivery_start=ds.array),
                     pd.DataFrame(values, columns=feats, index=frame.index)], axis=1)
    return out[list(frame.columns)]


def _numeric(col: pd.Series, name: str) -> np.ndarray:
    try:
        return (col.astype("float64") if col.dtype != object else pd.to_numeric(col, errors="raise").astype(float)).to_numpy()
    except (TypeError, ValueError):
        bad = next(v for v in col if not _is_number(v))
        raise FeatureFrameError(f"feature {name!r} holds a non-numeric value {bad!r}", column=name) from None


def _is_number(v: object) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
        return True
    except (TypeError, ValueError):
        return False


def local_day(frame: pd.DataFrame) -> pd.Series:
    """The local delivery day (naive midnight) of each row, from ``delivery_start`` and the local ``hour``.

    The UTC offset of a row is ``hour`` minus the UTC hour (offsets above +14 h wrap to negative), so the
    local calendar needs no time-zone registry: it is implied by the calendar features themselves.
    """
    utc = frame["delivery_start"].dt.tz_convert("UTC").dt.tz_localize(None)
    offset = (frame["hour"].to_numpy(dtype=np.int64) - utc.dt.hour.to_numpy()) % 24
    offset = np.where(offset > 14, offset - 24, offset)
    return (utc + pd.to_timedelta(offset, unit="h")).dt.normalize()
