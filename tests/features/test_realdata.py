"""Ingestion of every real market file in ../shared/data (read from there, never copied).

The files are padded24 sources: the spring DST hour is a filler and the autumn one an average.
DE_LU holds 240 empty rows and zeros that stand for missing data.
"""

import pandas as pd
import pytest

from features.ingest import ingest_file
from features.marketdata import MarketData

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

EPF = ("NP", "BE", "FR")
ENTSOE = ("BE", "DE_LU", "DK_1", "ES", "FR", "NL", "NO_2", "PL", "SE_3")


@pytest.mark.parametrize("market", EPF)
def test_epf_file(lake, data_dir, market):
    r = ingest_file(lake, "epf", market, data_dir / "epf" / f"{market}.csv")
    assert r.rows_read == 52_416
    years = 6
    # Each spring day loses its filler hour to quarantine; each autumn day gains its repeated hour.
    assert r.quarantine_by_reason["dst_nonexistent_hour"] == years
    assert r.dst_autumn_split == years
    assert r.gaps == 0
    assert r.prices_accepted == 52_416 - r.quarantine_by_reason.get("out_of_bounds", 0)
    p = MarketData(lake).prices(market)
    assert p["delivery_start"].is_unique and p["delivery_start"].diff().dropna().eq(pd.Timedelta(hours=1)).all()
    # A local day has 23, 24 or 25 hours.
    tz = MarketData(lake).registry().get(market).timezone
    per_day = p["delivery_start"].dt.tz_convert(tz).dt.date.value_counts()
    assert set(per_day.iloc[1:-1].unique()) <= {23, 24, 25} and (per_day == 25).sum() == years


@pytest.mark.parametrize("zone", ENTSOE)
def test_entsoe_file(lake, data_dir, zone):
    path = data_dir / "entsoe" / f"{zone}.csv"
    r = ingest_file(lake, "entsoe", zone, path)
    text_rows = sum(1 for _ in open(path)) - 1
    assert r.rows_read == text_rows
    assert r.prices_accepted > 0.95 * text_rows
    assert r.prices_accepted + r.quarantined >= text_rows - r.dst_autumn_split
    p = MarketData(lake).prices(zone)
    assert p["delivery_start"].is_unique
    assert p["price"].between(-500, 4000).all()
    q = MarketData(lake).quarantine(zone)
    assert len(q) == r.quarantined
    assert set(q["reason"]) <= {"dst_nonexistent_hour", "empty_row", "zero_as_missing", "out_of_bounds",
                                "duplicate_timestamp", "duplicate_conflict", "missing_value"}


def test_de_lu_empty_rows_and_zeros_are_quarantined_not_dropped(lake, data_dir):
    r = ingest_file(lake, "entsoe", "DE_LU", data_dir / "entsoe" / "DE_LU.csv")
    assert r.quarantine_by_reason["empty_row"] == 240
    q = MarketData(lake).quarantine("DE_LU")
    empty = q[q["reason"] == "empty_row"]
    assert empty["column"].isna().all() and empty["source_line"].min() > 41_000
    zeros = q[q["reason"] == "zero_as_missing"]
    assert set(zeros["column"]) >= {"load_forecast_mw"}
    # Every data row is accounted for: stored, or in quarantine as a whole row.
    whole_rows = q[q["target"] == "row"]
    assert r.prices_accepted - r.dst_autumn_split + len(whole_rows) == r.rows_read
    f = MarketData(lake).fundamentals("DE_LU")
    assert not (f["load_forecast_mw"] == 0).any()
