"""Conformalized quantile regression (CQR): calibrated central intervals around any forecaster.

``fit`` holds out the last ``calibration_days`` local delivery days of the training frame, fits a
copy of the base forecaster on the days before, and predicts the held-out days. For each interval
coverage c (default 0.8: the P10–P90 interval) the lower and upper ends are calibrated separately
(asymmetric CQR, pooled over hours): the lower bound moves by the finite-sample ``(1 - a/2)``
quantile of ``lower - actual`` and the upper by that of ``actual - upper``, with ``a = 1 - c``.
Under exchangeability of the held-out and future days each side misses at most ``a/2`` of hours.
With ``refit=True`` (default) the base is then refitted on the whole frame and the corrections are
applied to its forecasts (the refitted model is at least as accurate, so the intervals tend to be
slightly conservative); ``refit=False`` keeps the model fitted before the held-out days.

Only the median and the calibrated interval levels can be predicted; others are a QuantileError.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd

from features.errors import FeatureFrameError, QuantileError
from models.featureframe import local_day
from models.forecaster import Forecaster, quantile_column


class ConformalForecaster(Forecaster):
    """Wraps an unfitted forecaster ``base``; see the module docstring."""

    def __init__(self, base: Forecaster, *, calibration_days: int = 182, coverages: tuple[float, ...] = (0.8,),
                 refit: bool = True):
        if calibration_days < 7:
            raise ValueError(f"calibration_days {calibration_days!r} must be at least 7")
        for c in coverages:
            if not 0 < c < 1:
                raise ValueError(f"coverage {c!r} must be inside (0, 1)")
        self.base = base
        self.calibration_days = int(calibration_days)
        self.coverages = tuple(float(c) for c in coverages)
        self.refit = refit

    def levels(self) -> tuple[float, ...]:
        """Quantile levels this wrapper can predict: the median and the ends of each calibrated interval."""
        ends = {round((1 - c) / 2, 10) for c in self.coverages} | {round(1 - (1 - c) / 2, 10) for c in self.coverages}
        return tuple(sorted(ends | {0.5}))

    def _fit(self, frame: pd.DataFrame, y: np.ndarray) -> None:
        day = local_day(frame)
        days = np.sort(day.unique())
        if len(days) <= self.calibration_days + 7:
            raise FeatureFrameError(f"{len(days)} training days leave too few to fit before the "
                                    f"{self.calibration_days} calibration days")
        held = (day >= days[-self.calibration_days]).to_numpy()
        early = copy.deepcopy(self.base).fit(frame[~held], pd.Series(y[~held], index=frame.index[~held]))
        levels = self.levels()
        pred = early.predict(frame[held], levels)
        actual = y[held]
        self.corrections_: dict[float, float] = {}
        for c in self.coverages:
            a = 1 - c
            lo_q, hi_q = round(a / 2, 10), round(1 - a / 2, 10)
            lo = pred[quantile_column(lo_q)].to_numpy()
            hi = pred[quantile_column(hi_q)].to_numpy()
            self.corrections_[lo_q] = _conformal_quantile(lo - actual, 1 - a / 2)   # lower bound moves down by this
            self.corrections_[hi_q] = _conformal_quantile(actual - hi, 1 - a / 2)   # upper bound moves up by this
        self.calibration_hours_ = int(held.sum())
        self.model_ = copy.deepcopy(self.base).fit(frame, pd.Series(y, index=frame.index)) if self.refit else early
        self._inputs = self.model_.input_columns_
        self.required_columns = self.model_.required_columns
        self.unused_columns_ = getattr(self.model_, "unused_columns_", ())

    def _predict(self, frame: pd.DataFrame, quantiles: tuple[float, ...]) -> np.ndarray:
        available = self.levels()
        for q in quantiles:
            if not any(math.isclose(q, a) for a in available):
                raise QuantileError(f"quantile {q!r} is not calibrated; this conformal model predicts {available!r}")
        qs = tuple(next(a for a in available if math.isclose(q, a)) for q in quantiles)
        base = self.model_.predict(frame, qs)
        out = np.empty((len(frame), len(qs)))
        for j, q in enumerate(qs):
            v = base[quantile_column(q)].to_numpy()
            if q < 0.5:
                v = v - self.corrections_[q]
            elif q > 0.5:
                v = v + self.corrections_[q]
            out[:, j] = v
        return out


def _conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ceil((n+1) * level)-th smallest score (the finite-sample conformal quantile)."""
    s = np.sort(scores[~np.isnan(scores)])
    n = len(s)
    k = min(math.ceil((n + 1) * level), n)
    return float(s[k - 1])
