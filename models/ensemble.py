"""Quantile averaging: an ensemble forecaster whose quantile q is the weighted mean of its members' q.

Averaging quantiles (Vincentization) of non-crossing members gives non-crossing quantiles; the
output is sorted again anyway. Every member is fitted on the same frame; ``recalibrate`` passes newer
rows to the members that recalibrate and keeps the others' fits.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd

from models.forecaster import IMPORTANCE_COLUMNS, Forecaster, quantile_column


class QuantileAverageEnsemble(Forecaster):
    """Weighted quantile average of unfitted member forecasters (equal weights by default)."""

    def __init__(self, members: list[Forecaster] | tuple[Forecaster, ...], weights: tuple[float, ...] | None = None):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        w = np.ones(len(members)) if weights is None else np.asarray(weights, dtype=float)
        if len(w) != len(members) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights {weights!r} must be {len(members)} non-negative numbers with a positive sum")
        self.members = list(members)
        self.weights = tuple(float(x) for x in w / w.sum())

    def _fit(self, frame: pd.DataFrame, y: np.ndarray) -> None:
        target = pd.Series(y, index=frame.index)
        self.fitted_members_ = [copy.deepcopy(m).fit(frame, target) for m in self.members]
        inputs: list[str] = []
        for m in self.fitted_members_:
            inputs += [c for c in m.input_columns_ if c not in inputs]
        self._inputs = tuple(inputs)
        self.unused_columns_ = ()
        self.required_columns = tuple(dict.fromkeys(c for m in self.fitted_members_ for c in m.required_columns))

    @property
    def recalibrates(self) -> bool:
        """True when a member recalibrates (the others keep their fit until the next one)."""
        return any(m.recalibrates for m in getattr(self, "fitted_members_", self.members))

    def _recalibrate(self, frame: pd.DataFrame, y: np.ndarray) -> None:
        target = pd.Series(y, index=frame.index)
        # on copies: a member's fitted state may be shared (``shared_fits``) and is never changed in place
        self.fitted_members_ = [copy.copy(m).recalibrate(frame, target) if m.recalibrates else m
                                for m in self.fitted_members_]

    def feature_importance(self) -> pd.DataFrame:
        """The members' importances, each member named by its position and class (``0:LightGBMForecaster``)."""
        super().feature_importance()
        parts = [m.feature_importance().assign(member=f"{i}:{type(m).__name__}")
                 for i, m in enumerate(self.fitted_members_)]
        return pd.concat(parts, ignore_index=True)[list(IMPORTANCE_COLUMNS)]

    def _check_not_all_missing(self, frame: pd.DataFrame) -> None:
        for m in self.fitted_members_:
            m._check_not_all_missing(frame)

    def _predict(self, frame: pd.DataFrame, quantiles: tuple[float, ...]) -> np.ndarray:
        cols = [quantile_column(q) for q in quantiles]
        parts = [m.predict(frame, quantiles)[cols].to_numpy() for m in self.fitted_members_]
        return np.tensordot(np.asarray(self.weights), np.stack(parts), axes=1)
