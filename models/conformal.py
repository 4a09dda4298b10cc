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

Rolling calibration (``fit_on_past``): a rolling backtest or an operational loop already holds the
base's out-of-sample forecasts of earlier days (issued by earlier fits, before their actuals were
public). The base is then fitted once on the whole frame and the corrections come from the last
``calibration_days`` days of those past forecasts: split conformal on the errors the model makes as
it is used (online conformal), at half the fitting cost. The caller passes only forecasts whose
actual was public at its own issue time (``training.backtest`` does, and seeds the record with the
held-out forecasts of its first fit, ``held_out_``). ``base_forecast`` gives the uncorrected interval
ends to keep for that record.

The median is the base's, unchanged: a corrected interval end that would cross it stops at it
(a narrowing correction of a biased base can move an end past the median; sorting would instead
swap the two and change the point forecast). Only the median and the calibrated interval levels can
be predicted; others are a QuantileError.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd

from features.errors import FeatureFrameError, NotFittedError, QuantileError
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

    def interval_ends(self) -> tuple[float, ...]:
        """The calibrated levels other than the median: the base forecasts that calibration scores."""
        return tuple(q for q in self.levels() if not math.isclose(q, 0.5))

    def fit_on_past(self, features: pd.DataFrame, target: pd.Series, past: pd.DataFrame) -> ConformalForecaster:
        """Fit the base once on all rows; calibrate on ``past`` (rolling calibration, module docstring).

        ``past``: one row per earlier delivery hour with the local ``day``, the ``actual`` price and
        the base's out-of-sample forecast of every interval end (``q10``, ``q90``, ...). Only its last
        ``calibration_days`` days are used; it must cover at least that many (FeatureFrameError).
        """
        need = ["day", "actual", *(quantile_column(q) for q in self.interval_ends())]
        missing = [c for c in need if c not in past.columns]
        if missing:
            raise FeatureFrameError(f"past forecasts lack column {missing[0]!r}; expected {need}", column=missing[0])
        scored = past[past["actual"].notna()]
        if scored["day"].nunique() < self.calibration_days:
            raise FeatureFrameError(f"past forecasts cover {scored['day'].nunique()} days with known actuals; "
                                    f"rolling calibration needs at least calibration_days={self.calibration_days}")
        self._past = scored
        try:
            return self.fit(features, target)
        finally:
            del self._past

    def base_forecast(self, features: pd.DataFrame) -> pd.DataFrame:
        """The fitted base's own (uncorrected) interval ends for these rows: what a later rolling
        calibration scores once their actuals are public."""
        if not getattr(self, "is_fitted_", False):
            raise NotFittedError("ConformalForecaster is not fitted; call fit(features, target) first")
        ends = self.interval_ends()
        return self.model_.predict(features, ends)[[quantile_column(q) for q in ends]]

    def _fit(self, frame: pd.DataFrame, y: np.ndarray) -> None:
        past = getattr(self, "_past", None)
        if past is not None:
            self.model_ = copy.deepcopy(self.base).fit(frame, pd.Series(y, index=frame.index))
            self.held_out_ = None
            days = np.sort(past["day"].unique())
            self._calibrate(past[(past["day"] >= days[-self.calibration_days]).to_numpy()])
        else:
            self._fit_held_out(frame, y)
        self._inputs = self.model_.input_columns_
        self.required_columns = self.model_.required_columns
        self.unused_columns_ = getattr(self.model_, "unused_columns_", ())

    def feature_importance(self) -> pd.DataFrame:
        """The fitted base's (the intervals' corrections weigh no input)."""
        super().feature_importance()
        return self.model_.feature_importance()

    @property
    def recalibrates(self) -> bool:
        """True when the base recalibrates; the corrections stay those of the last fit."""
        return getattr(self, "model_", self.base).recalibrates

    def _recalibrate(self, frame: pd.DataFrame, y: np.ndarray) -> None:
        # on a copy, as every recalibration: fitted states are never changed in place (``shared_fits``)
        self.model_ = copy.copy(self.model_).recalibrate(frame, pd.Series(y, index=frame.index))

    def _fit_held_out(self, frame: pd.DataFrame, y: np.ndarray) -> None:
        day = local_day(frame)
        days = np.sort(day.unique())
        if len(days) <= self.calibration_days + 7:
            raise FeatureFrameError(f"{len(days)} training days leave too few to fit before the "
                                    f"{self.calibration_days} calibration days")
        held = (day >= days[-self.calibration_days]).to_numpy()
        early = copy.deepcopy(self.base).fit(frame[~held], pd.Series(y[~held], index=frame.index[~held]))
        ends = self.interval_ends()
        pred = early.predict(frame[held], ends)
        #: the held-out days' forecasts of the early base, in the ``fit_on_past`` format (rows by label)
        self.held_out_ = pd.DataFrame({"day": day[held].to_numpy(), "actual": y[held],
                                       **{quantile_column(q): pred[quantile_column(q)].to_numpy() for q in ends}},
                                      index=frame.index[held])
        self._calibrate(self.held_out_)
        self.model_ = copy.deepcopy(self.base).fit(frame, pd.Series(y, index=frame.index)) if self.refit else early

    def _calibrate(self, scored: pd.DataFrame) -> None:
        """Corrections of each interval end from forecasts with known actuals (asymmetric CQR, pooled hours)."""
        actual = scored["actual"].to_numpy(dtype=float)
        self.corrections_: dict[float, float] = {}
        for c in self.coverages:
            a = 1 - c
            lo_q, hi_q = round(a / 2, 10), round(1 - a / 2, 10)
            lo = scored[quantile_column(lo_q)].to_numpy(dtype=float)
            hi = scored[quantile_column(hi_q)].to_numpy(dtype=float)
            self.corrections_[lo_q] = _conformal_quantile(lo - actual, 1 - a / 2)   # lower bound moves down by this
            self.corrections_[hi_q] = _conformal_quantile(actual - hi, 1 - a / 2)   # upper bound moves up by this
        self.calibration_hours_ = int(len(scored))

    def _predict(self, frame: pd.DataFrame, quantiles: tuple[float, ...]) -> np.ndarray:
        available = self.levels()
        for q in quantiles:
            if not any(math.isclose(q, a) for a in available):
                raise QuantileError(f"quantile {q!r} is not calibrated; this conformal model predicts {available!r}")
        qs = tuple(next(a for a in available if math.isclose(q, a)) for q in quantiles)
        base = self.model_.predict(frame, tuple(sorted(set(qs) | {0.5})))
        median = base["q50"].to_numpy()
        out = np.empty((len(frame), len(qs)))
        for j, q in enumerate(qs):
            v = base[quantile_column(q)].to_numpy()
            if q < 0.5:  # an end moved across the median stops at it: the point forecast stays the base's
                v = np.minimum(v - self.corrections_[q], median)
            elif q > 0.5:
                v = np.maximum(v + self.corrections_[q], median)
            out[:, j] = v
        return out


def _conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ceil((n+1) * level)-th smallest score (the finite-sample conformal quantile)."""
    s = np.sort(scores[~np.isnan(scores)])
    n = len(s)
    k = min(math.ceil((n + 1) * level), n)
    return float(s[k - 1])
