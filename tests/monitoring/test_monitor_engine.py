"""The drift engine on small frames: distances, seasonal matching, sampling, calibration, assessment."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from features.errors import MonitoringDataError
from features.settings import MonitoringSettings
from monitoring import drift


def hourly(start: str, days: int, seed: int = 0, level: float = 0.0) -> pd.DataFrame:
    """Hours of ``days`` local days: a seasonal column, an hourly one, a persistent one, a category."""
    rng = np.random.default_rng(seed)
    ds = pd.date_range(start, periods=24 * days, freq="h", tz="UTC")
    doy = ds.dayofyear.to_numpy()
    return pd.DataFrame({
        "delivery_start": ds, "day": ds.tz_localize(None).normalize(),
        "seasonal": 10 * np.cos(2 * np.pi * doy / 365.25) + rng.normal(0, 1, len(ds)) + level,
        "hourly": np.sin(2 * np.pi * ds.hour.to_numpy() / 24) + rng.normal(0, 0.3, len(ds)),
        "kind": rng.integers(0, 3, len(ds)),
    })


ROLES = {"seasonal": drift.NUMERICAL, "hourly": drift.NUMERICAL, "kind": drift.CATEGORICAL}


def test_wasserstein_is_scipys_distance_and_ignores_missing_values():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 500), rng.normal(0.5, 2, 300)
    assert drift.wasserstein(a, b) == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-12)
    with_gaps = np.concatenate([a, [np.nan] * 7])
    assert drift.wasserstein(with_gaps, b) == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-12)
    assert drift.wasserstein(a, a) == 0.0
    assert math.isnan(drift.wasserstein(a, np.array([np.nan])))
    # a scaled score is in reference units: shifting every value by 2 reference sds scores 2
    assert drift.score(drift.NUMERICAL, a, a + 2 * np.std(a), np.std(a)) == pytest.approx(2.0)


def test_total_variation_of_category_shares():
    assert drift.total_variation(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])) == pytest.approx(0.25)
    assert drift.total_variation(np.array([0, 0]), np.array([2, 2])) == pytest.approx(1.0)
    assert drift.total_variation(np.array([True, False]), np.array([False, True])) == 0.0


def test_season_match_takes_like_calendar_days_of_every_year_and_reports_gaps():
    two_years = drift.day_numbers(pd.date_range("2021-01-01", "2022-12-31", freq="D"))
    june = drift.day_numbers(pd.date_range("2023-06-10", periods=7, freq="D"))
    mask, gap = drift.season_match(two_years, june, 14, 35)
    matched = pd.to_datetime(two_years[mask], unit="D")
    assert gap == 0 and set(matched.year) == {2021, 2022}
    assert matched.min() == pd.Timestamp("2021-05-27") and matched.max() == pd.Timestamp("2022-06-30")
    assert len(matched) == 2 * (7 + 2 * 14)
    # a winter-only reference does not cover July: its nearest days are taken, and the gap is reported
    winter = drift.day_numbers(pd.date_range("2022-11-01", "2023-04-15", freq="D"))
    july = drift.day_numbers(pd.date_range("2023-07-10", periods=7, freq="D"))
    mask, gap = drift.season_match(winter, july, 14, 35)
    assert mask.sum() == 35
    assert gap == (pd.Timestamp("2023-07-16") - pd.Timestamp("2023-04-15")).days  # the farthest window day
    distance = drift.calendar_distance(winter, july)
    assert distance[mask].max() <= distance[~mask].min()  # the nearest days of the year: late spring, early November
    assert set(pd.to_datetime(winter[mask], unit="D").month) == {3, 4, 11}


def test_stratified_sample_keeps_each_hour_share_and_is_deterministic():
    frame = hourly("2022-01-01", 60)
    sample = drift.stratified_sample(frame, 720, seed=3)
    assert len(sample) == 720
    assert sample.equals(drift.stratified_sample(frame, 720, seed=3))
    per_day = sample.groupby("day").size()
    assert per_day.min() >= 11 and per_day.max() <= 13  # 720 / 60 days = 12 a day
    assert drift.stratified_sample(frame, 10_000) is frame


def test_thresholds_are_the_margin_times_the_largest_week_to_season_score():
    settings = MonitoringSettings()
    reference = hourly("2021-01-01", 730)
    ref = drift.ReferenceStatistics.build(reference, ROLES, settings)
    cal = ref.calibration
    assert cal["weeks"] >= 100
    for column, threshold in ref.thresholds.items():
        assert threshold == pytest.approx(max(settings.min_threshold,
                                              settings.threshold_margin * cal["week_score_max"][column]))
    assert ref.scales["seasonal"] == pytest.approx(reference["seasonal"].std(ddof=0))
    assert ref.scales["kind"] == 1.0
    # the next year, drawn the same way, stays below every threshold; the same year 5 sds higher does not
    later = drift.assess(ref, hourly("2023-01-01", 364, seed=9)[lambda f: f["day"] < "2023-01-08"], settings)
    assert later.drift_share == 0 and later.window_days == 7 and later.reference_days == 2 * 35
    shifted = hourly("2023-01-01", 7, seed=9, level=5 * ref.scales["seasonal"])
    moved = drift.assess(ref, shifted, settings)
    assert [c.column for c in moved.drifted] == ["seasonal"]
    assert moved.metrics()["max_drift_ratio"] == pytest.approx(moved.columns[0].ratio)


def test_a_reference_too_short_to_calibrate_is_a_clear_error():
    with pytest.raises(MonitoringDataError, match=r"has \d+ weeks that can be scored .* at least 4 are needed"):
        drift.ReferenceStatistics.build(hourly("2022-01-01", 20), ROLES, MonitoringSettings())


def test_assess_reports_missing_values_stale_data_and_refuses_an_empty_window():
    settings = MonitoringSettings()
    ref = drift.ReferenceStatistics.build(hourly("2021-01-01", 365), ROLES, settings)
    window = hourly("2022-01-01", 7, seed=5)
    window.loc[window["day"] == window["day"].max(), list(ROLES)] = np.nan  # the last day has not arrived
    end = window["delivery_start"].max() + pd.Timedelta(hours=1)
    a = drift.assess(ref, window, settings, window_end=end)
    assert a.missing_share == pytest.approx(1 / 7)
    assert a.data_lag_hours == pytest.approx(24.0)
    assert a.window_days == 6 and a.window_rows == 144
    window[list(ROLES)] = np.nan
    with pytest.raises(MonitoringDataError, match="no monitored feature is known"):
        drift.assess(ref, window, settings)
