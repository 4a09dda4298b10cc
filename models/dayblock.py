"""Day blocks: the 23, 24 or 25 rows of one market's local delivery day as a 24-hour vector.

A forecaster that looks at whole days (like the paper's LEAR) pivots rows by local ``hour``. On the
autumn DST day the repeated hour's values are averaged; on the spring day the missing hour (and any
missing value) is interpolated linearly from its neighbouring hours, so each block has exactly 24
entries. Predictions per block are mapped back to the day's actual rows (both repeated autumn hours
get the same value), so the output has exactly one value per input row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.featureframe import local_day

HOURS = 24


@dataclass
class DayBlocks:
    """The blocks of a feature frame. ``days`` has one row per block (market, day), sorted.

    ``block[i]`` and ``hour[i]`` locate input row ``i`` (position, not label).
    """

    days: pd.DataFrame
    block: np.ndarray
    hour: np.ndarray

    @classmethod
    def of(cls, frame: pd.DataFrame) -> DayBlocks:
        """Blocks of a frame with ``market``, ``delivery_start`` (UTC) and local ``hour``."""
        day = local_day(frame)
        keys = pd.DataFrame({"market": frame["market"].astype(str).to_numpy(), "day": day.to_numpy()})
        codes = keys.groupby(["market", "day"], sort=True).ngroup().to_numpy()
        days = keys.drop_duplicates().sort_values(["market", "day"]).reset_index(drop=True)
        return cls(days, codes, frame["hour"].to_numpy(dtype=np.int64))

    def __len__(self) -> int:
        return len(self.days)

    def pivot(self, values: np.ndarray) -> np.ndarray:
        """Per-row values (n,) or (n, k) as blocks (n_blocks, 24) or (n_blocks, 24, k); see the module docstring.

        A block whose values are all missing stays NaN there (the caller decides how to impute).
        """
        v = np.asarray(values, dtype=float)
        squeeze = v.ndim == 1
        v = v[:, None] if squeeze else v
        n_b, k = len(self), v.shape[1]
        total = np.zeros((n_b, HOURS, k))
        count = np.zeros((n_b, HOURS, k))
        ok = ~np.isnan(v)
        np.add.at(total, (self.block, self.hour), np.where(ok, v, 0.0))
        np.add.at(count, (self.block, self.hour), ok.astype(float))
        with np.errstate(invalid="ignore", divide="ignore"):
            out = total / count
        out = _fill_hours(out)
        return out[:, :, 0] if squeeze else out

    def unpivot(self, blocks: np.ndarray) -> np.ndarray:
        """Block values (n_blocks, 24, ...) back to one value per input row."""
        return np.asarray(blocks)[self.block, self.hour]


def _fill_hours(x: np.ndarray) -> np.ndarray:
    """Linear interpolation of NaN hours inside each (block, column) from the valid hours; ends held flat."""
    missing = np.isnan(x)
    if not missing.any():
        return x
    out = x.copy()
    hours = np.arange(HOURS)
    for b, k in zip(*np.nonzero(missing.any(axis=1))):
        col = out[b, :, k]
        good = ~np.isnan(col)
        if good.any():
            out[b, :, k] = np.interp(hours, hours[good], col[good])
    return out
