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
        point = frame[self.column].to_numpy(dtype=float)
        gaps = np.isnan(point)
        if gaps.any():
            blocks = DayBlocks.of(frame)
            point = np.where(gaps, blocks.unpivot(blocks.pivot(point)), point)
        return point[:, None] + state.shift(frame["hour"].to_numpy(), quantiles)
