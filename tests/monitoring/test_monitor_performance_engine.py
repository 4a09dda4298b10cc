"""The performance engine on small hand-made archives: what counts, deduplication, actuals as published, the
weekly naive denominator across DST, and metrics equal to the backtest's (models.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.errors import MonitoringDataError
from features.markets import Market
from models import metrics
from monitoring import performance
from monitoring.expectation import Expectation

BERLIN = Market(code="SYN_NORTH", name="test", timezone="Europe/Berlin", country="DE")
NAME = "day_ahead_SYN_NORTH"


def day_hours(day: str) -> pd.Series:
    """UTC starts of the local hours of one Berlin day."""
    lo = pd.Timestamp(day).tz_localize("Europe/Berlin")
    hours = pd.date_range(lo, lo + pd.Timedelta(days=1), freq="h", inclusive="left").tz_convert("UTC")
    return pd.Series(hours[hours.tz_convert("Europe/Berlin").normalize().tz_localize(None) == pd.Timestamp(day)])


def forecasts(day: str, values: np.ndarray, *, version: str = "1", alias: str = "champion", shadow: bool = False,
              source: str = "batch", scenario: str | None = None, issued: pd.Timestamp | None = None,
              served: pd.Timestamp | None = None, width: float = 10.0, request_id: str = "r") -> pd.DataFrame:
    """Archive rows of one local day: q10/q50/q90 = values -/+ width, issued at gate closure unless given."""
    hours = day_hours(day)
    gate = BERLIN.on_day_before(hours, BERLIN.gate_closure)
    issued_at = gate if issued is None else pd.Series(issued, index=hours.index)
    n = len(hours)
    v = np.asarray(values, dtype=float)[:n]
    return pd.DataFrame({
        "request_id": request_id, "batch_id": "b" if source == "batch" else None, "source": source,
        "tenant": "internal", "market": BERLIN.code, "delivery_day": pd.Timestamp(day).date(),
        "delivery_start": hours, "issued_at": pd.to_datetime(issued_at, utc=True),
        "served_at": pd.to_datetime(served if served is not None else "2030-01-01", utc=True),
        "levels": [np.array([0.1, 0.5, 0.9])] * n, "values": [np.array([x - width, x, x + width]) for x in v],
        "forecast": v, "model_name": NAME, "model_version": version, "model_alias": alias, "shadow": shadow,
        "scenario": scenario, "quality": "ok"})


def prices(first: str, days: int, seed: int = 0) -> pd.DataFrame:
    """Hourly prices of ``days`` local days, published at 13:00 on the day before."""
    hours = pd.concat([day_hours(str(d.date())) for d in pd.date_range(first, periods=days, freq="D")],
                      ignore_index=True)
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"delivery_start": hours, "price": 50 + 20 * rng.standard_normal(len(hours)),
                         "published_at": BERLIN.on_day_before(hours, BERLIN.prices_published)})


def expectation(mae: float = 5.0) -> Expectation:
    return Expectation("run", {"mae": mae, "coverage_0.8": 0.8, "pinball_q50": mae / 2}, None, None, None)


def test_deduplication_keeps_the_latest_issued_then_the_first_served():
    day = "2023-06-12"
    n = len(day_hours(day))
    gate = BERLIN.on_day_before(day_hours(day), BERLIN.gate_closure).iloc[0]
    batch = forecasts(day, np.full(n, 10.0), served="2030-01-01")  # issued at gate closure, backfilled late
    early = forecasts(day, np.full(n, 20.0), source="api", issued=gate - pd.Timedelta(hours=20),
                      served=gate - pd.Timedelta(hours=20))  # less informed
    at_gate = forecasts(day, np.full(n, 30.0), source="api", issued=gate, served=gate + pd.Timedelta(minutes=5))
    again = forecasts(day, np.full(n, 40.0), source="api", issued=gate, served=gate + pd.Timedelta(hours=2))
    rows = pd.concat([batch, early, at_gate, again], ignore_index=True)
    kept, dropped = performance.deduplicate(rows.sample(frac=1.0, random_state=3))  # order must not matter
    assert dropped == 3 * n and len(kept) == n
    assert (kept["forecast"] == 30.0).all()  # latest issued (gate closure), and of those the first served
    assert kept["delivery_start"].is_monotonic_increasing


def test_scenarios_late_rows_and_shadows_are_kept_apart():
    day = "2023-06-12"
    n = len(day_hours(day))
    gate = BERLIN.on_day_before(day_hours(day), BERLIN.gate_closure).iloc[0]
    rows = pd.concat([
        forecasts(day, np.full(n, 1.0)),
        forecasts(day, np.full(n, 2.0), source="scenario", scenario="windless"),
        forecasts(day, np.full(n, 3.0), source="api", issued=gate + pd.Timedelta(hours=3)),  # after gate closure
        forecasts(day, np.full(n, 4.0), version="2", alias="challenger", shadow=True, source="api"),
        forecasts(day, np.full(n, 5.0), version="0", alias="champion", source="api"),  # an earlier champion
    ], ignore_index=True)
    s = performance.select(rows, BERLIN, NAME, "1")
    assert (s.champion["forecast"] == 1.0).all() and len(s.champion) == n
    assert s.scenario_rows == n and s.issued_after_gate_closure == n
    assert list(s.challengers) == [(NAME, "2", "challenger")] and (s.challengers[(NAME, "2", "challenger")]["forecast"] == 4.0).all()
    assert s.earlier_champions == {f"{NAME} v0": n}


def test_the_weekly_naive_forecast_is_the_same_local_hour_a_week_earlier_across_dst():
    p = prices("2023-03-20", 14)  # the spring DST day 2023-03-26 has 23 hours
    hours = pd.concat([day_hours("2023-03-27"), day_hours("2023-04-02")], ignore_index=True)
    local = hours.dt.tz_convert("Europe/Berlin")
    frame = pd.DataFrame({"delivery_start": hours, "day": local.dt.tz_localize(None).dt.normalize(),
                          "hour": local.dt.hour})
    naive = performance.naive_forecast(frame, p, BERLIN)
    pl = p.assign(local=p["delivery_start"].dt.tz_convert("Europe/Berlin").dt.tz_localize(None))
    price_at = dict(zip(pl["local"], pl["price"]))
    for ds, day, hour, value in zip(hours, frame["day"], frame["hour"], naive):
        source = day - pd.Timedelta(days=7) + pd.Timedelta(hours=int(hour))
        if source in price_at:
            assert value == price_at[source], (ds, hour)
        else:  # 02:00 on 2023-03-26 did not exist: interpolated from 01:00 and 03:00 of that day
            assert hour == 2 and value == pytest.approx((price_at[source - pd.Timedelta(hours=1)]
                                                         + price_at[source + pd.Timedelta(hours=1)]) / 2)


def test_metrics_are_the_backtests_and_only_published_prices_are_judged():
    p = prices("2023-06-01", 14, seed=1)
    rng = np.random.default_rng(2)
    days = [str(d.date()) for d in pd.date_range("2023-06-08", periods=7, freq="D")]
    rows = pd.concat([forecasts(d, 50 + 10 * rng.standard_normal(24), width=15.0) for d in days], ignore_index=True)
    # a second before the prices of the window's last day (06-14) are published: that day is pending
    as_of = BERLIN.on_day_before(day_hours("2023-06-14"), BERLIN.prices_published).iloc[0] - pd.Timedelta(seconds=1)
    a = performance.assess(rows, p, BERLIN, NAME, "1", expectation(), window_days=7, as_of=as_of, where="test")
    c = a.champion
    assert (c.hours, c.pending_hours, c.days) == (24 * 6, 24, 6)
    joined = rows.merge(p, on="delivery_start")
    joined = joined[joined["published_at"] <= as_of]
    lo = np.array([v[0] for v in joined["values"]])
    hi = np.array([v[2] for v in joined["values"]])
    got = a.metrics()
    assert got["mae"] == pytest.approx(metrics.mae(joined["price"], joined["forecast"]), rel=1e-12)
    assert got["coverage_0.8"] == pytest.approx(metrics.coverage(joined["price"], lo, hi), rel=1e-12)
    assert got["pinball_q90"] == pytest.approx(metrics.pinball(joined["price"], hi, 0.9), rel=1e-12)
    assert got["error_ratio"] == pytest.approx(got["mae"] / 5.0) and got["coverage_gap"] == pytest.approx(
        got["coverage_0.8"] - 0.8)
    assert math.isfinite(got["rmae"]) and got["rmae"] == pytest.approx(got["mae"] / metrics.mae(
        c.rows["actual"], c.rows["naive"]), rel=1e-12)
    # batch forecasts are issued at gate closure (12:00 on D-1): lead times 12..35 hours in four 6-hour bins
    assert sorted(int(k.split("_")[1][:-1]) for k in got if k.startswith("mae.lead_")) == [12, 18, 24, 30]
    assert [k for k in got if k.startswith("mae.hour_")] == [f"mae.hour_{h:02d}" for h in range(24)]
    per_row = c.per_row()  # what the Evidently report averages
    assert per_row["abs_error"].mean() == pytest.approx(got["mae"], rel=1e-12)
    assert per_row["coverage_0.8"].mean() == pytest.approx(got["coverage_0.8"], rel=1e-12)


def test_a_window_without_the_champions_forecasts_or_without_published_prices_is_an_error():
    p = prices("2023-06-01", 14)
    rows = forecasts("2023-06-10", np.full(24, 50.0), version="7")
    with pytest.raises(MonitoringDataError, match=r"no served forecast of day_ahead_SYN_NORTH version 1 .*it has "
                                                  r"day_ahead_SYN_NORTH v7 \(champion\): 24 rows"):
        performance.assess(rows, p, BERLIN, NAME, "1", expectation(), window_days=7,
                           as_of=pd.Timestamp("2030-01-01", tz="UTC"), where="test")
    mine = forecasts("2023-06-10", np.full(24, 50.0))
    with pytest.raises(MonitoringDataError, match=r"none of the 24 forecast hours .* has a price published by "
                                                  r"2023-06-05T00:00:00\+00:00"):
        performance.assess(mine, p, BERLIN, NAME, "1", expectation(), window_days=7,
                           as_of=pd.Timestamp("2023-06-05", tz="UTC"), where="test")
