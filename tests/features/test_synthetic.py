"""Tests of the synthetic market generator: shape, time line, determinism, realism, regime shift."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from features.errors import UnknownMarketError
from features.markets import MarketRegistry
from features.synthetic import (
    COLUMNS,
    PRICE_CAP,
    PRICE_FLOOR,
    SYNTHETIC_MARKETS,
    RegimeShift,
    generate,
    generate_market,
)

D = dt.date


@pytest.fixture(scope="module")
def north_2y() -> pd.DataFrame:
    return generate_market("SYN_NORTH", D(2021, 1, 1), D(2023, 1, 1), seed=0)


@pytest.fixture(scope="module")
def all_1y() -> dict[str, pd.DataFrame]:
    return generate(SYNTHETIC_MARKETS, D(2022, 1, 1), D(2023, 1, 1), seed=0)


def _local(df: pd.DataFrame, code: str) -> pd.Series:
    return df["delivery_start"].dt.tz_convert(SYNTHETIC_MARKETS[code].timezone)


def test_exactly_three_markets_matching_the_registry():
    assert set(SYNTHETIC_MARKETS) == {"SYN_NORTH", "SYN_SOUTH", "SYN_EAST"}
    registry = MarketRegistry()
    for code, spec in SYNTHETIC_MARKETS.items():
        assert spec.code == code
        assert registry.get(code).timezone == spec.timezone
    assert SYNTHETIC_MARKETS["SYN_NORTH"].timezone == "Europe/Berlin"
    assert SYNTHETIC_MARKETS["SYN_SOUTH"].timezone == "Europe/Madrid"
    assert SYNTHETIC_MARKETS["SYN_EAST"].timezone == "Europe/Warsaw"


@pytest.mark.parametrize(
    ("start", "end", "rows"),
    [
        (D(2021, 3, 28), D(2021, 3, 29), 23),  # spring forward
        (D(2021, 10, 31), D(2021, 11, 1), 25),  # fall back
        (D(2021, 6, 1), D(2021, 6, 2), 24),
        (D(2021, 1, 1), D(2022, 1, 1), 8760),
        (D(2024, 1, 1), D(2025, 1, 1), 8784),  # leap year
    ],
)
@pytest.mark.parametrize("code", sorted(SYNTHETIC_MARKETS))
def test_one_row_per_local_hourly_period(code, start, end, rows):
    df = generate_market(code, start, end)
    assert len(df) == rows
    local = _local(df, code)
    assert local.iloc[0] == pd.Timestamp(start).tz_localize(SYNTHETIC_MARKETS[code].timezone)
    assert local.iloc[-1] + pd.Timedelta(hours=1) == pd.Timestamp(end).tz_localize(SYNTHETIC_MARKETS[code].timezone)
    assert set(local.dt.date) == {start + dt.timedelta(days=i) for i in range((end - start).days)}


def test_berlin_dst_days_in_utc():
    spring = generate_market("SYN_NORTH", D(2021, 3, 28), D(2021, 3, 29))["delivery_start"]
    assert spring.iloc[0] == pd.Timestamp("2021-03-27 23:00", tz="UTC")
    assert spring.iloc[-1] == pd.Timestamp("2021-03-28 21:00", tz="UTC")
    autumn = generate_market("SYN_NORTH", D(2021, 10, 31), D(2021, 11, 1))["delivery_start"]
    assert autumn.iloc[0] == pd.Timestamp("2021-10-30 22:00", tz="UTC")
    assert autumn.iloc[-1] == pd.Timestamp("2021-10-31 22:00", tz="UTC")


def test_columns_dtypes_and_time_line(all_1y):
    for df in all_1y.values():
        assert tuple(df.columns) == COLUMNS
        assert str(df["delivery_start"].dtype) == "datetime64[us, UTC]"
        for column in COLUMNS[1:]:
            assert df[column].dtype == np.float64, column
        assert not df.isna().any().any()
        assert np.isfinite(df[list(COLUMNS[1:])].to_numpy()).all()
        steps = df["delivery_start"].diff().dropna()
        assert (steps == pd.Timedelta(hours=1)).all()  # strictly increasing, hourly, no gaps


def test_value_ranges(all_1y):
    for code, df in all_1y.items():
        spec = SYNTHETIC_MARKETS[code]
        assert df["price"].between(PRICE_FLOOR, PRICE_CAP).all()
        assert (df["wind_forecast_mw"] > 0).all()  # exact zeros mean "missing"
        assert (df["wind_forecast_mw"] <= spec.wind_capacity_mw).all()
        assert df["solar_forecast_mw"].between(0, spec.solar_capacity_mw).all()
        for column in ("load_forecast_mw", "load_actual_mw", "generation_forecast_mw", "fuel_price_eur_mwh"):
            assert (df[column] > 0).all(), column
        # Long-run mean load is the spec's, within the weather's spread.
        assert df["load_forecast_mw"].mean() == pytest.approx(spec.mean_load_mw, rel=0.05)


def test_deterministic():
    a = generate_market("SYN_SOUTH", D(2021, 1, 1), D(2021, 4, 1), seed=7)
    b = generate_market("SYN_SOUTH", D(2021, 1, 1), D(2021, 4, 1), seed=7)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_seed_changes_every_random_column():
    a = generate_market("SYN_NORTH", D(2021, 1, 1), D(2021, 2, 1), seed=0)
    b = generate_market("SYN_NORTH", D(2021, 1, 1), D(2021, 2, 1), seed=1)
    pd.testing.assert_series_equal(a["delivery_start"], b["delivery_start"])
    for column in COLUMNS[1:]:
        assert not np.allclose(a[column], b[column]), column


def test_markets_differ(all_1y):
    north, south, east = (all_1y[c] for c in ("SYN_NORTH", "SYN_SOUTH", "SYN_EAST"))
    n = min(len(north), len(south), len(east))
    for column in ("price", "wind_forecast_mw", "load_forecast_mw"):
        assert not np.allclose(north[column][:n], south[column][:n])
        assert not np.allclose(north[column][:n], east[column][:n])
    # Wind weather of different markets is independent, not a rescaled copy.
    assert abs(np.corrcoef(north["wind_forecast_mw"][:n], east["wind_forecast_mw"][:n])[0, 1]) < 0.5
    # Character: north is the windiest, south the sunniest relative to load.
    share = {c: df[["wind_forecast_mw", "solar_forecast_mw"]].mean() / df["load_forecast_mw"].mean()
             for c, df in all_1y.items()}
    assert share["SYN_NORTH"]["wind_forecast_mw"] > share["SYN_SOUTH"]["wind_forecast_mw"] > share["SYN_EAST"]["wind_forecast_mw"]
    assert share["SYN_SOUTH"]["solar_forecast_mw"] > share["SYN_NORTH"]["solar_forecast_mw"]


def test_extending_end_keeps_earlier_rows():
    short = generate_market("SYN_EAST", D(2021, 1, 1), D(2021, 2, 15), seed=3)
    long = generate_market("SYN_EAST", D(2021, 1, 1), D(2021, 9, 1), seed=3)
    pd.testing.assert_frame_equal(short, long.iloc[: len(short)], check_exact=True)


def test_generate_returns_each_market():
    out = generate(["SYN_EAST", "SYN_NORTH"], D(2021, 5, 1), D(2021, 5, 3), seed=2)
    assert list(out) == ["SYN_EAST", "SYN_NORTH"]
    pd.testing.assert_frame_equal(out["SYN_NORTH"], generate_market("SYN_NORTH", D(2021, 5, 1), D(2021, 5, 3), seed=2))


def test_regime_shift_changes_only_from_its_local_start_day():
    start, end, cut = D(2021, 1, 1), D(2021, 7, 1), D(2021, 4, 1)
    base = generate_market("SYN_NORTH", start, end, seed=5)
    shifted = generate_market("SYN_NORTH", start, end, seed=5, shift=RegimeShift(start=cut, fuel_price_factor=3.0))
    before = _local(base, "SYN_NORTH").dt.date < cut
    assert before.sum() > 0 and (~before).sum() > 0
    pd.testing.assert_frame_equal(base[before], shifted[before], check_exact=True)
    after = ~before
    # The break starts at local midnight of `cut`, and the very first hour already differs.
    assert shifted.loc[after.idxmax(), "delivery_start"] == pd.Timestamp("2021-03-31 22:00", tz="UTC")
    assert shifted.loc[after.idxmax(), "price"] != base.loc[after.idxmax(), "price"]
    np.testing.assert_allclose(shifted.loc[after, "fuel_price_eur_mwh"], 3.0 * base.loc[after, "fuel_price_eur_mwh"])
    assert shifted.loc[after, "price"].mean() > 2.0 * base.loc[after, "price"].mean()
    assert shifted.loc[after, "price"].mean() > 2.0 * shifted.loc[before, "price"].mean()
    # Load and weather are untouched by a fuel shift with load_factor 1.
    pd.testing.assert_series_equal(base["wind_forecast_mw"], shifted["wind_forecast_mw"])
    pd.testing.assert_series_equal(base["load_forecast_mw"], shifted["load_forecast_mw"])


def test_regime_shift_load_and_volatility():
    start, end, cut = D(2021, 1, 1), D(2021, 3, 1), D(2021, 2, 1)
    base = generate_market("SYN_SOUTH", start, end, seed=1)
    shift = RegimeShift(start=cut, fuel_price_factor=1.0, load_factor=1.1, price_volatility_factor=3.0)
    shifted = generate_market("SYN_SOUTH", start, end, seed=1, shift=shift)
    after = _local(base, "SYN_SOUTH").dt.date >= cut
    np.testing.assert_allclose(shifted.loc[after, "load_forecast_mw"], 1.1 * base.loc[after, "load_forecast_mw"])
    np.testing.assert_allclose(shifted.loc[after, "load_actual_mw"], 1.1 * base.loc[after, "load_actual_mw"])
    # More volatile relative to the merit order value: the hour-to-hour price jitter grows.
    assert shifted.loc[after, "price"].diff().std() > 1.5 * base.loc[after, "price"].diff().std()


def test_solar_follows_the_sun(all_1y):
    for code, df in all_1y.items():
        local = _local(df, code)
        summer = local.dt.month.isin([6, 7])
        solar = df["solar_forecast_mw"]
        assert (solar[summer & (local.dt.hour == 0)] == 0.0).all(), code
        assert (solar[summer & (local.dt.hour == 13)] > 0.0).all(), code
        # Longer and higher days in summer than in winter.
        winter = local.dt.month.isin([12, 1])
        assert (solar[summer] > 0).mean() > (solar[winter] > 0).mean() + 0.1, code
        assert solar[summer].mean() > 2 * solar[winter].mean(), code


def test_load_shapes(all_1y):
    for code, df in all_1y.items():
        local = _local(df, code)
        load = df["load_forecast_mw"]
        weekend = local.dt.dayofweek >= 5
        assert load[~weekend].mean() > 1.05 * load[weekend].mean(), code
        month = local.dt.month
        assert load[month.isin([12, 1, 2])].mean() > 1.05 * load[month.isin([6, 7, 8])].mean(), code
        by_hour = load[~weekend].groupby(local.dt.hour).mean()
        assert by_hour.idxmin() in range(1, 6), code  # night trough
        assert by_hour[10] > 1.15 * by_hour[3] and by_hour[19] > 1.15 * by_hour[3], code  # morning, evening peaks


def test_load_actual_is_forecast_plus_small_autocorrelated_error(north_2y):
    error = north_2y["load_actual_mw"] / north_2y["load_forecast_mw"] - 1.0
    assert 0.01 < error.std() < 0.05
    assert abs(error.mean()) < 0.005
    assert error.autocorr(1) > 0.5


def test_wind_is_persistent_and_seasonal(north_2y):
    wind = north_2y["wind_forecast_mw"]
    assert wind.autocorr(24) > 0.4  # weather systems last days
    month = _local(north_2y, "SYN_NORTH").dt.month
    assert wind[month.isin([12, 1, 2])].mean() > 1.2 * wind[month.isin([6, 7, 8])].mean()
    capacity = SYNTHETIC_MARKETS["SYN_NORTH"].wind_capacity_mw
    assert wind.max() > 0.8 * capacity and wind.min() < 0.05 * capacity


def test_fuel_is_a_daily_mean_reverting_walk(north_2y):
    fuel = north_2y["fuel_price_eur_mwh"]
    local_day = _local(north_2y, "SYN_NORTH").dt.date
    assert (fuel.groupby(local_day).nunique() == 1).all()  # constant within a local day
    daily = fuel.groupby(local_day).first()
    assert daily.nunique() > 0.9 * len(daily)  # and moves from day to day
    assert 15 < daily.min() and daily.max() < 80
    assert 25 < daily.mean() < 40


def test_price_spikes_negatives_and_merit_order(north_2y):
    price = north_2y["price"]
    assert (price < 0).any()
    assert (price > 3 * price.median()).any()
    assert price.min() >= PRICE_FLOOR and price.max() <= PRICE_CAP
    residual = north_2y["load_forecast_mw"] - north_2y["wind_forecast_mw"] - north_2y["solar_forecast_mw"]
    assert np.corrcoef(price, residual)[0, 1] > 0.5
    # Negative hours come with very low residual load, spikes with high.
    assert residual[price < 0].mean() < residual.quantile(0.1)
    assert residual[price > 3 * price.median()].mean() > residual.quantile(0.9)


def test_generation_forecast_tracks_load(north_2y):
    ratio = north_2y["generation_forecast_mw"] / north_2y["load_forecast_mw"]
    assert ratio.between(0.3, 2.0).all()
    assert 0.9 < ratio.mean() < 1.1


def test_unknown_market():
    with pytest.raises(UnknownMarketError) as info:
        generate_market("SYN_WEST", D(2021, 1, 1), D(2021, 1, 2))
    assert info.value.code == "SYN_WEST"
    assert sorted(info.value.known) == sorted(SYNTHETIC_MARKETS)
    assert "SYN_WEST" in str(info.value) and "SYN_NORTH" in str(info.value)
    with pytest.raises(KeyError):  # the domain error is also the built-in
        generate(["SYN_NORTH", "DE_LU"], D(2021, 1, 1), D(2021, 1, 2))


@pytest.mark.parametrize(("start", "end"), [(D(2021, 1, 2), D(2021, 1, 1)), (D(2021, 1, 1), D(2021, 1, 1))])
def test_end_must_be_after_start(start, end):
    with pytest.raises(ValueError) as info:
        generate_market("SYN_NORTH", start, end)
    assert start.isoformat() in str(info.value) and end.isoformat() in str(info.value)


def test_specs_and_shifts_are_frozen():
    with pytest.raises(Exception):
        SYNTHETIC_MARKETS["SYN_NORTH"].mean_load_mw = 1.0  # type: ignore[misc]
    shift = RegimeShift(start=D(2022, 1, 1))
    assert (shift.fuel_price_factor, shift.load_factor, shift.price_volatility_factor) == (3.0, 1.0, 2.0)
    with pytest.raises(Exception):
        shift.load_factor = 2.0  # type: ignore[misc]
