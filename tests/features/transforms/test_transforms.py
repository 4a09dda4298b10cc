"""Feature transforms: the day-ahead rule, DST days, and oracle checks recomputed in SQL (DuckDB)."""

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pytest

from features.markets import BUILTIN_MARKETS, MarketRegistry
from features.synthetic import generate_market
from features.transforms import CalendarAdder, ExogenousAdder, ExogenousLagsAdder, PriceLagsAdder

MARKET = MarketRegistry(BUILTIN_MARKETS).get("SYN_NORTH")


@pytest.fixture(scope="module")
def prices():
    frame = generate_market("SYN_NORTH", dt.date(2021, 1, 1), dt.date(2021, 12, 31), seed=5)
    frame["published_at"] = MARKET.on_day_before(frame["delivery_start"], MARKET.prices_published)
    return frame


@pytest.fixture(scope="module")
def features(prices):
    return PriceLagsAdder().transform(prices, MARKET)


def test_rows_cover_each_next_day_with_its_real_hours(features):
    local_day = features["delivery_start"].dt.tz_convert(MARKET.timezone).dt.date
    per_day = local_day.value_counts()
    assert per_day[dt.date(2021, 3, 28)] == 23 and per_day[dt.date(2021, 10, 31)] == 25
    assert local_day.min() == dt.date(2021, 1, 2) and local_day.max() == dt.date(2021, 12, 31)
    assert features["delivery_start"].is_unique


def test_every_row_is_known_before_gate_closure_of_the_day_before(features):
    gate = MARKET.on_day_before(features["delivery_start"], MARKET.gate_closure)
    assert (features["known_at"] < gate).all()
    # exactly when the prices of D-1 were published: 13:00 local on D-2
    local_day = features["delivery_start"].dt.tz_convert(MARKET.timezone).dt.tz_localize(None).dt.normalize()
    expected = (local_day - pd.Timedelta(days=2) + pd.Timedelta(hours=13)).dt.tz_localize(MARKET.timezone)
    assert (features["known_at"] == expected.dt.tz_convert("UTC")).all()
    assert str(features["known_at"].dtype) == "datetime64[us, UTC]"


def test_oracle_recomputed_in_sql(prices, features):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("p", prices[["delivery_start", "price"]])
    tz = MARKET.timezone
    oracle = con.execute(f"""
        WITH loc AS (
            SELECT delivery_start, price,
                   CAST(timezone('{tz}', delivery_start) AS DATE) AS day,
                   hour(timezone('{tz}', delivery_start)) AS hr,
                   row_number() OVER (PARTITION BY CAST(timezone('{tz}', delivery_start) AS DATE),
                                      hour(timezone('{tz}', delivery_start)) ORDER BY delivery_start) AS occurrence
            FROM p
        ), first_hour AS (SELECT day, hr, price FROM loc WHERE occurrence = 1),
        daily AS (SELECT day, min(price) mn, max(price) mx, avg(price) mean FROM loc GROUP BY day),
        roll AS (
            SELECT d.day, avg(l.price) AS rmean, stddev_samp(l.price) AS rstd
            FROM daily d JOIN loc l ON l.day BETWEEN d.day - 6 AND d.day GROUP BY d.day
        )
        SELECT t.delivery_start,
               l1.price AS price_lag_P1D, l7.price AS price_lag_P7D,
               d.mn AS price_prev_day_min, d.mx AS price_prev_day_max, d.mean AS price_prev_day_mean,
               r.rmean AS price_rolling_mean_P7D, r.rstd AS price_rolling_std_P7D
        FROM loc t
        LEFT JOIN first_hour l1 ON l1.day = t.day - 1 AND l1.hr = t.hr
        LEFT JOIN first_hour l7 ON l7.day = t.day - 7 AND l7.hr = t.hr
        JOIN daily d ON d.day = t.day - 1
        JOIN roll r ON r.day = t.day - 1
        ORDER BY t.delivery_start
    """).df()
    oracle["delivery_start"] = pd.to_datetime(oracle["delivery_start"], utc=True).astype("datetime64[us, UTC]")
    got = features.merge(oracle, on="delivery_start", suffixes=("", "_sql"))
    assert len(got) == len(oracle) > 8000
    for col in ["price_lag_P1D", "price_lag_P7D", "price_prev_day_min", "price_prev_day_max"]:
        pd.testing.assert_series_equal(got[col], got[f"{col}_sql"], check_names=False)
    for col in ["price_prev_day_mean", "price_rolling_mean_P7D", "price_rolling_std_P7D"]:
        np.testing.assert_allclose(got[col], got[f"{col}_sql"], rtol=1e-9)


def local_date(frame: pd.DataFrame) -> pd.Series:
    return frame["delivery_start"].dt.tz_convert(MARKET.timezone).dt.date


def rerun_with_a_day_changed(adder, source: pd.DataFrame, column: str, day: dt.date) -> pd.DataFrame:
    """``adder``'s output on ``source`` with ``column`` of local ``day`` raised by 1000."""
    changed = source.copy()
    changed.loc[local_date(changed) == day, column] += 1000.0
    return adder.transform(changed, MARKET)


def test_changing_a_price_known_after_issue_changes_no_feature_before_it(prices, features):
    # Prices of local day 2021-06-10 are published on 06-09; features of days up to 06-10 cannot use them.
    again = rerun_with_a_day_changed(PriceLagsAdder(), prices, "price", dt.date(2021, 6, 10))
    before = local_date(features) <= dt.date(2021, 6, 10)
    pd.testing.assert_frame_equal(features[before], again[before])
    assert not features[~before].equals(again[~before])


def test_spring_hour_lag_is_missing_not_invented(features):
    # 2021-03-29 02:00 local looks one day back at 03-28 02:00, which did not exist.
    local = features["delivery_start"].dt.tz_convert(MARKET.timezone)
    row = features[(local.dt.date == dt.date(2021, 3, 29)) & (local.dt.hour == 2)]
    assert len(row) == 1 and np.isnan(row["price_lag_P1D"].iloc[0])
    assert row["price_lag_P2D"].notna().all()


def test_exogenous_residual_load_and_known_time():
    f = pd.DataFrame({
        "delivery_start": pd.date_range("2024-01-01", periods=3, freq="h", tz="UTC"),
        "load_forecast_mw": [100.0, 100.0, 100.0], "wind_forecast_mw": [30.0, np.nan, 10.0],
        "solar_forecast_mw": [0.0, 5.0, 20.0], "issued_at": pd.Timestamp("2023-12-31 09:00", tz="UTC"),
    })
    out = ExogenousAdder().transform(f, MARKET)
    assert out["residual_load_mw"].tolist()[0] == 70.0 and np.isnan(out["residual_load_mw"].iloc[1])
    assert out["residual_load_mw"].iloc[2] == 70.0
    assert (out["known_at"] == pd.Timestamp("2023-12-31 09:00", tz="UTC")).all()
    assert out["generation_forecast_mw"].isna().all()  # absent in the source: missing, not zero


@pytest.fixture(scope="module")
def forecasts():
    frame = generate_market("SYN_NORTH", dt.date(2021, 3, 1), dt.date(2021, 11, 15), seed=6).drop(columns="price")
    frame["issued_at"] = MARKET.on_day_before(frame["delivery_start"], MARKET.forecasts_issued)
    return frame


def test_exogenous_lags_are_the_same_wall_clock_hour_one_and_seven_days_back(forecasts):
    out = ExogenousLagsAdder().transform(forecasts, MARKET)
    local = lambda s: s.dt.tz_convert(MARKET.timezone).dt.tz_localize(None)  # noqa: E731
    src = forecasts.assign(at=local(forecasts["delivery_start"])).drop_duplicates("at").set_index("at")
    at = local(out["delivery_start"])
    for k in (1, 7):
        back = at - pd.Timedelta(days=k)  # naive wall clock: the same hour k days earlier
        for c in ("load_forecast_mw", "wind_forecast_mw", "solar_forecast_mw", "generation_forecast_mw"):
            np.testing.assert_array_equal(out[f"{c}_lag_P{k}D"].to_numpy(), src[c].reindex(back).to_numpy())
    # rows for every day after a day with forecasts, with the DST days' real hours
    days = at.dt.normalize().value_counts()
    assert days[pd.Timestamp("2021-03-28")] == 23 and days[pd.Timestamp("2021-10-31")] == 25
    assert at.min() == pd.Timestamp("2021-03-02") and at.max().normalize() == pd.Timestamp("2021-11-15")
    spring = out[(at.dt.normalize() == pd.Timestamp("2021-03-29")) & (at.dt.hour == 2)]
    assert spring["load_forecast_mw_lag_P1D"].isna().all() and spring["load_forecast_mw_lag_P7D"].notna().all()


def test_exogenous_lags_are_known_before_the_days_own_forecasts(forecasts):
    out = ExogenousLagsAdder().transform(forecasts, MARKET)
    own = MARKET.on_day_before(out["delivery_start"], MARKET.forecasts_issued)  # when day D's forecasts came
    earlier = MARKET.on_day_before(out["delivery_start"] - pd.Timedelta(days=1), MARKET.forecasts_issued)
    assert (out["known_at"] < own).all()
    # the forecasts of D-1 were issued on D-2: that is when the row was complete (DST days aside)
    assert (out["known_at"] == earlier).mean() > 0.99
    # changing a forecast of day D changes no lag row of days up to D
    again = rerun_with_a_day_changed(ExogenousLagsAdder(), forecasts, "load_forecast_mw", dt.date(2021, 6, 10))
    local_day = local_date(out)
    before = local_day <= dt.date(2021, 6, 10)
    pd.testing.assert_frame_equal(out[before], again[before])
    moved = (again["load_forecast_mw_lag_P1D"] - out["load_forecast_mw_lag_P1D"]).fillna(0) != 0
    assert set(local_day[moved]) == {dt.date(2021, 6, 11)}


def test_exogenous_lags_of_a_missing_column_are_missing_not_zero():
    f = pd.DataFrame({"delivery_start": pd.date_range("2024-01-01 23:00", periods=48, freq="h", tz="UTC"),
                      "load_forecast_mw": np.arange(48.0), "issued_at": pd.Timestamp("2023-12-31 09:00", tz="UTC")})
    out = ExogenousLagsAdder().transform(f, MARKET)
    assert out["wind_forecast_mw_lag_P1D"].isna().all()
    assert out["load_forecast_mw_lag_P1D"].iloc[24:48].tolist() == list(np.arange(24.0, 48.0))


def test_calendar_on_the_local_calendar_with_holidays():
    ts = pd.Series(pd.to_datetime(["2024-12-24 23:00", "2024-12-25 11:00", "2024-12-27 11:00"], utc=True))
    cal = CalendarAdder().transform(ts, MARKET)
    assert cal["hour"].tolist() == [0, 12, 12]  # 23:00 UTC is midnight in Berlin
    assert cal["is_holiday"].tolist() == [True, True, False]  # Christmas Day, local
    assert cal["weekday"].tolist() == [2, 2, 4]
    assert np.allclose(cal["hour_sin"] ** 2 + cal["hour_cos"] ** 2, 1.0)
