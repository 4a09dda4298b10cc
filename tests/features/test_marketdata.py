"""Reads of one market over a window: exact rows, pushdown, unknown market, stats."""

import datetime as dt

import pandas as pd
import pytest

from features.errors import UnknownMarketError
from features.ingest import ingest_synthetic
from features.lake import window_filter
from features.marketdata import MarketData, stats_table


@pytest.fixture
def filled(lake):
    ingest_synthetic(lake, ["SYN_NORTH", "SYN_SOUTH"], dt.date(2020, 1, 1), dt.date(2024, 1, 1), seed=1)
    return lake


def test_window_read_returns_exactly_the_half_open_window(filled):
    p = MarketData(filled).prices("SYN_NORTH", "2022-03-27", "2022-03-28")
    assert len(p) == 24
    assert p["delivery_start"].min() == pd.Timestamp("2022-03-27", tz="UTC")
    assert p["delivery_start"].max() == pd.Timestamp("2022-03-27 23:00", tz="UTC")
    assert set(p["market"]) == {"SYN_NORTH"}


def test_window_read_scans_only_the_files_of_the_window(filled):
    start, end = pd.Timestamp("2022-05-01", tz="UTC"), pd.Timestamp("2022-05-31", tz="UTC")
    scanned = filled.file_paths("prices", window_filter("SYN_NORTH", start, end))
    total = filled.file_paths("prices")
    assert len(total) >= 8  # 2 markets x 4 years
    assert len(scanned) == 1 and "SYN_NORTH" in scanned[0] and "2022" in scanned[0]


def test_window_joins_prices_and_fundamentals(filled):
    w = MarketData(filled).window("SYN_SOUTH", "2023-06-01", "2023-06-02")
    assert len(w) == 24 and w["price"].notna().all() and w["solar_forecast_mw"].notna().all()
    assert (w["issued_at"] < w["published_at"]).all()


def test_unknown_market_read_is_an_error_not_an_empty_frame(filled):
    with pytest.raises(UnknownMarketError, match="'NOPE'"):
        MarketData(filled).prices("NOPE", "2022-01-01", "2022-01-02")


def test_stats_per_table_and_market(filled):
    stats = {(s.table, s.market): s for s in MarketData(filled).stats()}
    north = stats[("prices", "SYN_NORTH")]
    assert north.rows == len(pd.date_range("2020-01-01", "2024-01-01", freq="h", tz="Europe/Berlin", inclusive="left"))
    assert north.gaps == 0 and north.snapshot_id == filled.snapshot_id("prices")
    assert stats[("ingest_batches", "*")].rows == 2
    assert "SYN_SOUTH" in stats_table(list(stats.values()))


def test_bad_window_bounds_are_clear_errors(filled):
    from features.errors import InvalidWindowError

    with pytest.raises(InvalidWindowError, match="'yesterday' is not a time"):
        MarketData(filled).prices("SYN_NORTH", "yesterday", None)
    with pytest.raises(InvalidWindowError, match="ends .* before it starts"):
        MarketData(filled).prices("SYN_NORTH", "2022-02-01", "2022-01-01")
