"""Gradient-boosted quantile regression (LightGBM) on the feature rows of ``day_ahead_v1``.

One LightGBM booster per fitted quantile level (pinball objective), per market, and either one
booster for all hours (``structure="pooled"``, the hour is a feature) or one per local hour
(``"per_hour"``). ``inputs="day_block"`` adds, to each row, the whole day's context from the rows
of the same delivery day: the 24 hourly prices of D-1 (``price_lag_P1D`` of each hour; with
``block_prices`` also those of D-2, D-3 and D-7, as the paper's LEAR sees them) and the
exogenous forecasts of every hour of D, plus their daily mean, min and max. ``target_transform``
``"asinh"`` fits in ``asinh((price - median) / MAD)`` space (median and MAD of the training
target) and transforms back; quantiles are equivariant under this monotone map. ``"level"`` fits
the price relative to the previous day's level: the target and every price input minus
``price_prev_day_mean`` (D-1's mean price, itself kept as an input; where it is missing the 7-day
rolling mean, else the training target's median), and adds it back (a shift: quantiles map exactly).
Trees cannot extrapolate a price level they never saw in training; a difference they can. On the
EPF validation year this won clearly on NP and lost on BE and FR (docs/models.md), so it is a
per-market choice, not the default. ``"lear"`` takes a LEAR forecast as the level instead: the target
and every price input minus a LEAR forecast of the row's price, the forecast itself an input, and the
boosters learn the LEAR's residuals. The training rows' LEAR forecasts are cross-fitted (the training
days in ``anchor_folds`` contiguous blocks, each forecast by a LEAR of ``anchor_windows`` fitted on the
other blocks), so the residuals learned are out-of-sample ones, as a forecast's are; a forecast takes
the LEAR fitted on all training days (with ``recalibrate=True`` refitted daily on newer rows, see
:meth:`LEAR.recalibrate <models.lear.LEAR>`). On the EPF validation year it beat the D-1 level on NP
and did not help BE or FR; on NP's test period it lost (docs/models.md), so no recipe uses it.

``median_n_estimators`` and ``median_learning_rate`` boost the median (the point forecast, which
alone decides MAE) longer and slower than the other levels, at a fraction of the cost of doing so for
every level. ``median_objective`` ``"l2"`` boosts the median on squared errors instead (the mean),
``"quantile+l2"`` both and averages them: on NP's validation year that average cut the ensemble's MAE by
1.3 % (DM p = 0.004), so NP's recipe takes it (docs/models.md). ``median_seeds`` > 1 fits that many
median boosters (of each objective), of seeds ``seed``, ``seed + 1``, ... (each samples its own rows and
features per tree), and averages them: less variance in the point forecast for one more median booster
each.

The defaults (pooled, day-block inputs, raw target) are the structure chosen on the EPF
validation year (see docs/models.md).

Where the feature ``residual_load_mw`` (load minus wind minus solar) is missing in every training row
because a market publishes no forecast of one part (NP has no solar forecast), the model takes the load
forecast minus the renewable forecasts the market does publish as its residual load, in training and in
every forecast (``derive_residual_load``; on NP's validation year it cut LightGBM's MAE by 1.7 % and the
ensemble's by 1.2 %, DM p = 0.008, docs/models.md).

Missing inputs are left NaN: LightGBM routes them to the side learned in training (counted in
``missing_inputs``). Requested quantiles between fitted levels are linearly interpolated; outside
the fitted range they are a :class:`QuantileError`.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from features.errors import QuantileError
from features.transforms.exogenous import RESIDUAL_LOAD_PARTS
from models.dayblock import HOURS, DayBlocks
from models.featureframe import (
    CALENDAR_FEATURES,
    EXOGENOUS_FEATURES,
    EXOGENOUS_LAG_FEATURES,
    PRICE_FEATURES,
    local_day,
)
from models.forecaster import DEFAULT_QUANTILES, MarketwiseForecaster, check_quantiles, importance_frame
from models.lear import LEAR, PRICE_LAGS, InvariantScaler

TARGET_TRANSFORMS = ("none", "asinh", "level", "lear")
EXOGENOUS_LAG_INPUTS = ("none", "day_stats", "day_block")
RESIDUAL_COLUMN = "residual_load_mw"
LEVEL_COLUMN, LEVEL_FALLBACK = "price_prev_day_mean", "price_rolling_mean_P7D"
# price inputs taken relative to the level under target_transform="level" (the level itself stays absolute)
RELATIVE_PRICES = ("price_lag_P1D", "price_lag_P2D", "price_lag_P3D", "price_lag_P7D", "price_prev_day_min",
                   "price_prev_day_max", "price_rolling_mean_P7D")

MEDIAN_OBJECTIVES = ("quantile", "l2", "quantile+l2")

DEFAULT_PARAMS: dict[str, object] = {
    "learning_rate": 0.1, "max_bin": 63, "num_leaves": 31, "min_data_in_leaf": 20, "feature_fraction": 0.8,
    "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
}


def import_lightgbm():
    """The ``lightgbm`` module, imported, where this is its first import, without its scikit-learn
    wrapper.

    ``import lightgbm`` also imports scikit-learn (and with it ``scipy.stats``) for its
    ``LGBMRegressor`` wrapper: 0.6 s of its 0.7 s in a process that has pandas already (docs/benchmarks.md,
    batch scoring). The platform uses only LightGBM's core API (``Dataset``, ``train``, ``Booster``),
    so when scikit-learn is not imported yet, LightGBM is imported with scikit-learn hidden: its
    compatibility layer then records scikit-learn as absent, and only its scikit-learn wrapper
    classes, which the platform never uses, refuse to work in this process. scikit-learn itself is
    untouched and imports normally afterwards (the LEAR models use it). A process that has either
    package already keeps it as it is.
    """
    if "lightgbm" in sys.modules or "sklearn" in sys.modules:
        import lightgbm

        return lightgbm
    sys.modules["sklearn"] = None  # ``import sklearn`` raises ImportError while this is set
    try:
        import lightgbm
    finally:
        if sys.modules.get("sklearn", 0) is None:
            del sys.modules["sklearn"]
    return lightgbm


class _MedianAverage:
    """Median boosters of several seeds or objectives standing as one: ``predict`` averages theirs."""

    def __init__(self, boosters: list):
        self.boosters = boosters

    def predict(self, x: np.ndarray, num_threads: int = 0) -> np.ndarray:
        return np.mean([b.predict(x, num_threads=num_threads) for b in self.boosters], axis=0)

    def feature_importance(self, importance_type: str = "split") -> np.ndarray:
        return np.mean([b.feature_importance(importance_type=importance_type) for b in self.boosters], axis=0)


@dataclass
class _MarketGBM:
    columns: list[str]
    block_columns: list[str]
    scaler: InvariantScaler | None
    boosters: dict[tuple[int, float], object] = field(default_factory=dict)  # (hour or -1, quantile)
    level_fill: float | None = None  # target_transform="level": the level where a row has none
    stat_columns: tuple[str, ...] = ()  # columns that add their daily mean, min and max only (exogenous lags)
    anchor: LEAR | None = None  # target_transform="lear": the LEAR whose forecast is the level
    residual_parts: tuple[str, ...] = ()  # residual load derived here: load minus these forecasts (see _residual)


class LightGBMForecaster(MarketwiseForecaster):
    """LightGBM quantile regression; see the module docstring for the structure options."""

    def __init__(self, quantiles: tuple[float, ...] = DEFAULT_QUANTILES, *, structure: str = "pooled",
                 inputs: str = "day_block", target_transform: str = "none", n_estimators: int = 200,
                 params: dict[str, object] | None = None, n_jobs: int = 2, seed: int = 0,
                 block_prices: tuple[str, ...] = ("price_lag_P1D",), median_objective: str = "quantile",
                 median_n_estimators: int | None = None, median_learning_rate: float | None = None,
                 exogenous_lags: str = "none", anchor_windows: tuple[int, ...] = (728,), anchor_folds: int = 4,
                 recalibrate: bool = False, derive_residual_load: bool = True, median_seeds: int = 1):
        if structure not in ("pooled", "per_hour"):
            raise ValueError(f"structure {structure!r} must be 'pooled' or 'per_hour'")
        if inputs not in ("same_hour", "day_block"):
            raise ValueError(f"inputs {inputs!r} must be 'same_hour' or 'day_block'")
        if target_transform not in TARGET_TRANSFORMS:
            raise ValueError(f"target_transform {target_transform!r} must be one of {', '.join(TARGET_TRANSFORMS)}")
        unknown = [c for c in block_prices if c not in PRICE_LAGS]
        if not block_prices or unknown:
            raise ValueError(f"block_prices {block_prices!r} must be a non-empty subset of {PRICE_LAGS!r}")
        if exogenous_lags not in EXOGENOUS_LAG_INPUTS:
            raise ValueError(f"exogenous_lags {exogenous_lags!r} must be one of {', '.join(EXOGENOUS_LAG_INPUTS)}")
        if median_objective not in MEDIAN_OBJECTIVES:
            raise ValueError(f"median_objective {median_objective!r} must be one of {', '.join(MEDIAN_OBJECTIVES)}")
        if median_n_estimators is not None and int(median_n_estimators) < 1:
            raise ValueError(f"median_n_estimators {median_n_estimators!r} must be at least 1 (None: n_estimators)")
        if isinstance(median_seeds, bool) or not isinstance(median_seeds, (int, np.integer)) or median_seeds < 1:
            raise ValueError(f"median_seeds {median_seeds!r} must be a whole number of at least 1")
        if median_learning_rate is not None and not float(median_learning_rate) > 0:
            raise ValueError(f"median_learning_rate {median_learning_rate!r} must be positive (None: learning_rate)")
        if not anchor_windows or any(int(w) < 7 for w in anchor_windows):
            raise ValueError(f"anchor_windows {anchor_windows!r} must be LEAR calibration lengths of at least 7 days")
        if int(anchor_folds) < 2:
            raise ValueError(f"anchor_folds {anchor_folds!r} must be at least 2 (cross-fitted LEAR forecasts)")
        if recalibrate and target_transform != "lear":
            raise ValueError(f"recalibrate=True refits the LEAR of target_transform='lear' daily; the target "
                             f"transform is {target_transform!r}")
        self.anchor_windows, self.anchor_folds = tuple(int(w) for w in anchor_windows), int(anchor_folds)
        self.recalibrates = bool(recalibrate)
        self.derive_residual_load = bool(derive_residual_load)
        self.median_objective = median_objective
        self.exogenous_lags = exogenous_lags
        # the median booster alone decides the point forecast (MAE): it may boost longer and slower than the tails
        self.median_n_estimators, self.median_learning_rate = median_n_estimators, median_learning_rate
        self.median_seeds = int(median_seeds)
        self.quantiles = check_quantiles(quantiles)
        self.block_prices = tuple(block_prices)
        self.structure, self.inputs, self.target_transform = structure, inputs, target_transform
        self.n_estimators, self.params, self.n_jobs, self.seed = n_estimators, dict(params or {}), n_jobs, seed

    # ------------------------------------------------------------ design

    def _design(self, frame: pd.DataFrame, columns: list[str], block_columns: list[str],
                stat_columns: tuple[str, ...] | list[str] = ()) -> np.ndarray:
        """Row inputs ``columns``; per day, every hour of ``block_columns`` and the daily mean, min and max of
        ``block_columns`` and ``stat_columns``."""
        x = frame[columns].to_numpy(dtype=float)
        if not block_columns and not stat_columns:
            return x
        blocks = DayBlocks.of(frame)
        cube = blocks.pivot(frame[[*block_columns, *stat_columns]].to_numpy(dtype=float))  # (days, 24, k)
        wide = cube[:, :, :len(block_columns)].transpose(0, 2, 1).reshape(len(blocks), -1)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                stats = np.hstack([np.nanmean(cube, axis=1), np.nanmin(cube, axis=1), np.nanmax(cube, axis=1)])
        per_day = np.hstack([wide, stats])
        return np.hstack([x, per_day[blocks.block]])

    def _residual_parts(self, frame: pd.DataFrame) -> tuple[str, ...]:
        """The forecasts to derive a residual load from, where the feature is missing in every training row.

        ``residual_load_mw`` (load minus wind minus solar) is missing wherever a part is: a market that
        publishes no solar forecast (NP) has none at all. Then the residual load is taken here as the load
        forecast minus the renewable forecasts the market does publish (those with a value in some training
        row): ``("load_forecast_mw", "wind_forecast_mw")`` for NP. No parts (nothing derived) when the
        feature has values, when there is no load forecast, or no renewable forecast (BE and FR of the EPF
        files), or with ``derive_residual_load=False``.
        """
        if not getattr(self, "derive_residual_load", False):
            return ()
        used, _ = self.usable(frame, RESIDUAL_LOAD_PARTS)
        if (RESIDUAL_COLUMN in frame.columns and frame[RESIDUAL_COLUMN].notna().any()) or \
                RESIDUAL_LOAD_PARTS[0] not in used or len(used) < 2:
            return ()
        return tuple(used)

    @staticmethod
    def _residual(frame: pd.DataFrame, parts: tuple[str, ...]) -> pd.DataFrame:
        """``frame`` with ``residual_load_mw`` = the first part minus the others (NaN where any part is)."""
        if not parts:
            return frame
        values = frame[parts[0]].to_numpy(dtype=float) - frame[list(parts[1:])].to_numpy(dtype=float).sum(axis=1)
        return frame.assign(**{RESIDUAL_COLUMN: values})

    @staticmethod
    def _level(frame: pd.DataFrame, fill: float) -> np.ndarray:
        """Each row's price level: D-1's mean price, else the 7-day rolling mean, else ``fill``."""
        level = np.full(len(frame), np.nan)
        for c in (LEVEL_COLUMN, LEVEL_FALLBACK):
            if c in frame.columns:
                level = np.where(np.isnan(level), frame[c].to_numpy(dtype=float), level)
        return np.where(np.isnan(level), fill, level)

    @staticmethod
    def _relative(frame: pd.DataFrame, level: np.ndarray) -> pd.DataFrame:
        """``frame`` with its price inputs taken relative to ``level`` (a copy)."""
        out = frame.copy()
        for c in RELATIVE_PRICES:
            if c in out.columns:
                out[c] = out[c].to_numpy(dtype=float) - level
        return out

    @staticmethod
    def _anchor_level(forecast: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        """The LEAR forecast where there is one, else the D-1 level (``_level``)."""
        return np.where(np.isnan(forecast), fallback, forecast)

    def _anchor_model(self, recalibrate: bool) -> LEAR:
        """A new LEAR of ``target_transform="lear"``: the cross-fitted ones and the one forecasts take."""
        return LEAR(windows=self.anchor_windows, recalibrate=recalibrate)

    def _cross_fitted(self, frame: pd.DataFrame, y: np.ndarray) -> np.ndarray:
        """LEAR forecasts of the training rows, each contiguous block of days by a LEAR fitted on the others."""
        day = local_day(frame).to_numpy()
        days = np.unique(day)
        out = np.full(len(frame), np.nan)
        target = pd.Series(y, frame.index)
        for block in np.array_split(days, min(self.anchor_folds, len(days))):
            held = np.isin(day, block)
            lear = self._anchor_model(recalibrate=False).fit(frame[~held], target[~held])
            out[held] = lear.predict(frame[held])["q50"].to_numpy()
        return out

    def _recalibrate_market(self, state: _MarketGBM, frame: pd.DataFrame, y: np.ndarray) -> _MarketGBM:
        """The same boosters; the LEAR of ``target_transform="lear"`` refitted on the newer rows."""
        return replace(state, anchor=copy.copy(state.anchor).recalibrate(frame, pd.Series(y, frame.index)))

    def _fit_market(self, frame: pd.DataFrame, y: np.ndarray):
        lgb = import_lightgbm()

        lags = EXOGENOUS_LAG_FEATURES if self.exogenous_lags != "none" else ()
        candidates = [*PRICE_FEATURES, *EXOGENOUS_FEATURES, *lags, *CALENDAR_FEATURES]
        residual_parts = self._residual_parts(frame)
        frame = self._residual(frame, residual_parts)
        used, unused = self.usable(frame, candidates)
        block, stats = [], ()
        if self.inputs == "day_block":
            prices = [c for c in self.block_prices if c in used]
            block = prices + [c for c in EXOGENOUS_FEATURES if c in used and c != "fuel_price_eur_mwh"]
            used_lags = [c for c in lags if c in used]
            if self.exogenous_lags == "day_block":
                block += used_lags
            else:
                stats = tuple(used_lags)
        scaler = InvariantScaler(y[:, None]) if self.target_transform == "asinh" else None
        z = scaler.transform(y[:, None])[:, 0] if scaler else y
        fill, anchor, level = None, None, None
        if self.target_transform in ("level", "lear"):
            fill = float(np.nanmedian(y))
            level = self._level(frame, fill)
        if self.target_transform == "lear":
            anchor = self._anchor_model(recalibrate=self.recalibrates).fit(frame, pd.Series(y, frame.index))
            level = self._anchor_level(self._cross_fitted(frame, y), level)
        if level is not None:
            frame, z = self._relative(frame, level), y - level
        x = self._design(frame, used, block, stats)
        inputs = used
        if anchor is not None:  # the LEAR forecast is an input too; the LEAR's inputs are the model's as well
            x = np.hstack([x, level[:, None]])
            inputs = used + [c for c in anchor.input_columns_ if c not in used]
        state = _MarketGBM(used, block, scaler, level_fill=fill, stat_columns=stats, anchor=anchor,
                           residual_parts=residual_parts)
        if residual_parts:  # a derived input: the rows a forecast needs hold its parts, not the feature
            inputs = [c for c in inputs if c != RESIDUAL_COLUMN] + [c for c in residual_parts if c not in inputs]
        hours = frame["hour"].to_numpy()
        groups = [(-1, np.ones(len(frame), bool))] if self.structure == "pooled" else \
            [(h, hours == h) for h in range(HOURS)]
        for h, mask in groups:
            if not mask.any():
                continue
            data = lgb.Dataset(x[mask], z[mask], free_raw_data=True, params={"verbose": -1})
            for q in self.quantiles:
                params = {**DEFAULT_PARAMS, **self.params, "objective": "quantile", "alpha": q, "verbose": -1,
                          "num_threads": self.n_jobs, "seed": self.seed, "deterministic": True}
                rounds = self.n_estimators
                if q == 0.5:
                    if self.median_learning_rate is not None:
                        params = {**params, "learning_rate": self.median_learning_rate}
                    if self.median_n_estimators is not None:
                        rounds = self.median_n_estimators
                    # "l2": the mean, smoother gradients than the pinball's signs; "quantile+l2": both, averaged
                    seeds = range(self.seed, self.seed + getattr(self, "median_seeds", 1))  # older pickles: 1
                    boosters = [lgb.train({**params, "objective": o, "seed": sd}, data, num_boost_round=rounds)
                                for o in self.median_objective.split("+") for sd in seeds]
                    state.boosters[(h, q)] = boosters[0] if len(boosters) == 1 else _MedianAverage(boosters)
                    continue
                state.boosters[(h, q)] = lgb.train(params, data, num_boost_round=rounds)
        return state, inputs, [c for c in unused if c not in inputs]

    @staticmethod
    def _design_inputs(state: _MarketGBM) -> list[str]:
        """The input each column of ``_design``'s matrix comes from: the row values, each block column's 24
        hours, the daily mean, min and max of block and stat columns, then the anchor's forecast."""
        names = list(state.columns)
        daily = [*state.block_columns, *state.stat_columns]
        if daily:  # _design adds no day context without them
            names += [c for c in state.block_columns for _ in range(HOURS)] + daily * 3
        return names + (["lear_forecast"] if state.anchor is not None else [])

    def feature_importance(self) -> pd.DataFrame:
        """Each input's total split gain (measure ``gain``) in each quantile's booster: summed over its row
        value, its 24 day-block hours and daily statistics, and the hours of per-hour boosters. A derived
        residual load counts as ``residual_load_mw``; the LEAR forecast of ``target_transform="lear"`` as
        ``lear_forecast``."""
        super().feature_importance()
        rows = []
        for market, state in self.models_.items():
            names = self._design_inputs(state)
            for (_, q), booster in state.boosters.items():
                gain = booster.feature_importance(importance_type="gain")
                if len(gain) != len(names):
                    raise ValueError(f"a booster of market {market!r} has {len(gain)} inputs; the design names "
                                     f"{len(names)}")
                rows += [{"market": market, "model": type(self).__name__, "quantile": q, "input": n,
                          "importance": float(g), "measure": "gain"} for n, g in zip(names, gain)]
        return importance_frame(rows)

    def _predict_market(self, state: _MarketGBM, frame: pd.DataFrame, quantiles):
        lo, hi = self.quantiles[0], self.quantiles[-1]
        for q in quantiles:
            if q < lo - 1e-12 or q > hi + 1e-12:
                raise QuantileError(f"quantile {q!r} is outside the fitted levels {self.quantiles!r}; "
                                    f"refit with quantiles=... to include it")
        frame = self._residual(frame, getattr(state, "residual_parts", ()))
        level = None
        if state.level_fill is not None:
            level = self._level(frame, state.level_fill)
        if state.anchor is not None:
            level = self._anchor_level(state.anchor.predict(frame)["q50"].to_numpy(), level)
        if level is not None:
            frame = self._relative(frame, level)
        x = self._design(frame, state.columns, state.block_columns, state.stat_columns)
        if state.anchor is not None:
            x = np.hstack([x, level[:, None]])
        fitted = np.zeros((len(frame), len(self.quantiles)))
        hours = frame["hour"].to_numpy()
        for j, q in enumerate(self.quantiles):
            if self.structure == "pooled":
                fitted[:, j] = state.boosters[(-1, q)].predict(x, num_threads=self.n_jobs)
            else:
                for h in np.unique(hours):
                    booster = state.boosters.get((int(h), q))
                    if booster is None:  # an hour never seen in training (e.g. only on DST days)
                        booster = state.boosters[(min({k[0] for k in state.boosters}, key=lambda k: abs(k - h)), q)]
                    m = hours == h
                    fitted[m, j] = booster.predict(x[m], num_threads=self.n_jobs)
        fitted = np.sort(fitted, axis=1)  # non-crossing before interpolation
        if state.scaler is not None:
            fitted = state.scaler.inverse(fitted.reshape(-1, 1)).reshape(fitted.shape)
        if level is not None:
            fitted = fitted + level[:, None]
        return interpolate_levels(fitted, self.quantiles, quantiles)


def interpolate_levels(values: np.ndarray, levels: tuple[float, ...], quantiles: tuple[float, ...]) -> np.ndarray:
    """Columns for ``quantiles`` from sorted columns at ``levels``, linear in the level, inside their range."""
    lv = np.asarray(levels)
    out = np.empty((values.shape[0], len(quantiles)))
    for j, q in enumerate(quantiles):
        k = int(np.clip(np.searchsorted(lv, q), 1, len(lv) - 1)) if len(lv) > 1 else 0
        if len(lv) == 1 or np.isclose(q, lv[k]):
            out[:, j] = values[:, k]
        elif np.isclose(q, lv[k - 1]):
            out[:, j] = values[:, k - 1]
        else:
            w = (q - lv[k - 1]) / (lv[k] - lv[k - 1])
            out[:, j] = (1 - w) * values[:, k - 1] + w * values[:, k]
    return out
