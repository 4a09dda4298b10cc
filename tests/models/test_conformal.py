"""Conformal intervals: calibrated coverage on synthetic data, and what can be predicted."""

import numpy as np
import pandas as pd
import pytest
from modelframes import days_between

from features.errors import QuantileError
from models import metrics as M
from models.conformal import ConformalForecaster, _conformal_quantile
from models.forecaster import Forecaster


class _Overconfident(Forecaster):
    """A median of lag 1 with an interval of +-0.1: far too narrow, so conformal must widen it a lot."""

    def _fit(self, frame, y):
        self._inputs = ("price_lag_P1D",)
        self.unused_columns_ = ()

    def _predict(self, frame, quantiles):
        p = frame["price_lag_P1D"].to_numpy()
        return np.stack([p + (q - 0.5) * 0.25 for q in quantiles], axis=1)


def test_conformal_quantile_is_the_finite_sample_rank():
    scores = np.arange(1, 20, dtype=float)  # n = 19
    assert _conformal_quantile(scores, 0.9) == 18.0  # ceil(20 * 0.9) = 18th smallest


def _iid_days(n_days: int, seed: int):
    """Exchangeable hand-built days (UTC, no DST): price = lag 1 + noise whose scale depends on the hour."""
    rng = np.random.default_rng(seed)
    ds = pd.date_range("2022-01-01", periods=n_days * 24, freq="h", tz="UTC")
    lag1 = rng.normal(50, 10, len(ds))
    y = lag1 + rng.normal(0, 1 + ds.hour.to_numpy() / 6, len(ds))
    return pd.DataFrame({"market": "IID", "delivery_start": ds, "price_lag_P1D": lag1, "hour": ds.hour}), pd.Series(y)


def test_conformal_widens_a_too_narrow_interval_to_the_nominal_coverage():
    features, target = _iid_days(200, seed=11)
    train = np.arange(len(features)) < 100 * 24
    base = _Overconfident().fit(features[train], target[train]).predict(features[~train])
    raw = M.coverage(target[~train], base["q10"], base["q90"])
    model = ConformalForecaster(_Overconfident(), calibration_days=60).fit(features[train], target[train])
    out = model.predict(features[~train])
    cov = M.coverage(target[~train], out["q10"], out["q90"])
    assert raw < 0.1
    assert 0.77 <= cov <= 0.83, cov  # 80 % nominal on 2,400 exchangeable test hours
    np.testing.assert_allclose(out["q50"], base["q50"])
    assert model.calibration_hours_ == 60 * 24
    # each side misses about 10 %
    assert 0.07 <= np.mean(target[~train].to_numpy() < out["q10"].to_numpy()) <= 0.13


def test_conformal_on_a_drifting_synthetic_market_stays_near_nominal(syn):
    features, target = syn
    train = days_between(features, "2023-01-08", "2023-07-01")
    test = days_between(features, "2023-07-01", "2023-08-01")
    out = ConformalForecaster(_Overconfident(), calibration_days=60).fit(features[train], target[train]).predict(
        features[test])
    assert 0.65 <= M.coverage(target[test], out["q10"], out["q90"]) <= 0.95


def test_conformal_predicts_only_the_calibrated_levels(syn):
    features, target = syn
    train = days_between(features, "2023-01-08", "2023-04-01")
    model = ConformalForecaster(_Overconfident(), calibration_days=30, coverages=(0.5, 0.8)).fit(
        features[train], target[train])
    assert model.levels() == (0.1, 0.25, 0.5, 0.75, 0.9)
    out = model.predict(features[train].tail(48), quantiles=(0.1, 0.25, 0.5, 0.75, 0.9))
    values = out.drop(columns="missing_inputs").to_numpy()
    assert (np.diff(values, axis=1) >= 0).all()
    with pytest.raises(QuantileError, match="0.3"):
        model.predict(features[train].tail(24), quantiles=(0.3, 0.5))


def test_conformal_needs_enough_days(syn):
    features, target = syn
    train = days_between(features, "2023-01-08", "2023-02-01")
    with pytest.raises(ValueError, match="too few"):
        ConformalForecaster(_Overconfident(), calibration_days=30).fit(features[train], target[train])
