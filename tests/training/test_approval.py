"""The approval gate's rules on hand-made backtests (the pipeline test runs it against MLflow)."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from features.errors import ConfigurationError, RegistryError
from features.settings import ApprovalSettings
from training import approval, backtest

RULES = ApprovalSettings()


def make(errors: np.ndarray, *, days: int = 60, half_width: float = 12.8, seed: int = 0) -> backtest.Backtest:
    """A backtest of ``days`` x 24 hours: actual ~ N(50, 10), forecast = actual - error, a symmetric interval."""
    rng = np.random.default_rng(seed)
    n = days * 24
    start = pd.Timestamp("2024-01-01", tz="UTC")
    ds = pd.date_range(start, periods=n, freq="h")
    actual = 50 + rng.normal(0, 10, n)
    q50 = actual - np.resize(errors, n)
    f = pd.DataFrame({"market": "SYN_NORTH", "delivery_start": ds, "day": ds.date, "hour": ds.hour, "actual": actual,
                      "naive": actual + rng.normal(0, 15, n), "q10": q50 - half_width, "q50": q50, "q90": q50 + half_width})
    window = backtest.BacktestWindow(dt.date(2024, 1, 1), dt.date(2024, 1, 1) + dt.timedelta(days=days))
    bt = backtest.Backtest("x", window, f, (0.1, 0.5, 0.9))
    bt.metrics = backtest.scores(bt)
    return bt


def normal(scale: float, n: int = 60 * 24, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, scale, n)


def test_a_first_champion_must_beat_the_weekly_naive_and_be_calibrated():
    good = approval.judge(make(normal(10)), None, RULES)  # interval +-12.8 = 80 % of N(0, 10)
    assert good.promote and good.checks == {"no_missing_forecast": True, "interval_calibrated": True,
                                            "beats_weekly_naive": True}
    narrow = approval.judge(make(normal(10), half_width=5), None, RULES)
    assert not narrow.promote and "80 % interval covers" in narrow.reason
    bad = approval.judge(make(normal(25)), None, RULES)  # worse than the naive forecast's N(0, 15)
    assert not bad.promote and "rMAE" in bad.reason


def test_a_candidate_must_beat_the_champion_by_the_margin_in_every_hour():
    champion = make(normal(10))
    better = approval.judge(make(normal(8), half_width=10.3), champion, RULES)
    assert better.promote, better.reason
    same = approval.judge(make(normal(10), seed=0), champion, RULES)
    assert not same.promote and "1.0% below the champion" in same.reason
    # better on average, but one hour much worse than the champion's
    err = normal(7).reshape(-1, 24)
    err[:, 18] *= 4
    spiky = approval.judge(make(err.ravel(), half_width=12.8), champion, RULES)
    assert not spiky.checks["no_hour_much_worse"] and "hour 18" in spiky.reason
    with pytest.raises(RegistryError, match="different hours"):
        approval.judge(make(normal(8), days=30), champion, RULES)


def test_missing_forecasts_fail_and_the_coverage_band_widens_only_on_short_backtests():
    bt = make(normal(10))
    bt.forecasts.loc[5, "q50"] = np.nan
    assert not approval.judge(bt, None, RULES).checks["no_missing_forecast"]
    assert approval.coverage_band(RULES, 14) == pytest.approx((0.8 - 0.2095, 0.8 + 0.2095), abs=1e-3)
    assert approval.coverage_band(RULES, 365) == RULES.coverage_band


def test_the_decision_records_what_the_candidate_was_compared_with_and_on_which_days():
    champion, candidate = make(normal(10)), make(normal(8), half_width=10.3)
    d = approval.judge(candidate, champion, RULES, against="served", basis="against the served champion v3")
    assert d.promote and d.against == "served" and d.judged == ("2024-01-01", "2024-02-29")
    assert d.reason.startswith("against the served champion v3: MAE ")
    assert approval.judge(candidate, champion, RULES).against == "recipe"
    with pytest.raises(ConfigurationError, match="approval mode 'frozen' is unknown; expected one of recipe, served"):
        approval.judge(candidate, champion, RULES, against="frozen")
    # judged on the days after a date only: both sides rescored on those days
    late_c, late_h = backtest.days_from(candidate, dt.date(2024, 2, 1)), backtest.days_from(champion, dt.date(2024, 2, 1))
    d = approval.judge(late_c, late_h, RULES, against="served")
    assert d.judged == ("2024-02-01", "2024-02-29") and late_c.forecasts["day"].nunique() == 29
    f = candidate.forecasts[candidate.forecasts["day"] >= dt.date(2024, 2, 1)]
    assert d.candidate["mae"] == pytest.approx(float((f["actual"] - f["q50"]).abs().mean()))
