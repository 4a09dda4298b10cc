"""Model-selection study on the EPF benchmark (not the official benchmark, which goes ingest -> Feast -> backtest).

For each market the EPF CSV is ingested into a temporary lake with the repo's own ingest (DST rules,
quarantine), and the feature frame is built with the repo's transforms (``models.trainingframe``).
A rolling-origin backtest then forecasts each local delivery day D with features known on D-1,
refitting every 7 days on the ``--train-days`` days before the week. Metrics are computed on 24-hour
day blocks (autumn hours averaged, the spring hour interpolated: the EPF files' own convention), so
they are comparable to the paper's Table 3; the paper's published forecasts are scored on the same
days.

Phases: ``test`` = the benchmark test period (last 728 days); ``validation`` = the 364 days before
it, for choosing structures and hyperparameters without touching the test period. ``--days N``
subsamples N days (whole weeks, evenly spread) of the phase's period.

    .venv/bin/python benchmarks/epf_study.py --markets NP --days 56 --models naive,lear,lgbm,ens
    .venv/bin/python benchmarks/epf_study.py --phase validation --days 28 --models lear+lgbm_block_raw,lear_recal+lgbm_block_raw
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.benchreport import header_lines, shared_data  # noqa: E402

PAPER = {  # Table 3: MAE, rMAE, sMAPE, RMSE of the DNN and LEAR ensembles
    "NP": {"DNN": (1.683, 0.407, 4.880, 3.319), "LEAR": (1.738, 0.420, 5.009, 3.362)},
    "BE": {"DNN": (5.870, 0.578, 13.446, 15.966), "LEAR": (6.140, 0.604, 14.546, 15.974)},
    "FR": {"DNN": (3.866, 0.527, 10.812, 11.867), "LEAR": (3.980, 0.543, 11.566, 10.676)},
}
TEST_DAYS = 728
VALIDATION_DAYS = 364
# every LightGBM variant as measured before LightGBM derived the residual load of a market without a solar
# forecast (NP), so that the rows of docs/models.md reproduce; the "_rl" variant derives it
AS_MEASURED = {"derive_residual_load": False}


def data_dir() -> Path:
    return shared_data()


def load_market(code: str) -> tuple[pd.DataFrame, pd.Series]:
    """Ingest the EPF file of ``code`` into a temporary lake and build its feature frame and target."""
    from features.ingest import ingest_file
    from features.lake import Lake
    from features.marketdata import MarketData
    from features.settings import AurumSettings
    from models.trainingframe import training_frame

    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake.open(AurumSettings(home=Path(tmp) / "home"))
        ingest_file(lake, "epf", code, data_dir() / "epf" / f"{code}.csv")
        data = MarketData(lake)
        market = data.registry().get(code)
        return training_frame(data.prices(code), data.fundamentals(code), market)


def with_neighbour_prices(code: str, features: pd.DataFrame, neighbour: str, slot: str = "fuel_price_eur_mwh"
                          ) -> pd.DataFrame:
    """A measurement-only frame: ``neighbour``'s same-hour price of D-1 in the unused column ``slot``.

    The neighbour's D-1 prices were public when the market's own were (the same auction of D-2), so this
    leaks nothing. ``slot`` must be empty (all NaN) in the market's frame. LEAR then sees the neighbour's
    24 prices of D-1 as an exogenous day block; LightGBM sees the same hour's only (it keeps the fuel
    price out of its day blocks). The platform would need a feature for it (a neighbour-price view);
    this only measures what the input is worth.
    """
    if features[slot].notna().any():
        raise SystemExit(f"{code}: column {slot!r} holds values; it cannot carry {neighbour}'s prices")
    other, _ = load_market(neighbour)
    lag = other.set_index("delivery_start")["price_lag_P1D"]
    return features.assign(**{slot: features["delivery_start"].map(lag).to_numpy()})


def with_net_load(code: str, features: pd.DataFrame, slot: str = "residual_load_mw") -> pd.DataFrame:
    """A measurement-only frame: the day-ahead load forecast minus the other forecast of the file, in ``slot``.

    NP: load minus wind (the residual load; the platform's ``residual_load_mw`` is missing there, since it
    also needs a solar forecast, which the NP file lacks). BE and FR: the French load minus the French
    generation forecast (what France must import or leave unserved). Both parts are forecasts for day D
    known before the auction, so this leaks nothing.
    """
    from models.lightgbm_forecaster import RESIDUAL_COLUMN, LightGBMForecaster

    if slot != RESIDUAL_COLUMN or features[slot].notna().any():
        raise SystemExit(f"{code}: column {slot!r} is not an empty {RESIDUAL_COLUMN!r}; it cannot carry the net load")
    other = "wind_forecast_mw" if features["wind_forecast_mw"].notna().any() else "generation_forecast_mw"
    return LightGBMForecaster._residual(features, ("load_forecast_mw", other))  # LightGBM's derivation, any parts


def lear_with_lagged_exogenous(**kw):
    """A measurement-only LEAR that also sees the exogenous forecasts of D-1 and D-7, as in the paper.

    Those values are not in day D's feature rows; here they come from the blocks of D-1 and D-7 of
    the same frame, so predictions need the previous week's rows too (``needs_history``). Serving
    has only day D's rows: this variant exists to measure what those inputs are worth.
    """
    from models.lear import LEAR, PRICE_LAGS

    class _LaggedExogenousLEAR(LEAR):
        needs_history = True

        def _design(self, frame, columns):
            blocks, x = super()._design(frame, columns)
            exo = [c for c in columns if c not in PRICE_LAGS]
            cube = blocks.pivot(frame[exo].to_numpy(dtype=float)).transpose(0, 2, 1).reshape(len(blocks), -1)
            index = {(m, d): i for i, (m, d) in enumerate(zip(blocks.days["market"], blocks.days["day"]))}
            extra = []
            for lag in (1, 7):
                src = [index.get((m, d - pd.Timedelta(days=lag)), -1) for m, d in
                       zip(blocks.days["market"], blocks.days["day"])]
                lagged = np.where(np.array(src)[:, None] >= 0, cube[np.maximum(src, 0)], np.nan)
                extra.append(lagged)
            return blocks, np.hstack([x[:, :-7], *extra, x[:, -7:]])

    return _LaggedExogenousLEAR(**kw)


def lgbm_with_lagged_exogenous(**kw):
    """A measurement-only LightGBM that also sees the day blocks of the exogenous forecasts of D-1 and D-7.

    Like :func:`lear_with_lagged_exogenous`: the values come from the previous days' rows of the same
    frame (``needs_history``), which a serving request does not hold.
    """
    from models.dayblock import DayBlocks
    from models.lear import PRICE_LAGS
    from models.lightgbm_forecaster import LightGBMForecaster

    class _LaggedExogenousGBM(LightGBMForecaster):
        needs_history = True

        def _design(self, frame, columns, block_columns):
            x = super()._design(frame, columns, block_columns)
            exo = [c for c in block_columns if c not in PRICE_LAGS]
            blocks = DayBlocks.of(frame)
            cube = blocks.pivot(frame[exo].to_numpy(dtype=float)).transpose(0, 2, 1).reshape(len(blocks), -1)
            index = {(m, d): i for i, (m, d) in enumerate(zip(blocks.days["market"], blocks.days["day"]))}
            extra = []
            for lag in (1, 7):
                src = np.array([index.get((m, d - pd.Timedelta(days=lag)), -1) for m, d in
                                zip(blocks.days["market"], blocks.days["day"])])
                extra.append(np.where(src[:, None] >= 0, cube[np.maximum(src, 0)], np.nan))
            return np.hstack([x, np.hstack(extra)[blocks.block]])

    return _LaggedExogenousGBM(**{**AS_MEASURED, **kw})


POOL_PARTNER = {"BE": "FR", "FR": "BE"}  # coupled markets (equal prices in 46 % of 2014's hours)
_POOL_CACHE: dict[str, tuple[pd.DataFrame, pd.Series]] = {}


def pooled_gbm(slot: str = "fuel_price_eur_mwh", **kw):
    """A measurement-only LightGBM fitted on its market's rows and the coupled partner's rows of the same days.

    BE and FR clear in one coupled auction: their prices follow one another and they share the French
    exogenous forecasts. Pooling doubles the training days of similar dynamics; the unused column ``slot``
    marks the rows' market (1 = the forecast market, 0 = the partner), so the trees may still split them.
    Only the market's own rows are forecast. The partner's rows are those of the same training days, all
    known before the forecast's issue time as the market's are.
    """
    from models.featureframe import local_day
    from models.lightgbm_forecaster import LightGBMForecaster

    class _PooledGBM(LightGBMForecaster):
        def _fit_market(self, frame, y):
            code = str(frame["market"].iloc[0])
            partner = POOL_PARTNER[code]
            if partner not in _POOL_CACHE:
                _POOL_CACHE[partner] = load_market(partner)
            other, other_y = _POOL_CACHE[partner]
            day, other_day = local_day(frame), local_day(other)
            keep = ((other_day >= day.min()) & (other_day <= day.max())).to_numpy()
            if frame[slot].notna().any():
                raise SystemExit(f"{code}: column {slot!r} holds values; it cannot mark the pooled rows")
            both = pd.concat([frame.assign(**{slot: 1.0}), other[keep].assign(**{slot: 0.0})], ignore_index=True)
            return super()._fit_market(both, np.concatenate([y, other_y[keep].to_numpy(dtype=float)]))

        def predict(self, frame, *args, **kwargs):
            return super().predict(frame.assign(**{slot: 1.0}), *args, **kwargs)

    return _PooledGBM(**{**AS_MEASURED, **kw})


SLOW_MEDIAN = {"median_n_estimators": 600, "median_learning_rate": 0.05}
# NP's recipe booster deriving its residual load (the platform's LightGBM with NP's make bench-epf settings)
NP_BOOSTER = {"target_transform": "level", "exogenous_lags": "day_stats", "params": {"feature_fraction": 0.5},
              "derive_residual_load": True, **SLOW_MEDIAN}
ANCHOR = {"target_transform": "lear", "anchor_windows": (364, 728), "recalibrate": True}


def lgbm_recent(days: int, **kw):
    """A measurement-only LightGBM fitted on the last ``days`` days of its training window only.

    Averaged with one fitted on the whole window, it is LEAR's trick of ensembling calibration windows.
    """
    from models.featureframe import local_day
    from models.lightgbm_forecaster import LightGBMForecaster

    class _RecentGBM(LightGBMForecaster):
        def fit(self, frame, target):
            day = local_day(frame)
            keep = (day >= day.max() - pd.Timedelta(days=days - 1)).to_numpy()
            return super().fit(frame[keep], target[keep])

    return _RecentGBM(**{**AS_MEASURED, **kw})


def lgbm_level_scaled(**kw):
    """A measurement-only LightGBM like ``target_transform="level"`` that also divides the target and
    the price inputs (after the shift) by ``price_rolling_std_P7D`` (at least 1); quantiles map back
    exactly (a shift and a positive scale). Measured against the shipped ``level`` (docs/models.md)."""
    from models.lightgbm_forecaster import LEVEL_COLUMN, RELATIVE_PRICES, LightGBMForecaster

    def level(frame):
        lvl = frame[LEVEL_COLUMN].to_numpy(dtype=float)
        s = np.maximum(frame["price_rolling_std_P7D"].to_numpy(dtype=float), 1.0)
        return np.nan_to_num(lvl, nan=float(np.nanmean(lvl))), np.nan_to_num(s, nan=1.0)

    class _ScaledLevelGBM(LightGBMForecaster):
        def _design(self, frame, columns, block_columns):
            lvl, s = level(frame)
            f = frame.copy()
            for c in RELATIVE_PRICES:
                if c in f.columns:
                    f[c] = (f[c].to_numpy(dtype=float) - lvl) / s
            return super()._design(f, columns, block_columns)

        def _fit_market(self, frame, y):
            lvl, s = level(frame)
            return super()._fit_market(frame, (y - lvl) / s)

        def _predict_market(self, state, frame, quantiles):
            lvl, s = level(frame)
            return super()._predict_market(state, frame, quantiles) * s[:, None] + lvl[:, None]

    return _ScaledLevelGBM(**{**AS_MEASURED, **kw})


def day_mlp(**kw):
    """A measurement-only multilayer perceptron on LEAR's day blocks, the shape of the paper's DNN.

    One scikit-learn ``MLPRegressor`` per market maps a day's inputs (LEAR's: the 24 hourly prices of D-1,
    D-2, D-3 and D-7, the exogenous forecasts of D, weekday dummies; scaled as LEAR scales them) to the
    24 prices of D at once; ``seeds`` networks differing only in their initialisation are averaged;
    ReLU, Adam, an L2 penalty, early stopping on a random tenth of the days. It reuses LEAR's inputs,
    checks and complete training days; quantiles are in-sample residual quantiles, as LEAR's. On the
    validation year it lost alone and in every ensemble (docs/models.md), so it stays here.
    """
    import warnings
    from dataclasses import dataclass

    from models.dayblock import HOURS
    from models.forecaster import ResidualQuantiles
    from models.lear import LEAR, InvariantScaler

    @dataclass
    class _MarketMLP:
        columns: list[str]
        x_scaler: InvariantScaler
        y_scaler: InvariantScaler
        networks: list  # fitted MLPRegressor objects
        residuals: ResidualQuantiles | None
        dropped_days: int

        def scaled(self, x: np.ndarray) -> np.ndarray:
            z = x.copy()
            z[:, :-7] = self.x_scaler.transform(x[:, :-7])
            return np.where(np.isnan(z), 0.0, z)  # a day-long gap takes the training median

        def point(self, x: np.ndarray) -> np.ndarray:
            z = self.scaled(x)
            return self.y_scaler.inverse(np.mean([net.predict(z) for net in self.networks], axis=0))

    class DayMLP(LEAR):
        def __init__(self, hidden=(256, 128), *, alpha=1e-3, learning_rate=1e-3, max_epochs=500, seeds=4):
            super().__init__()
            self.hidden, self.alpha, self.learning_rate = tuple(hidden), float(alpha), float(learning_rate)
            self.max_epochs, self.seeds = int(max_epochs), int(seeds)

        def fit_key(self) -> tuple:
            return (self.hidden, self.alpha, self.learning_rate, self.max_epochs, self.seeds, self.exogenous)

        def _fit_windows(self, frame, y, used, previous):
            from sklearn.exceptions import ConvergenceWarning
            from sklearn.neural_network import MLPRegressor

            x, target, dropped = self._training_days(frame, y, used, least=28)
            state = _MarketMLP(used, InvariantScaler(x[:, :-7]), InvariantScaler(target), [], None, dropped)
            z, zy = state.scaled(x), state.y_scaler.transform(target)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                for seed in range(self.seeds):
                    net = MLPRegressor(hidden_layer_sizes=self.hidden, alpha=self.alpha,
                                       learning_rate_init=self.learning_rate, max_iter=self.max_epochs,
                                       early_stopping=True, validation_fraction=0.1, n_iter_no_change=20,
                                       random_state=seed)
                    state.networks.append(net.fit(z, zy))
            resid = target - state.point(x)
            state.residuals = ResidualQuantiles(np.tile(np.arange(HOURS), len(x)), resid.ravel())
            return state

        def _predict_market(self, state, frame, quantiles):
            blocks, x = self._design(frame, state.columns)
            rows = blocks.unpivot(state.point(x))
            return rows[:, None] + state.residuals.shift(frame["hour"].to_numpy(), quantiles)

    return DayMLP(**kw)


def lear_anchored_gbm(lear_exogenous: tuple[str, ...], **kw):
    """``LightGBMForecaster(target_transform="lear")`` whose LEAR (cross-fitted and full) takes
    ``lear_exogenous`` (study only: the platform's takes the exogenous forecasts of D)."""
    from models.lear import LEAR
    from models.lightgbm_forecaster import LightGBMForecaster

    class AnchoredGBM(LightGBMForecaster):
        def _anchor_model(self, recalibrate: bool) -> LEAR:
            return LEAR(windows=self.anchor_windows, recalibrate=recalibrate, exogenous=lear_exogenous)

    return AnchoredGBM(target_transform="lear", **{**AS_MEASURED, **kw})


def model_factory(name: str, n_jobs: int):
    from models.conformal import ConformalForecaster
    from models.featureframe import EXOGENOUS_FEATURES, EXOGENOUS_LAG_FEATURES
    from models.lear import LEAR, PRICE_LAGS
    from models.lightgbm_forecaster import LightGBMForecaster
    from models.naive import WeeklyNaive

    def gbm(**kw):
        return LightGBMForecaster(n_jobs=n_jobs, **{**AS_MEASURED, **kw})

    table = {
        "naive": WeeklyNaive,
        "lear": lambda: LEAR(windows=(56, 84, 364, 728)),
        "lear_long": lambda: LEAR(windows=(56, 84, 1092, 1456)),
        "lear_recal": lambda: LEAR(windows=(56, 84, 364, 728), recalibrate=True),  # recalibrated daily
        "lear_aic": lambda: LEAR(windows=(56, 84, 364, 728), alpha_rule="aic"),
        "lear_exo_lags": lambda: lear_with_lagged_exogenous(windows=(56, 84, 364, 728)),
        "lgbm": lambda: gbm(inputs="same_hour", target_transform="asinh"),
        "lgbm_raw": lambda: gbm(inputs="same_hour", target_transform="none"),
        "lgbm_block": lambda: gbm(inputs="day_block", target_transform="asinh"),
        "lgbm_hourly": lambda: gbm(structure="per_hour", inputs="same_hour", target_transform="asinh"),
        "lgbm_block_raw": lambda: gbm(inputs="day_block", target_transform="none"),
        "lgbm_hourly_raw": lambda: gbm(structure="per_hour", inputs="same_hour", target_transform="none"),
        "lgbm_p4": lambda: gbm(block_prices=PRICE_LAGS),  # the day blocks of D-1, D-2, D-3 and D-7
        "lgbm_slow": lambda: gbm(n_estimators=600, params={"learning_rate": 0.05}),
        "lgbm_p4_slow": lambda: gbm(block_prices=PRICE_LAGS, n_estimators=600, params={"learning_rate": 0.05}),
        "lgbm_p4_hourly": lambda: gbm(block_prices=PRICE_LAGS, structure="per_hour"),
        "lgbm_p4_l2": lambda: gbm(block_prices=PRICE_LAGS, median_objective="l2"),
        "lgbm_exo_lags": lambda: lgbm_with_lagged_exogenous(n_jobs=n_jobs),
        "lgbm_med_level_exo_lags": lambda: lgbm_with_lagged_exogenous(n_jobs=n_jobs, target_transform="level",
                                                                      **SLOW_MEDIAN),
        "lear_recal_exo_lags": lambda: lear_with_lagged_exogenous(windows=(56, 84, 364, 728), recalibrate=True),
        # the same inputs from the feature service's exogenous_lag_features (what the platform ships)
        "lear_recal_xl": lambda: LEAR(windows=(56, 84, 364, 728), recalibrate=True,
                                      exogenous=EXOGENOUS_FEATURES + EXOGENOUS_LAG_FEATURES),
        # the forecasts of D-1 only (not D-7): half the added inputs, for a cheaper LARS path
        "lear_recal_xl1": lambda: LEAR(windows=(56, 84, 364, 728), recalibrate=True,
                                       exogenous=EXOGENOUS_FEATURES + tuple(c for c in EXOGENOUS_LAG_FEATURES
                                                                            if c.endswith("_lag_P1D"))),
        "lgbm_med_level_xl_block": lambda: gbm(target_transform="level", exogenous_lags="day_block", **SLOW_MEDIAN),
        "lgbm_med_level_xl_stats": lambda: gbm(target_transform="level", exogenous_lags="day_stats", **SLOW_MEDIAN),
        "lgbm_med_xl_stats": lambda: gbm(exogenous_lags="day_stats", **SLOW_MEDIAN),
        # the spec's default booster (the median 600 rounds at 0.05, the tails 200 at 0.1) and variants of it
        "lgbm_med": lambda: gbm(**SLOW_MEDIAN),
        "lgbm_med_asinh": lambda: gbm(target_transform="asinh", **SLOW_MEDIAN),
        "lgbm_med_728": lambda: lgbm_recent(728, n_jobs=n_jobs, **SLOW_MEDIAN),  # the last 728 days of the window
        "lgbm_med_364": lambda: lgbm_recent(364, n_jobs=n_jobs, **SLOW_MEDIAN),
        "lgbm_med_level": lambda: gbm(target_transform="level", **SLOW_MEDIAN),  # NP's recipe
        # the P10/P90 boosters at half the rounds and twice the learning rate (the median unchanged)
        "lgbm_med_tail100": lambda: gbm(n_estimators=100, params={"learning_rate": 0.2}, **SLOW_MEDIAN),
        "lgbm_med_level_xl_stats_tail100": lambda: gbm(target_transform="level", exogenous_lags="day_stats",
                                                       n_estimators=100, params={"learning_rate": 0.2}, **SLOW_MEDIAN),
        "lgbm_med_levelscale": lambda: lgbm_level_scaled(n_jobs=n_jobs, **SLOW_MEDIAN),
        # booster settings measured on the validation year (docs/models.md)
        "lgbm_med_bin255": lambda: gbm(params={"max_bin": 255}, **SLOW_MEDIAN),
        "lgbm_med_ff05": lambda: gbm(params={"feature_fraction": 0.5}, **SLOW_MEDIAN),
        "lgbm_med_ff05_l2": lambda: gbm(params={"feature_fraction": 0.5}, median_objective="l2", **SLOW_MEDIAN),
        # BE and FR pooled: the coupled partner's rows of the same days as well (pooled_gbm above)
        "lgbm_med_ff05_pool": lambda: pooled_gbm(n_jobs=n_jobs, params={"feature_fraction": 0.5}, **SLOW_MEDIAN),
        "lgbm_med_level_xl_stats_ff05": lambda: gbm(target_transform="level", exogenous_lags="day_stats",
                                                    params={"feature_fraction": 0.5}, **SLOW_MEDIAN),
        # NP's recipe booster deriving its residual load (load minus wind), as the platform's LightGBM does
        "lgbm_med_level_xl_stats_ff05_rl": lambda: gbm(**NP_BOOSTER),
        # the same booster with another seed (its feature sampling differs), and with the raw or asinh target
        "lgbm_med_level_xl_stats_ff05_rl_s1": lambda: gbm(**NP_BOOSTER, seed=1),
        "lgbm_med_level_xl_stats_ff05_rl_s2": lambda: gbm(**NP_BOOSTER, seed=2),
        # NP's booster with the day blocks of D-2, D-3 and D-7 prices too, or a least-squares median
        "lgbm_med_level_xl_stats_ff05_rl_p4": lambda: gbm(**NP_BOOSTER, block_prices=PRICE_LAGS),
        "lgbm_med_level_xl_stats_ff05_rl_l2": lambda: gbm(**NP_BOOSTER, median_objective="l2"),
        "lgbm_med_xl_stats_ff05_rl": lambda: gbm(exogenous_lags="day_stats", params={"feature_fraction": 0.5},
                                                 derive_residual_load=True, **SLOW_MEDIAN),
        "lgbm_med_asinh_xl_stats_ff05_rl": lambda: gbm(target_transform="asinh", exogenous_lags="day_stats",
                                                       params={"feature_fraction": 0.5}, derive_residual_load=True,
                                                       **SLOW_MEDIAN),
        # the median booster twice as long again (1200 rounds at 0.025)
        "lgbm_med2_ff05": lambda: gbm(params={"feature_fraction": 0.5}, median_n_estimators=1200,
                                      median_learning_rate=0.025),
        "lgbm_med2_level_xl_stats_ff05": lambda: gbm(target_transform="level", exogenous_lags="day_stats",
                                                     params={"feature_fraction": 0.5}, median_n_estimators=1200,
                                                     median_learning_rate=0.025),
        # LightGBM on the residuals of a cross-fitted LEAR recalibrated daily (target_transform="lear")
        "lgbm_anchor": lambda: gbm(**ANCHOR, params={"feature_fraction": 0.5}, **SLOW_MEDIAN),
        "lgbm_anchor_xl_stats": lambda: gbm(**ANCHOR, exogenous_lags="day_stats", params={"feature_fraction": 0.5},
                                            **SLOW_MEDIAN),
        "lgbm_anchor_xl_stats_lx1": lambda: lear_anchored_gbm(
            EXOGENOUS_FEATURES + tuple(c for c in EXOGENOUS_LAG_FEATURES if c.endswith("_lag_P1D")),
            n_jobs=n_jobs, anchor_windows=(364, 728), recalibrate=True, exogenous_lags="day_stats",
            params={"feature_fraction": 0.5}, **SLOW_MEDIAN),
        "lgbm_anchor_xl_stats_728": lambda: gbm(**{**ANCHOR, "anchor_windows": (728,)}, exogenous_lags="day_stats",
                                                params={"feature_fraction": 0.5}, **SLOW_MEDIAN),
        "lgbm_med_leaves15": lambda: gbm(params={"num_leaves": 15, "min_data_in_leaf": 50}, **SLOW_MEDIAN),
        "lgbm_med_leaves63": lambda: gbm(params={"num_leaves": 63}, **SLOW_MEDIAN),
        "lear_long_recal": lambda: LEAR(windows=(56, 84, 1092, 1456), recalibrate=True),
        "lear_long_recal_xl1": lambda: LEAR(windows=(56, 84, 1092, 1456), recalibrate=True,
                                            exogenous=EXOGENOUS_FEATURES + tuple(c for c in EXOGENOUS_LAG_FEATURES
                                                                                 if c.endswith("_lag_P1D"))),
        # the penalty of each hour by BIC instead of AIC on the LARS path
        "lear_recal_bic": lambda: LEAR(windows=(56, 84, 364, 728), recalibrate=True, criterion="bic"),
        "lear_recal_xl1_bic": lambda: LEAR(windows=(56, 84, 364, 728), recalibrate=True, criterion="bic",
                                           exogenous=EXOGENOUS_FEATURES + tuple(c for c in EXOGENOUS_LAG_FEATURES
                                                                                if c.endswith("_lag_P1D"))),
        # the paper's LEAR, one calibration window each (run with --refit-days 1 for its daily recalibration):
        # checks the implementation against the published forecasts of each window
        **{f"lear_paper{w}": (lambda w=w: LEAR(windows=(w,), exogenous=EXOGENOUS_FEATURES + EXOGENOUS_LAG_FEATURES))
           for w in (49, 56, 77, 84, 1092, 1456)},
        # one short window, the alpha rule and the information criterion varied (n < p: the AIC is ill-posed)
        **{f"lear{w}_{rule}_{ic}": (lambda w=w, rule=rule, ic=ic: LEAR(windows=(w,), alpha_rule=rule, criterion=ic))
           for w in (56, 84) for rule in ("epftoolbox", "aic") for ic in ("aic", "bic")},
        # the multi-output MLP on LEAR's day blocks (day_mlp above) and variants of it
        "mlp": lambda: day_mlp(),
        "mlp_128": lambda: day_mlp(hidden=(128,)),
        "mlp_64_a1e1": lambda: day_mlp(hidden=(64,), alpha=1e-1),
        "mlp_a1e2": lambda: day_mlp(alpha=1e-2),
        "mlp_a1e1": lambda: day_mlp(alpha=1e-1),
        "mlp_a1": lambda: day_mlp(alpha=1.0),
        "mlp_lr3e4": lambda: day_mlp(learning_rate=3e-4, alpha=1e-1),
    }
    if name.startswith("cqr_"):  # conformal intervals (182 calibration days) around another model
        return ConformalForecaster(model_factory(name[4:], n_jobs), calibration_days=182)
    if "+" in name:  # a quantile-averaging ensemble of the named members
        from models.ensemble import QuantileAverageEnsemble

        return QuantileAverageEnsemble([model_factory(m, n_jobs) for m in name.split("+")])
    if name not in table:
        raise SystemExit(f"unknown model {name!r}; choose from {', '.join(table)}, a+b (ensemble), cqr_<model>")
    return table[name]()


def parts(name: str, model, frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Extra forecasts a fitted composite gives for free: its members and, under conformal, the raw model.

    A conformal wrapper refitted on the whole window holds exactly the plain model's fit, so the
    plain model's forecasts (and its members') need no second fit.
    """
    from models.conformal import ConformalForecaster
    from models.ensemble import QuantileAverageEnsemble
    from models.lightgbm_forecaster import LightGBMForecaster

    out = {}
    inner, inner_name = model, name
    if isinstance(model, ConformalForecaster) and model.refit:
        inner, inner_name = model.model_, name[4:]
        out[inner_name] = inner.predict(frame)
    if isinstance(inner, LightGBMForecaster) and inner.target_transform == "lear":  # its LEAR alone
        out[f"{inner_name}_lear"] = next(iter(inner.models_.values())).anchor.predict(frame)
    if isinstance(inner, QuantileAverageEnsemble):
        for member_name, member in zip(inner_name.split("+"), inner.fitted_members_):
            out[member_name] = member.predict(frame)
    return out


def backtest(features: pd.DataFrame, target: pd.Series, days: list[pd.Timestamp], names: list[str],
             train_days: int, n_jobs: int, refit_days: int = 7) -> tuple[dict[str, pd.DataFrame], dict[str, float]]:
    """Forecast every day in ``days`` (local midnights), refitting at the start of each block of ``refit_days``
    days (a model that recalibrates is recalibrated before each later day of the block on the days before it)."""
    from models.featureframe import local_day

    day = local_day(features)
    out: dict[str, list[pd.DataFrame]] = {n: [] for n in names}
    seconds = dict.fromkeys(names, 0.0)
    weeks = sorted({d for d in days}, key=lambda d: d)
    week_starts = [d for i, d in enumerate(weeks) if i % refit_days == 0]
    for start in week_starts:
        train = ((day < start) & (day >= start - pd.Timedelta(days=train_days))).to_numpy()
        test = ((day >= start) & (day < start + pd.Timedelta(days=refit_days))).to_numpy() & day.isin(days).to_numpy()
        for n in names:
            t = time.perf_counter()
            model = model_factory(n, n_jobs).fit(features[train], target[train])
            if model.recalibrates:  # day by day, recalibrated on the days before each (the week's penalties)
                daily: dict[str, list[pd.DataFrame]] = {}
                for d in range(refit_days):
                    on = start + pd.Timedelta(days=d)
                    rows = ((day == on).to_numpy() & test)
                    if not rows.any():
                        continue
                    if d:
                        known = ((day < on) & (day >= on - pd.Timedelta(days=train_days))).to_numpy()
                        model.recalibrate(features[known], target[known])
                    if getattr(model, "needs_history", False):  # the day's rows and the week before them
                        context = ((day >= on - pd.Timedelta(days=7)) & (day <= on)).to_numpy()
                        day_preds = {n: model.predict(features[context]).loc[features.index[rows]]}
                    else:
                        day_preds = {n: model.predict(features[rows]), **parts(n, model, features[rows])}
                    for key, pred in day_preds.items():
                        daily.setdefault(key, []).append(pred)
                week = {key: pd.concat(v) for key, v in daily.items()}
                out[n].append(week.pop(n))
            elif getattr(model, "needs_history", False):
                context = ((day >= start - pd.Timedelta(days=7)) & (day < start + pd.Timedelta(days=refit_days))).to_numpy()
                out[n].append(model.predict(features[context]).loc[features.index[test]])
                week = parts(n, model, features[test])
            else:
                out[n].append(model.predict(features[test]))
                week = parts(n, model, features[test])
            for extra, pred in week.items():
                if extra not in names and len(out.setdefault(extra, [])) < len(out[n]):  # once per week
                    out[extra].append(pred)
            seconds[n] += time.perf_counter() - t
        print(f"  week from {start.date()}: {', '.join(f'{n} {seconds[n]:.0f}s' for n in names)}", flush=True)
    return {n: pd.concat(v) for n, v in out.items()}, seconds


def chosen_days(features: pd.DataFrame, phase: str, n_days: int | None, complement: bool = False
                ) -> list[pd.Timestamp]:
    from models.featureframe import local_day

    all_days = np.sort(local_day(features).unique())
    period = all_days[-TEST_DAYS:] if phase == "test" else all_days[-TEST_DAYS - VALIDATION_DAYS:-TEST_DAYS]
    weeks = [period[i:i + 7] for i in range(0, len(period), 7)]
    if n_days and n_days < len(period):
        k = max(1, round(n_days / 7))
        picks = set(np.unique(np.linspace(0, len(weeks) - 1, k).round().astype(int)).tolist())
        weeks = [w for i, w in enumerate(weeks) if (i in picks) != complement]
    return [pd.Timestamp(d) for w in weeks for d in w]


def paper_forecasts(code: str) -> pd.DataFrame | None:
    path = data_dir() / "epf" / "paper_forecasts" / f"Forecasts_{code}_DNN_LEAR_ensembles.csv"
    return pd.read_csv(path, index_col=0, parse_dates=True) if path.exists() else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--markets", default="NP,BE,FR", help="comma-separated EPF markets")
    ap.add_argument("--models", default="naive,cqr_lear+lgbm_block_raw",
                    help="comma-separated models: names of model_factory, 'a+b' for a quantile-averaging "
                         "ensemble, 'cqr_<model>' for conformal intervals (which also reports <model> and, "
                         "for an ensemble, its members, from the same fits)")
    ap.add_argument("--phase", choices=("test", "validation"), default="test", help="which period to forecast")
    ap.add_argument("--days", type=int, default=None, help="subsample this many days (whole weeks) of the period")
    ap.add_argument("--complement", action="store_true",
                    help="with --days: the whole weeks of the period that --days would not pick")
    ap.add_argument("--train-days", type=int, default=1456, help="training window before each refit (days)")
    ap.add_argument("--refit-days", type=int, default=7, help="refit every this many days (the benchmark: 7)")
    ap.add_argument("--n-jobs", type=int, default=2, help="threads for LightGBM (keep <= 2 on a shared machine)")
    ap.add_argument("--neighbour", default="",
                    help="comma-separated M:N pairs: market M also sees market N's prices of D-1 (study only)")
    ap.add_argument("--net-load", action="store_true",
                    help="fill residual_load_mw with load minus wind (NP) or minus generation (BE, FR) (study only)")
    ap.add_argument("--save", type=Path, default=None, help="folder to write per-market forecast parquet files")
    ap.add_argument("--rescore", type=Path, default=None,
                    help="no backtest: score the forecasts saved in this folder (by --save runs), plus --combine")
    ap.add_argument("--combine", default="",
                    help="with --rescore: comma-separated a+b averages of saved forecasts ('a*2+b' weights a twice)")
    args = ap.parse_args(argv)
    if args.complement and not args.days:
        ap.error("--complement needs --days N: it runs the whole weeks that --days N leaves out")
    if args.rescore:
        return rescore(args)
    from models import metrics as M
    from models.dayblock import DayBlocks

    print("\n".join(header_lines(("lightgbm", "scikit-learn", "pandas"))))
    names = args.models.split(",")
    summary = []
    for code in args.markets.split(","):
        t0 = time.perf_counter()
        features, target = load_market(code)
        neighbours = dict(pair.split(":") for pair in args.neighbour.split(",") if pair)
        if code in neighbours:
            features = with_neighbour_prices(code, features, neighbours[code])
        if args.net_load:
            features = with_net_load(code, features)
        days = chosen_days(features, args.phase, args.days, args.complement)
        print(f"\n{code}: {len(features):,} feature rows, {args.phase} {len(days)} days "
              f"({days[0].date()} .. {days[-1].date()}), built in {time.perf_counter() - t0:.1f}s", flush=True)
        preds, seconds = backtest(features, target, days, names, args.train_days, args.n_jobs, args.refit_days)
        rows = features.loc[preds[names[0]].index]
        blocks = DayBlocks.of(rows)
        actual = blocks.pivot(target.loc[rows.index].to_numpy())
        naive = blocks.pivot(rows["price_lag_P7D"].to_numpy())
        table = {}
        for n, p in preds.items():
            p = p.loc[rows.index]
            q = {c: blocks.pivot(p[c].to_numpy()) for c in ("q10", "q50", "q90")}
            table[n] = (M.mae(actual, q["q50"]), M.rmae(actual, q["q50"], naive), M.smape(actual, q["q50"]),
                        M.rmse(actual, q["q50"]), M.coverage(actual, q["q10"], q["q90"]),
                        np.mean([M.pinball(actual, q[c], lv) for c, lv in (("q10", .1), ("q50", .5), ("q90", .9))]))
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                p.assign(actual=target.loc[rows.index], market=code, delivery_start=rows["delivery_start"],
                         hour=rows["hour"]) \
                    .to_parquet(args.save / f"{code}_{args.phase}_{n}.parquet")
        paper = paper_forecasts(code) if args.phase == "test" else None
        if paper is not None:
            local = blocks.days["day"]
            sel = paper[paper.index.normalize().isin(local)]
            real = sel["Real price"].to_numpy().reshape(-1, 24)
            for k, col in (("paper DNN ens", "DNN Ensemble"), ("paper LEAR ens", "LEAR Ensemble")):
                f = sel[col].to_numpy().reshape(-1, 24)
                table[k] = (M.mae(real, f), M.rmae(real, f, naive), M.smape(real, f), M.rmse(real, f), np.nan, np.nan)
            for n in [n for n in preds if "+" in n and not n.startswith("cqr_")]:
                ens = blocks.pivot(preds[n].loc[rows.index, "q50"].to_numpy())
                print(f"  DM p-value that {n} beats the paper's DNN ensemble: "
                      f"{M.diebold_mariano(real, ens, sel['DNN Ensemble'].to_numpy()):.3g}; its LEAR ensemble: "
                      f"{M.diebold_mariano(real, ens, sel['LEAR Ensemble'].to_numpy()):.3g}")
        period = TEST_DAYS if args.phase == "test" else VALIDATION_DAYS
        print(f"\n{code} {args.phase}, {len(days)} days ({'all' if len(days) >= period else 'subsampled'}), "
              f"refit every {args.refit_days} days on {args.train_days} days")
        print(f"  {'model':<16} {'MAE':>7} {'rMAE':>6} {'sMAPE%':>7} {'RMSE':>7} {'cov80':>6} {'pinball':>8} {'fit+pred s':>10}")
        for n, v in table.items():
            print(f"  {n:<16} {v[0]:7.3f} {v[1]:6.3f} {v[2]:7.3f} {v[3]:7.3f} {v[4]:6.3f} {v[5]:8.3f} "
                  f"{seconds.get(n, float('nan')):10.0f}")
            summary.append({"market": code, "model": n, "mae": v[0], "rmae": v[1], "smape": v[2], "rmse": v[3],
                            "cov80": v[4], "pinball": v[5], "days": len(days)})
        if args.phase == "test":
            d, l_ = PAPER[code]["DNN"], PAPER[code]["LEAR"]
            print(f"  paper Table 3 (all 728 days): DNN ens MAE {d[0]:.3f} rMAE {d[1]:.3f}; LEAR ens MAE {l_[0]:.3f} "
                  f"rMAE {l_[1]:.3f}")
    if args.save:
        pd.DataFrame(summary).to_csv(args.save / f"summary_{args.phase}.csv", index=False)


def rescore(args) -> None:
    """Score saved forecasts on day blocks next to the paper's forecasts of the same days; average combinations.

    An average of saved member forecasts equals ``QuantileAverageEnsemble`` of those members (equal
    weights), since every member was fitted on the same weekly windows.
    """
    from models import metrics as M
    from models.dayblock import DayBlocks

    for code in args.markets.split(","):
        files = sorted(args.rescore.glob(f"{code}_{args.phase}_*.parquet"))
        preds = {f.stem[len(f"{code}_{args.phase}_"):]: pd.read_parquet(f) for f in files}
        if not preds:
            continue
        common = sorted(set.intersection(*(set(p["delivery_start"]) for p in preds.values())))
        preds = {k: p.set_index("delivery_start").loc[common] for k, p in preds.items()}
        for combo in filter(None, args.combine.split(",")):
            # "a*2+b": a weighted average (weight 1 unless given)
            members = [(m.split("*")[0], float(m.split("*")[1]) if "*" in m else 1.0) for m in combo.split("+")]
            if all(m in preds for m, _ in members):
                first = preds[members[0][0]]
                avg = sum(w * preds[m][["q10", "q50", "q90"]] for m, w in members) / sum(w for _, w in members)
                preds[combo] = avg.assign(actual=first["actual"], market=first["market"], hour=first["hour"])
        base = next(iter(preds.values())).reset_index()
        blocks = DayBlocks.of(base)
        actual = blocks.pivot(base["actual"].to_numpy())
        naive = blocks.pivot(preds["naive"]["q50"].to_numpy()) if "naive" in preds else None
        print(f"\n{code} {args.phase}: {len(blocks)} days from saved forecasts (MAE, rMAE, sMAPE %, RMSE, cov80, pinball)")
        rows = {}
        for k, p in preds.items():
            q = {c: blocks.pivot(p[c].to_numpy()) for c in ("q10", "q50", "q90")}
            rows[k] = (M.mae(actual, q["q50"]), M.rmae(actual, q["q50"], naive) if naive is not None else np.nan,
                       M.smape(actual, q["q50"]), M.rmse(actual, q["q50"]), M.coverage(actual, q["q10"], q["q90"]),
                       np.mean([M.pinball(actual, q[c], lv) for c, lv in (("q10", .1), ("q50", .5), ("q90", .9))]))
        paper = paper_forecasts(code) if args.phase == "test" else None
        if paper is not None:
            sel = paper[paper.index.normalize().isin(blocks.days["day"])]
            real = sel["Real price"].to_numpy().reshape(-1, 24)
            for k, col in (("paper DNN ens", "DNN Ensemble"), ("paper LEAR ens", "LEAR Ensemble")):
                f = sel[col].to_numpy().reshape(-1, 24)
                rows[k] = (M.mae(real, f), M.rmae(real, f, naive) if naive is not None else np.nan, M.smape(real, f),
                           M.rmse(real, f), np.nan, np.nan)
            for k in [k for k in preds if "+" in k and not k.startswith("cqr_")]:
                ours = blocks.pivot(preds[k]["q50"].to_numpy())
                print(f"  DM p-value that {k} beats the paper's DNN ens {M.diebold_mariano(real, ours, sel['DNN Ensemble']):.3g}, "
                      f"its LEAR ens {M.diebold_mariano(real, ours, sel['LEAR Ensemble']):.3g}")
        for k, v in sorted(rows.items(), key=lambda kv: kv[1][0]):
            print(f"  {k:<28} {v[0]:7.3f} {v[1]:6.3f} {v[2]:7.3f} {v[3]:7.3f} {v[4]:6.3f} {v[5]:8.3f}")


if __name__ == "__main__":
    main()
