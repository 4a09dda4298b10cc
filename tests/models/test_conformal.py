"""Conformal intervals: calibrated coverage on synthetic data, and what can be predicted."""

import numpy as np
import pandas as pd
import pytest
from modelframes import days_between

from features.errors import FeatureFrameError, QuantileError
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


class _Tally(list):
    """A list that copies of a model share (deepcopy returns it), to count their fits."""

    def __deepcopy__(self, memo):
        return self


class _CountingBase(_Overconfident):
    """``_Overconfident`` that records the rows of each fit of itself and its copies."""

    def __init__(self, fits: _Tally):
        self.fits = fits

    def _fit(self, frame, y):
        self.fits.append(len(frame))
        super()._fit(frame, y)


def _past(features, days: list[str], lower_miss: float, upper_miss: float) -> pd.DataFrame:
    """Past forecasts of the hand-built days: each interval end misses the actual by a fixed amount."""
    from models.featureframe import local_day

    day = local_day(features)
    rows = day.isin(pd.to_datetime(days)).to_numpy()
    actual = np.full(rows.sum(), 50.0)
    return pd.DataFrame({"day": day[rows].to_numpy(), "actual": actual, "q10": actual + lower_miss,
                         "q90": actual - upper_miss}, index=features.index[rows])


def test_rolling_calibration_fits_the_base_once_and_uses_only_the_last_calibration_days():
    features, target = _iid_days(60, seed=2)
    all_days = pd.date_range("2022-01-01", periods=40).strftime("%Y-%m-%d").tolist()
    # 30 old days whose ends missed by 100, then the 10 most recent whose ends missed by 3 (low) and 5 (high)
    past = pd.concat([_past(features, all_days[:30], 100.0, 100.0), _past(features, all_days[30:], 3.0, 5.0)])
    fits = _Tally()
    model = ConformalForecaster(_CountingBase(fits), calibration_days=10).fit_on_past(features, target, past)
    assert fits == [len(features)]  # one fit, on every row; no held-out refit
    assert model.corrections_ == {0.1: 3.0, 0.9: 5.0} and model.calibration_hours_ == 10 * 24
    assert model.held_out_ is None
    out = model.predict(features.tail(24))
    base = _Overconfident().fit(features, target).predict(features.tail(24))
    np.testing.assert_allclose(out["q10"], base["q10"] - 3.0)
    np.testing.assert_allclose(out["q90"], base["q90"] + 5.0)
    np.testing.assert_allclose(model.base_forecast(features.tail(24))[["q10", "q90"]], base[["q10", "q90"]])


def test_rolling_calibration_refuses_too_short_or_malformed_past():
    features, target = _iid_days(40, seed=3)
    days = pd.date_range("2022-01-01", periods=9).strftime("%Y-%m-%d").tolist()
    with pytest.raises(FeatureFrameError, match="cover 9 days.*calibration_days=10"):
        ConformalForecaster(_Overconfident(), calibration_days=10).fit_on_past(features, target, _past(features, days, 1, 1))
    with pytest.raises(FeatureFrameError, match="lack column 'q90'"):
        ConformalForecaster(_Overconfident(), calibration_days=7).fit_on_past(
            features, target, _past(features, days, 1, 1).drop(columns="q90"))


def test_a_narrowing_correction_stops_at_the_median_which_stays_the_bases():
    features, target = _iid_days(40, seed=4)
    days = pd.date_range("2022-01-01", periods=10).strftime("%Y-%m-%d").tolist()
    # the ends were far too wide: they move inwards by 0.5, past the base's median (only 0.1 away)
    model = ConformalForecaster(_Overconfident(), calibration_days=10).fit_on_past(
        features, target, _past(features, days, -0.5, -0.5))
    assert model.corrections_ == {0.1: -0.5, 0.9: -0.5}
    out = model.predict(features.tail(48))
    base = _Overconfident().fit(features, target).predict(features.tail(48))
    np.testing.assert_array_equal(out["q50"], base["q50"])
    np.testing.assert_array_equal(out["q10"], base["q50"])
    np.testing.assert_array_equal(out["q90"], base["q50"])


def test_held_out_calibration_keeps_its_forecasts_in_the_rolling_format():
    features, target = _iid_days(60, seed=5)
    fits = _Tally()
    model = ConformalForecaster(_CountingBase(fits), calibration_days=20).fit(features, target)
    assert fits == [40 * 24, 60 * 24]  # the early fit before the held-out days, then the refit on all
    held = model.held_out_
    assert list(held.columns) == ["day", "actual", "q10", "q90"] and held["day"].nunique() == 20
    assert held.index.equals(features.index[-20 * 24:])
    again = ConformalForecaster(_Overconfident(), calibration_days=20).fit_on_past(features, target, held)
    assert again.corrections_ == pytest.approx(model.corrections_)  # the same scores give the same corrections
