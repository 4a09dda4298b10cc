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


def test_changing_anything_known_after_the_issue_time_leaves_the_forecast_unchanged(data):
    from models.lear import LEAR

    window = backtest.BacktestWindow(dt.date(2024, 3, 20), dt.date(2024, 3, 27), refit_days=7)
    make = lambda: LEAR(windows=(56,))  # noqa: E731
    before = backtest.run(data, make, window).forecasts
    first_day = before[before["day"] == dt.date(2024, 3, 20)]
    issued = pd.to_datetime(first_day["issued_at"], utc=True).min()
    # Everything stamped after the issue time of 20 March is scrambled: targets and features.
    f = data.frame.copy()
    late_target = pd.to_datetime(f[TARGET_KNOWN_AT], utc=True) > issued
    late_features = pd.to_datetime(f[ISSUED_AT], utc=True) > issued
    assert late_target.any() and late_features.any()
    rng = np.random.default_rng(0)
    f.loc[late_target, TARGET] = rng.normal(500, 200, late_target.sum())
    for c in data.features:
        if f[c].dtype.kind == "f" and c.startswith(("price", "load")):
            f.loc[late_features, c] = rng.normal(300, 100, late_features.sum())
    scrambled = dataset.TrainingData(data.market, data.service, f, data.features, data.lineage)
    after = backtest.run(scrambled, make, window).forecasts
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
