"""LEAR: the LASSO-estimated autoregressive model of Lago et al. (2021), on Aurum day blocks.

For each market and local hour h a LASSO regresses the price of hour h of day D on the 24 hourly
prices of days D-1, D-2, D-3 and D-7 (the same-hour lags of all 24 rows of day D), the exogenous
day-ahead forecasts of all 24 hours of day D, and 7 weekday dummies. As in epftoolbox:

- inputs (except the dummies) and the target are scaled per column with the median and the MAD
  (normal-consistent) of the calibration window, then transformed with ``asinh``; forecasts are
  transformed back;
- the penalty of each hour is chosen by AIC on the LARS path (``LassoLarsIC``), then the LASSO is
  refitted with it (``criterion="bic"``: by BIC, a study option; docs/models.md).
  ``alpha_rule="epftoolbox"`` reproduces the published toolbox, which ran on scikit-learn < 1.2 where
  ``LassoLarsIC`` normalised its columns to unit norm: the alpha chosen on normalised columns is
  applied to the unnormalised ones (a weaker penalty); ``"aic"`` applies the AIC choice consistently;
- the model is fitted on the last ``window`` days of the training frame for each window, and the
  ensemble averages the windows' forecasts (in price space).

With ``recalibrate=True`` the model can ``recalibrate`` on newer rows between two full fits: each
window and hour keeps the penalty its last fit chose by AIC (the LARS paths, most of a fit's cost,
are skipped), while the scaling and the coefficients are refitted on the window's newest days (the
coordinate descent starts from the previous coefficients). A rolling backtest recalibrates daily
inside its refit blocks, as the paper recalibrates its LEAR daily.

Differences to the paper: the exogenous forecasts of D-1 and D-7 are inputs only when ``exogenous``
names them (``EXOGENOUS_LAG_FEATURES``, the feature view ``exogenous_lag_features``; the spec's
``exogenous_lags``): on the EPF validation year they helped NP and not BE or FR. Quantiles are the
ensemble forecast plus per-hour quantiles of the in-sample residuals of the longest window
(optimistic: wrap it in ``ConformalForecaster``).
Missing inputs: hours are interpolated inside a day (see :mod:`models.dayblock`); a feature missing
for a whole day takes its training median (0 after scaling). Training days with any missing input or
target value after interpolation are dropped (counted in ``dropped_days``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.errors import FeatureFrameError
from models.dayblock import HOURS, DayBlocks
from models.featureframe import EXOGENOUS_FEATURES
from models.forecaster import MarketwiseForecaster, ResidualQuantiles, importance_frame

PRICE_LAGS: tuple[str, ...] = ("price_lag_P1D", "price_lag_P2D", "price_lag_P3D", "price_lag_P7D")


class InvariantScaler:
    """``asinh((x - median) / MAD)`` per column; a zero MAD falls back to the standard deviation, then 1."""

    def __init__(self, x: np.ndarray):
        from scipy.stats import median_abs_deviation

        self.median = np.median(x, axis=0)
        mad = median_abs_deviation(x, axis=0, scale="normal")
        std = np.std(x, axis=0)
        self.mad = np.where(mad > 0, mad, np.where(std > 0, std, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.arcsinh((x - self.median) / self.mad)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return np.sinh(z) * self.mad + self.median


@dataclass
class _WindowModel:
    """One calibration window's 24 hourly LASSOs, as coefficient arrays (no estimator objects kept)."""

    window: int
    days_used: int
    x_scaler: InvariantScaler
    y_scaler: InvariantScaler
    coef: np.ndarray  # (24, n_inputs)
    intercept: np.ndarray  # (24,)
    alpha: np.ndarray  # (24,)

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = self._scale(x)
        return self.y_scaler.inverse(z @ self.coef.T + self.intercept)

    def _scale(self, x: np.ndarray) -> np.ndarray:
        z = x.copy()
        z[:, :-7] = self.x_scaler.transform(x[:, :-7])
        return np.where(np.isnan(z), 0.0, z)  # a day-long gap takes the training median


@dataclass
class _MarketLEAR:
    columns: list[str]
    windows: list[_WindowModel]
    residuals: ResidualQuantiles
    dropped_days: int


class LEAR(MarketwiseForecaster):
    """An ensemble of per-hour LASSO models over several calibration windows (in days)."""

    required_columns = ("hour", "weekday")

    def __init__(self, windows: tuple[int, ...] = (56, 84, 364, 728), *, alpha_rule: str = "epftoolbox",
                 exogenous: tuple[str, ...] = EXOGENOUS_FEATURES, max_iter: int = 2500, recalibrate: bool = False,
                 criterion: str = "aic"):
        if not windows or any(int(w) < 7 for w in windows):
            raise ValueError(f"windows {windows!r} must be calibration lengths of at least 7 days")
        if alpha_rule not in ("epftoolbox", "aic"):
            raise ValueError(f"alpha_rule {alpha_rule!r} must be 'epftoolbox' or 'aic'")
        if criterion not in ("aic", "bic"):
            raise ValueError(f"criterion {criterion!r} must be 'aic' or 'bic'")
        self.criterion = criterion
        self.windows = tuple(int(w) for w in windows)
        self.alpha_rule = alpha_rule
        self.exogenous = tuple(exogenous)
        self.max_iter = max_iter
        self.recalibrates = bool(recalibrate)

    def fit_key(self) -> tuple:
        """LEAR is deterministic: equal parameters on equal data give equal fits (see ``shared_fits``).
        ``recalibrate`` changes no fit, only what may follow it, so a LEAR that recalibrates and one
        that does not share their fits."""
        return (self.windows, self.alpha_rule, self.exogenous, self.max_iter, getattr(self, "criterion", "aic"))

    def _design(self, frame: pd.DataFrame, columns: list[str]) -> tuple[DayBlocks, np.ndarray]:
        blocks = DayBlocks.of(frame)
        cube = blocks.pivot(frame[columns + ["weekday"]].to_numpy(dtype=float))  # (days, 24, k+1)
        x = cube[:, :, :-1].transpose(0, 2, 1).reshape(len(blocks), -1)  # feature-major, then hour
        weekday = np.rint(np.nanmedian(cube[:, :, -1], axis=1))
        dummies = (weekday[:, None] == np.arange(7)[None, :]).astype(float)
        return blocks, np.hstack([x, dummies])

    def _fit_market(self, frame: pd.DataFrame, y: np.ndarray):
        used, unused = self.usable(frame, [*PRICE_LAGS, *self.exogenous])
        missing_lags = [c for c in PRICE_LAGS if c not in used]
        if missing_lags:
            raise FeatureFrameError(f"LEAR needs {missing_lags[0]!r}, NaN in every training row of market "
                                    f"{frame['market'].iat[0]!r}", column=missing_lags[0])
        return self._fit_windows(frame, y, used, None), used, unused

    def _recalibrate_market(self, state: _MarketLEAR, frame: pd.DataFrame, y: np.ndarray) -> _MarketLEAR:
        """The same inputs and each window's hourly penalties; scaling and coefficients from the newer rows."""
        return self._fit_windows(frame, y, state.columns, state.windows)

    def _training_days(self, frame: pd.DataFrame, y: np.ndarray, used: list[str], least: int = 7
                       ) -> tuple[np.ndarray, np.ndarray, int]:
        """The design rows and 24-hour targets of the complete training days (no missing input or target
        after interpolation), and how many days were dropped; fewer than ``least`` is an error."""
        frame = frame.assign(_y=y)
        blocks, x = self._design(frame, used)
        target = blocks.pivot(frame["_y"].to_numpy())
        ok = ~(np.isnan(x).any(axis=1) | np.isnan(target).any(axis=1))
        if ok.sum() < least:
            raise FeatureFrameError(f"{type(self).__name__} needs at least {least} complete training days for "
                                    f"market {frame['market'].iat[0]!r}, got {int(ok.sum())}")
        return x[ok], target[ok], int((~ok).sum())

    def _fit_windows(self, frame: pd.DataFrame, y: np.ndarray, used: list[str],
                     previous: list[_WindowModel] | None) -> _MarketLEAR:
        x, target, dropped = self._training_days(frame, y, used)
        models = [self._fit_window(x[-w:], target[-w:], w, previous[i] if previous else None)
                  for i, w in enumerate(self.windows)]
        longest = models[int(np.argmax([m.days_used for m in models]))]
        n = longest.days_used
        resid = target[-n:] - longest.predict(x[-n:])
        hours = np.tile(np.arange(HOURS), n)
        return _MarketLEAR(used, models, ResidualQuantiles(hours, resid.ravel()), dropped)

    def _fit_window(self, x: np.ndarray, y: np.ndarray, window: int, previous: _WindowModel | None = None
                    ) -> _WindowModel:
        """The 24 hourly LASSOs of one calibration window (with ``previous``: a recalibration, which keeps
        its hourly penalties, skips the LARS paths and starts the coordinate descent from its coefficients).

        Equal to ``LassoLarsIC(criterion="aic").fit(...).alpha_`` then ``Lasso(alpha).fit(...)`` per hour
        (the published recipe), step for step: the inputs are the same for every hour (only the target
        column differs), so where scikit-learn would compute the centred Gram matrix for each fit
        (more days than inputs: ``precompute="auto"``) it is computed once per window and shared by
        the 24 LARS paths and the 24 coordinate descents; with fewer days than inputs both run on the
        data, as there. The AIC along each path is ``LassoLarsIC``'s, with the residual sum of squares
        from the same statistics.
        """
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import lars_path, lars_path_gram, lasso_path

        xs, ys = InvariantScaler(x[:, :-7]), InvariantScaler(y)
        z = np.hstack([xs.transform(x[:, :-7]), x[:, -7:]])
        zy = ys.transform(y)
        n, k = z.shape
        z_mean, zy_mean = z.mean(axis=0), zy.mean(axis=0)
        zc, yc = z - z_mean, zy - zy_mean
        if self.alpha_rule == "epftoolbox" and previous is None:  # the AIC path on unit-norm columns (sklearn < 1.2)
            norm = np.sqrt((zc**2).sum(axis=0))
            z_ic = zc / np.where(norm > 0, norm, 1.0)
            z_ic = z_ic - z_ic.mean(axis=0)  # centred again, as LassoLarsIC does
        else:
            z_ic = zc
        use_gram = n > k
        zc_f = np.asfortranarray(zc)  # the layout the solver wants: its input checks are skipped below
        if use_gram:
            gram, xy = zc.T @ zc, zc.T @ yc  # xy: (k, 24)
            gram_ic, xy_ic = (z_ic.T @ z_ic, z_ic.T @ yc) if z_ic is not zc else (gram, xy)
            yy = (yc**2).sum(axis=0)
        coef = np.zeros((HOURS, k))
        alphas = np.zeros(HOURS)
        penalty = 2.0 if getattr(self, "criterion", "aic") == "aic" else np.log(n)  # per degree of freedom
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for h in range(HOURS):
                target = np.ascontiguousarray(yc[:, h])  # contiguous as in scikit-learn: same rounding, same path
                if previous is not None:
                    alphas[h] = previous.alpha[h]
                elif use_gram:
                    path_alphas, _, path = lars_path_gram(xy_ic[:, h], gram_ic, n_samples=n, max_iter=self.max_iter,
                                                          method="lasso", alpha_min=0.0)
                    rss = yy[h] - 2 * path.T @ xy_ic[:, h] + np.einsum("ik,ik->k", path, gram_ic @ path)
                else:
                    path_alphas, _, path = lars_path(z_ic, target, max_iter=self.max_iter, method="lasso",
                                                     alpha_min=0.0)
                    rss = ((target[:, None] - z_ic @ path) ** 2).sum(axis=0)
                if previous is None:
                    dof = (np.abs(path) > np.finfo(float).eps).sum(axis=0)
                    # LassoLarsIC's AIC (BIC) with noise_variance = the target's variance (n log(2 pi s2) is constant)
                    ic = rss / max(np.var(zy[:, h]), 1e-12) + penalty * dof
                    alphas[h] = path_alphas[int(np.argmin(ic))]
                _, c, _ = lasso_path(zc_f, target, alphas=[max(alphas[h], 1e-10)], max_iter=self.max_iter,
                                     precompute=gram if use_gram else False,
                                     Xy=np.ascontiguousarray(xy[:, h]) if use_gram else None, check_input=False,
                                     coef_init=None if previous is None else previous.coef[h].copy())  # written into
                coef[h] = c[:, 0]
        intercept = zy_mean - coef @ z_mean
        return _WindowModel(window, len(x), xs, ys, coef, intercept, alphas)

    def feature_importance(self) -> pd.DataFrame:
        """Each input's mean absolute LASSO coefficient (measure ``abs_coef``): on the asinh-scaled inputs and
        target, so inputs compare; summed over the 24 hours of its day block, averaged over the 24 hourly
        models and the calibration windows. The weekday dummies count as ``weekday``."""
        super().feature_importance()
        rows = []
        for market, state in self.models_.items():
            names = [c for c in state.columns for _ in range(HOURS)] + ["weekday"] * 7  # the design's order
            for w in state.windows:
                per_input = np.abs(w.coef).mean(axis=0) / len(state.windows)
                if len(per_input) != len(names):
                    raise ValueError(f"LEAR window {w.window} has {len(per_input)} coefficients; its inputs "
                                     f"name {len(names)}")
                rows += [{"market": market, "model": type(self).__name__, "quantile": 0.5, "input": n,
                          "importance": float(v), "measure": "abs_coef"} for n, v in zip(names, per_input)]
        return importance_frame(rows)

    def _predict_market(self, state: _MarketLEAR, frame: pd.DataFrame, quantiles):
        blocks, x = self._design(frame, state.columns)
        point = np.mean([m.predict(x) for m in state.windows], axis=0)  # (days, 24)
        rows = blocks.unpivot(point)
        return rows[:, None] + state.residuals.shift(frame["hour"].to_numpy(), quantiles)
