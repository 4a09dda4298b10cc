"""Derived feature tables in Iceberg: versions, idempotent re-runs, and no leakage of revisions."""

import datetime as dt

import pandas as pd
import pytest

from features.featuretables import compute_features, features_as_of
from features.ingest import ingest_file, ingest_synthetic
from features.marketdata import MarketData
from features.sources import SourceMapping


@pytest.fixture
def market(lake):
    ingest_synthetic(lake, ["SYN_NORTH"], dt.date(2023, 1, 1), dt.date(2023, 3, 1), seed=2)
    return MarketData(lake).registry().get("SYN_NORTH")


def test_compute_writes_each_group_with_the_next_day_and_rerun_writes_nothing(lake, market):
    run = compute_features(lake, market)
    assert run.versions_written["price_features"] == run.rows_computed["price_features"] > 0
    assert run.versions_written["exogenous_features"] == 59 * 24
    p = lake.scan("features.price_features").to_pandas()
    # the day after the last day with prices (2023-03-01) already has its price features
    last_day = p["delivery_start"].max().tz_convert(market.timezone).date()
    assert last_day == dt.date(2023, 3, 1)
    again = compute_features(lake, market)
    assert again.versions_written == {"price_features": 0, "exogenous_features": 0, "exogenous_lag_features": 0,
                                      "calendar_features": 0}
    cal = lake.scan("features.calendar_features").to_pandas()
    # one calendar row for every hour that has price or forecast features, known by D-1 00:00 local
    assert set(cal["delivery_start"]) == set(p["delivery_start"]) | set(
        lake.scan("features.exogenous_features").to_pandas()["delivery_start"])
    local_day = cal["delivery_start"].dt.tz_convert(market.timezone).dt.tz_localize(None).dt.normalize()
    assert (cal["known_at"] == (local_day - pd.Timedelta(days=1)).dt.tz_localize(market.timezone).dt.tz_convert("UTC")).all()
    assert len(lake.scan("features.price_features")) == len(p)


def test_a_revised_forecast_adds_a_version_and_the_old_one_stays_for_earlier_issue_times(lake, market, tmp_path):
    compute_features(lake, market, "2023-02-01", "2023-02-10")
    target = pd.Timestamp("2023-02-05 11:00", tz="UTC")  # 12:00 local on 02-05
    before = features_as_of(lake, "exogenous_features", "SYN_NORTH", "2023-02-04 10:00", "2023-02-05", "2023-02-06")
    old_load = before.set_index("delivery_start").loc[target, "load_forecast_mw"]

    csv = tmp_path / "revision.csv"
    csv.write_text(f"time,load\n2023-02-05 12:00,{old_load + 5000}\n")
    ingest_file(lake, "csv", "SYN_NORTH", csv, mapping=SourceMapping(timestamp="time", columns={"load": "load_forecast_mw"}))
    run = compute_features(lake, market, "2023-02-01", "2023-02-10")
    assert run.versions_written["exogenous_features"] == 1

    # As known before the revision arrived: the old value, exactly as before.
    again = features_as_of(lake, "exogenous_features", "SYN_NORTH", "2023-02-04 10:00", "2023-02-05", "2023-02-06")
    pd.testing.assert_frame_equal(before, again)
    # As known now: the revised value, with its arrival as known_at.
    now = features_as_of(lake, "exogenous_features", "SYN_NORTH", pd.Timestamp.now(tz="UTC"), "2023-02-05", "2023-02-06")
    row = now.set_index("delivery_start").loc[target]
    assert row["load_forecast_mw"] == old_load + 5000
    assert row["known_at"] > pd.Timestamp("2026-01-01", tz="UTC")

    # The day after sees it as its lag of D-1: a new version from the arrival on, the old one before it.
    assert run.versions_written["exogenous_lag_features"] == 1
    next_day = target + pd.Timedelta(days=1)
    lag_before = features_as_of(lake, "exogenous_lag_features", "SYN_NORTH", "2023-02-05 10:00", "2023-02-06", "2023-02-07")
    assert lag_before.set_index("delivery_start").loc[next_day, "load_forecast_mw_lag_P1D"] == old_load
    lag_now = features_as_of(lake, "exogenous_lag_features", "SYN_NORTH", pd.Timestamp.now(tz="UTC"), "2023-02-06",
                             "2023-02-07").set_index("delivery_start").loc[next_day]
    assert lag_now["load_forecast_mw_lag_P1D"] == old_load + 5000
    assert lag_now["known_at"] > pd.Timestamp("2026-01-01", tz="UTC")
