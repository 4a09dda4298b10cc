"""The weekly naive forecast: the price of the same local hour one week before (``price_lag_P7D``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.dayblock import DayBlocks
from models.forecaster import MarketwiseForecaster, ResidualQuantiles


class WeeklyNaive(MarketwiseForecaster):
    """Median forecast = ``price_lag_P7D`` exactly; other quantiles add empirical residual quantiles.

    Residuals (actual - lag) of the training frame, per local hour and centred on their median, give
    the interval offsets, so ``q50`` is the lag itself. Where the lag is NaN (the hour did not exist a
    week before) it is interpolated from the neighbouring hours of the same day (counted in
    ``missing_inputs``).
    """

    column = "price_lag_P7D"

    def _fit_market(self, frame: pd.DataFrame, y: np.ndarray):
        used, unused = self.usable(frame, [self.column])
        if not used:
            from features.errors import FeatureFrameError

            raise FeatureFrameError(f"{self.column!r} is NaN in every training row of market "
                                    f"{frame['market'].iat[0]!r}", column=self.column)
        resid = y - frame[self.column].to_numpy()
        return ResidualQuantiles(frame["hour"].to_numpy(), resid), used, unused

    def _predict_market(self, state: ResidualQuantiles, frame: pd.DataFrame, quantiles):
        return weekly_lag(frame)[:, None] + state.shift(frame["hour"].to_numpy(), quantiles)


def weekly_lag(frame: pd.DataFrame) -> np.ndarray:
    """The weekly naive point forecast of each row: ``price_lag_P7D``, with an hour that did not exist a
    week before (spring DST) interpolated from its neighbours within the day."""
    point = frame[WeeklyNaive.column].to_numpy(dtype=float)
    if np.isnan(point).any():
        blocks = DayBlocks.of(frame)
        point = np.where(np.isnan(point), blocks.unpivot(blocks.pivot(point)), point)
    return point
