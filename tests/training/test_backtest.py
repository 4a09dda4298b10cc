"""Training data through the feature service, and rolling-origin backtests without leakage."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from features.errors import TrainingDataError, UnknownMarketError
from models.naive import WeeklyNaive
from training import backtest, dataset
from training.dataset import ISSUED_AT, TARGET, TARGET_KNOWN_AT

MARKET = "SYN_NORTH"

SERVICE = "day_ahead_v1"


@pytest.fixture(scope="module")
def data(market_env):
    return dataset.load(market_env.store, market_env.lake, MARKET, dt.date(2023, 11, 10), dt.date(2024, 4, 14),
                        service=SERVICE)


def test_training_data_has_every_delivery_hour_with_features_as_of_its_issue_time(data):
    f = data.frame
    days = data.days
    assert days.nunique() == (dt.date(2024, 4, 14) - dt.date(2023, 11, 10)).days
    per_day = f.groupby(days).size()
    assert per_day[pd.Timestamp("2024-03-31")] == 23 and (per_day.drop(pd.Timestamp("2024-03-31")) == 24).all()
    # issue time: gate closure 12:00 local on D-1
    local_issue = pd.to_datetime(f[ISSUED_AT], utc=True).dt.tz_convert("Europe/Berlin")
    assert (local_issue.dt.hour == 12).all() and ((days - local_issue.dt.tz_localize(None).dt.normalize()) == pd.Timedelta(days=1)).all()
    # a row's own target (the price of D) is public one hour after its issue time, at 13:00 on D-1
    assert ((pd.to_datetime(f[TARGET_KNOWN_AT], utc=True) - pd.to_datetime(f[ISSUED_AT], utc=True))
            == pd.Timedelta(hours=1)).all()
    assert f[TARGET].notna().all() and data.lineage["feature_service"] == SERVICE
    assert all(v is not None for k, v in data.lineage.items() if k.startswith("snapshot:"))


def test_bad_requests_are_clear_errors(market_env):
    with pytest.raises(UnknownMarketError):
        dataset.load(market_env.store, market_env.lake, "NOWHERE", dt.date(2024, 1, 1), dt.date(2024, 2, 1), service=SERVICE)
    with pytest.raises(TrainingDataError, match="empty"):
        dataset.load(market_env.store, market_env.lake, MARKET, dt.date(2024, 2, 1), dt.date(2024, 2, 1), service=SERVICE)
    with pytest.raises(TrainingDataError, match="at least 400 are needed"):
        dataset.load(market_env.store, market_env.lake, MARKET, dt.date(2023, 11, 10), dt.date(2024, 4, 14),
                     service=SERVICE, min_days=400)
    with pytest.raises(TrainingDataError, match="empty"):
        backtest.BacktestWindow(dt.date(2024, 3, 1), dt.date(2024, 3, 1))


def test_backtest_forecasts_each_day_with_only_what_was_known_at_its_issue_time(data):
    window = backtest.BacktestWindow(dt.date(2024, 3, 20), dt.date(2024, 4, 10), refit_days=7)
    bt = backtest.run(data, WeeklyNaive, window, name="naive")
    f = bt.forecasts
    assert bt.fits == 3 and f["day"].nunique() == 21
    assert len(f) == 21 * 24 - 1  # the spring DST day has 23 hours
    fitted, issued = pd.to_datetime(f["fitted_at"], utc=True), pd.to_datetime(f["issued_at"], utc=True)
    assert (fitted <= issued).all()
    assert (pd.to_datetime(f["train_last_target_known_at"], utc=True) <= fitted).all()
    # the weekly naive median is the price one week earlier, exactly (interpolated where that hour did not exist)
    np.testing.assert_array_equal(f["q50"].to_numpy(), f["naive"].to_numpy())
    gap = f["missing_inputs"] > 0
    assert gap.sum() == 1 and f.loc[gap, "day"].item() == dt.date(2024, 4, 7)  # a week after the spring DST day
    assert (f["q10"] <= f["q50"]).all() and (f["q50"] <= f["q90"]).all()
    overall = bt.overall()
    assert overall["rmae"] == pytest.approx(1.0) and overall["mae"] > 0


def _scrambled_after(data: dataset.TrainingData, cut: pd.Timestamp, seed: int) -> dataset.TrainingData:
    """``data`` with everything stamped after ``cut`` replaced by noise: every target known later and the price
    and load features issued later. A forecast issued at ``cut`` or before must not change."""
    f = data.frame.copy()
    late_target = pd.to_datetime(f[TARGET_KNOWN_AT], utc=True) > cut
    late_features = pd.to_datetime(f[ISSUED_AT], utc=True) > cut
    assert late_target.any() and late_features.any()  # there is something to scramble
    rng = np.random.default_rng(seed)
    f.loc[late_target, TARGET] = rng.normal(500, 200, late_target.sum())
    for c in data.features:
        if f[c].dtype.kind == "f" and c.startswith(("price", "load")):
            f.loc[late_features, c] = rng.normal(300, 100, late_features.sum())
    return dataset.TrainingData(data.market, data.service, f, data.features, data.lineage)


def test_changing_anything_known_after_the_issue_time_leaves_the_forecast_unchanged(data):
    from models.lear import LEAR

    window = backtest.BacktestWindow(dt.date(2024, 3, 20), dt.date(2024, 3, 27), refit_days=7)
    make = lambda: LEAR(windows=(56,))  # noqa: E731
    before = backtest.run(data, make, window).forecasts
    first_day = before[before["day"] == dt.date(2024, 3, 20)]
    issued = pd.to_datetime(first_day["issued_at"], utc=True).min()
    # Everything stamped after the issue time of 20 March is scrambled: targets and features.
    after = backtest.run(_scrambled_after(data, issued, seed=0), make, window).forecasts
    cols = ["q10", "q50", "q90"]
    pd.testing.assert_frame_equal(after.loc[first_day.index, cols], first_day[cols])
    # ... while the later days of the block, whose own inputs were scrambled, did change
    assert not np.allclose(after.loc[~after.index.isin(first_day.index), "q50"],
                           before.loc[~before.index.isin(first_day.index), "q50"])


def test_compare_gives_diebold_mariano_against_each_other_model(data):
    from models.lear import LEAR

    window = backtest.BacktestWindow(dt.date(2024, 3, 1), dt.date(2024, 4, 10), refit_days=14)
    results = {"lear": backtest.run(data, lambda: LEAR(windows=(56,)), window, name="lear"),
               "naive": backtest.run(data, WeeklyNaive, window, name="naive")}
    table = backtest.compare(results)
    assert list(table.index) == ["lear", "naive"]
    assert 0 <= table.loc["lear", "dm_vs_naive"] <= 1
    assert table.loc["lear", "dm_vs_naive"] == pytest.approx(1 - table.loc["naive", "dm_vs_lear"])
    assert table.loc["lear", "mae"] < table.loc["naive", "mae"]  # the synthetic market is learnable


def _conformal_lear_maker(models: list):
    """A maker of conformal LEARs (14 calibration days) that keeps every model it builds, in order."""
    from models.conformal import ConformalForecaster
    from models.lear import LEAR

    def make():
        models.append(ConformalForecaster(LEAR(windows=(28,)), calibration_days=14))
        return models[-1]
    return make


def test_conformal_backtests_calibrate_on_their_own_earlier_forecasts_known_at_the_issue_time(data):
    from models.conformal import _conformal_quantile

    window = backtest.BacktestWindow(dt.date(2024, 3, 6), dt.date(2024, 3, 27), refit_days=7)
    models: list = []
    bt = backtest.run(data, _conformal_lear_maker(models), window)
    assert bt.fits == 3
    # the first refit had no forecasts of its own yet: held-out days; the later ones calibrate on the past
    assert models[0].held_out_ is not None and models[1].held_out_ is None and models[2].held_out_ is None
    # the third refit (issued for 20 March) scores the base forecasts the first two refits issued for
    # 6-19 March, the last 14 days whose actual prices were public at its issue time
    f = data.frame
    rows = f[data.days.between(pd.Timestamp("2024-03-06"), pd.Timestamp("2024-03-19")).to_numpy()]
    issued = pd.to_datetime(bt.forecasts.loc[bt.forecasts["day"] == dt.date(2024, 3, 20), "issued_at"], utc=True).min()
    assert (pd.to_datetime(rows[TARGET_KNOWN_AT], utc=True) <= issued).all()
    first_block = data.days[rows.index] < pd.Timestamp("2024-03-13")
    base = pd.concat([models[0].base_forecast(backtest.model_inputs(rows[first_block.to_numpy()], data.features)),
                      models[1].base_forecast(backtest.model_inputs(rows[~first_block.to_numpy()], data.features))])
    actual = rows[TARGET].to_numpy()
    assert models[2].corrections_[0.1] == pytest.approx(_conformal_quantile(base["q10"].to_numpy() - actual, 0.9))
    assert models[2].corrections_[0.9] == pytest.approx(_conformal_quantile(actual - base["q90"].to_numpy(), 0.9))
    assert models[2].calibration_hours_ == len(rows)


def test_a_rolling_calibration_uses_nothing_known_after_the_issue_time(data):
    window = backtest.BacktestWindow(dt.date(2024, 3, 6), dt.date(2024, 3, 27), refit_days=7)
    before = backtest.run(data, _conformal_lear_maker([]), window).forecasts
    day = before[before["day"] == dt.date(2024, 3, 20)]  # the first day of the third refit block
    issued = pd.to_datetime(day["issued_at"], utc=True).min()
    after = backtest.run(_scrambled_after(data, issued, seed=1), _conformal_lear_maker([]), window).forecasts
    cols = ["q10", "q50", "q90"]
    pd.testing.assert_frame_equal(after.loc[day.index, cols], day[cols])
    later = after["day"] > dt.date(2024, 3, 20)
    assert not np.allclose(after.loc[later, "q90"], before.loc[later, "q90"])


def test_the_candidates_lear_member_and_the_lear_baseline_are_fitted_once_per_refit(data, monkeypatch):
    import functools

    from models.lear import LEAR
    from training import pipeline
    from training.specs import ModelSpec

    window = backtest.BacktestWindow(dt.date(2024, 3, 20), dt.date(2024, 4, 3), refit_days=7)
    lear = ModelSpec.of("lear")
    alone = backtest.run(data, functools.partial(lear.build, calibrated=False), window, name="lear")
    calls = []
    original = LEAR._fit_market
    monkeypatch.setattr(LEAR, "_fit_market", lambda self, *a: calls.append(1) or original(self, *a))
    spec = ModelSpec.of("ensemble", n_estimators=20, calibration_days=28)
    results, _ = pipeline.run_backtests(data, spec, window, baselines=("naive", "lear"))
    # candidate: held-out (early + full fit) at the first refit, one fit at the second; the baseline: none
    assert len(calls) == 3
    pd.testing.assert_frame_equal(results["lear"].forecasts, alone.forecasts)


def test_a_recalibrating_model_forecasts_day_by_day_with_what_each_issue_time_knew(data):
    from models.lear import LEAR

    window = backtest.BacktestWindow(dt.date(2024, 3, 13), dt.date(2024, 3, 20), refit_days=7)
    make = lambda: LEAR(windows=(28,), recalibrate=True)  # noqa: E731
    before = backtest.run(data, make, window).forecasts
    weekly = backtest.run(data, lambda: LEAR(windows=(28,)), window).forecasts
    issued = pd.to_datetime(before["issued_at"], utc=True)
    recalibrated = pd.to_datetime(before["recalibrated_at"], utc=True)
    first = before["day"] == dt.date(2024, 3, 13)
    assert recalibrated[first].isna().all() and (recalibrated[~first] == issued[~first]).all()
    assert (pd.to_datetime(before["train_last_target_known_at"], utc=True) <= issued).all()
    assert before.groupby("day")["train_rows"].first().is_monotonic_increasing  # one more day known each day
    pd.testing.assert_frame_equal(before.loc[first, ["q10", "q50", "q90"]], weekly.loc[first, ["q10", "q50", "q90"]])
    assert not np.allclose(before.loc[~first, "q50"], weekly.loc[~first, "q50"])
    # scramble everything stamped after the issue time of 16 March (the fourth day of the block)
    day = before[before["day"] == dt.date(2024, 3, 16)]
    after = backtest.run(_scrambled_after(data, issued[day.index].min(), seed=2), make, window).forecasts
    upto = before["day"] <= dt.date(2024, 3, 16)
    pd.testing.assert_frame_equal(after.loc[upto, ["q10", "q50", "q90"]], before.loc[upto, ["q10", "q50", "q90"]])
    assert not np.allclose(after.loc[~upto, "q50"], before.loc[~upto, "q50"])


def test_a_recalibrating_member_shares_its_weekly_fit_with_the_weekly_lear_baseline(data, monkeypatch):
    import functools

    from models.lear import LEAR
    from training import pipeline
    from training.specs import ModelSpec

    window = backtest.BacktestWindow(dt.date(2024, 3, 20), dt.date(2024, 3, 27), refit_days=7)
    alone = backtest.run(data, functools.partial(ModelSpec.of("lear").build, calibrated=False), window, name="lear")
    fits, recalibrations = [], []
    fit, recalibrate = LEAR._fit_market, LEAR._recalibrate_market
    monkeypatch.setattr(LEAR, "_fit_market", lambda self, *a: fits.append(1) or fit(self, *a))
    monkeypatch.setattr(LEAR, "_recalibrate_market", lambda self, *a: recalibrations.append(1) or recalibrate(self, *a))
    spec = ModelSpec.of("ensemble", n_estimators=20, calibration_days=28, lear_recalibrate=True)
    results, _ = pipeline.run_backtests(data, spec, window, baselines=("lear",))
    # held-out calibration (early + full fit) for the member, none for the baseline; the member
    # recalibrates on the six days after the first, the weekly baseline does not
    assert (len(fits), len(recalibrations)) == (2, 6)
    assert results["lear"].forecasts["recalibrated_at"].isna().all()
    assert results["candidate"].forecasts["recalibrated_at"].notna().sum() == 6 * 24
    pd.testing.assert_frame_equal(results["lear"].forecasts, alone.forecasts)
