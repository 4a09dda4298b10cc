"""The Feast feature store over the Iceberg feature tables: real Feast, real SQLite online store.

Point in time is the core promise: a training set for issue time T holds only values known at T,
and does not change when data known after T changes or disappears.
"""

import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401
import pytest

from features import featurestore, online
from features.featuretables import compute_features, features_as_of
from features.ingest import ingest_file, ingest_synthetic
from features.lake import Lake, between
from features.marketdata import MarketData
from features.settings import AurumSettings
from features.sources import SourceMapping
from features.transforms.price_lags import PriceLagsAdder

SERVICE = "day_ahead_v1"
REPO = Path(__file__).resolve().parents[2]
TZ = "Europe/Berlin"


def make_env(home, start: dt.date, end: dt.date):
    settings = AurumSettings(home=home)
    lake = Lake.open(settings)
    ingest_synthetic(lake, ["SYN_NORTH"], start, end, seed=4)
    market = MarketData(lake).registry().get("SYN_NORTH")
    compute_features(lake, market)
    store = featurestore.apply(settings)
    return settings, lake, market, store


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A store the tests only read."""
    return make_env(tmp_path_factory.mktemp("home"), dt.date(2024, 3, 1), dt.date(2024, 11, 1))


@pytest.fixture
def own_env(tmp_path):
    """A store of this test alone, which it may change."""
    return make_env(tmp_path / "home", dt.date(2024, 8, 1), dt.date(2024, 9, 1))


def day_rows(day: str, issued: str) -> pd.DataFrame:
    d = pd.Timestamp(day)
    hours = pd.date_range(d.tz_localize(TZ), (d + pd.Timedelta(days=1)).tz_localize(TZ), freq="h", inclusive="left")
    return pd.DataFrame({"market": "SYN_NORTH", "delivery_start": hours.tz_convert("UTC"),
                         "event_timestamp": pd.Timestamp(issued, tz="UTC")})


def test_training_set_matches_the_feature_tables_as_of_the_issue_time(env):
    settings, lake, market, store = env
    rows = day_rows("2024-06-12", "2024-06-11 09:30")  # 11:30 local on D-1, before gate closure
    ts = featurestore.training_set(store, SERVICE, rows).sort_values("delivery_start").reset_index(drop=True)
    assert len(ts) == 24
    for table, cols in (("price_features", ["price_lag_P1D", "price_lag_P7D", "price_rolling_std_P7D"]),
                        ("exogenous_features", ["load_forecast_mw", "residual_load_mw"])):
        oracle = features_as_of(lake, table, "SYN_NORTH", "2024-06-11 09:30", "2024-06-11", "2024-06-14")
        merged = ts.merge(oracle, on="delivery_start", suffixes=("", "_oracle"))
        assert len(merged) == 24
        for c in cols:
            np.testing.assert_array_equal(merged[c].to_numpy(), merged[f"{c}_oracle"].to_numpy())


def test_calendar_features_are_served_through_the_same_service(env):
    settings, lake, market, store = env
    ts = featurestore.training_set(store, SERVICE, day_rows("2024-10-03", "2024-10-02 09:30"))  # German Unity Day
    assert ts["is_holiday"].all() and sorted(ts["hour"]) == list(range(24))
    featurestore.materialize(store, dt.datetime(2024, 10, 20, tzinfo=dt.timezone.utc),
                             dt.datetime(2024, 10, 28, tzinfo=dt.timezone.utc))
    online = featurestore.online_day(store, SERVICE, "SYN_NORTH", dt.date(2024, 10, 27), TZ)
    assert online["hour"].tolist() == [0, 1, 2, 2, *range(3, 24)]  # the repeated autumn hour


def test_price_lag_equals_the_raw_price_of_the_same_hour_the_day_before(env):
    settings, lake, market, store = env
    ts = featurestore.training_set(store, SERVICE, day_rows("2024-07-03", "2024-07-02 09:00"))
    raw = MarketData(lake).prices("SYN_NORTH", "2024-07-01 22:00", "2024-07-02 22:00")  # local 07-02
    np.testing.assert_array_equal(ts.sort_values("delivery_start")["price_lag_P1D"].to_numpy(), raw["price"].to_numpy())


def test_values_not_yet_known_at_the_issue_time_are_missing_not_leaked(env):
    settings, lake, market, store = env
    # D-1 08:00 local: prices of D-1 and the calendar are known, the day-ahead forecasts (10:00) are not.
    ts = featurestore.training_set(store, SERVICE, day_rows("2024-06-12", "2024-06-11 06:00"))
    assert ts["price_lag_P1D"].notna().all() and ts["hour"].notna().all()
    assert ts["load_forecast_mw"].isna().all() and ts["residual_load_mw"].isna().all()
    assert (ts["missing_features"] == 6).all()  # the six exogenous features
    # Two days ahead nothing is known yet: an error, not a frame of NaNs.
    with pytest.raises(featurestore.FeatureStoreError, match="no feature of service 'day_ahead_v1' is known"):
        featurestore.training_set(store, SERVICE, day_rows("2024-06-12", "2024-06-09 06:00"))


def test_changing_or_deleting_data_known_after_t_leaves_the_training_set_for_t_unchanged(own_env, tmp_path):
    settings, lake, market, store = own_env
    rows = day_rows("2024-08-20", "2024-08-19 09:30")
    before = featurestore.training_set(store, SERVICE, rows).sort_values("delivery_start").reset_index(drop=True)

    # A late revision of that day's load forecast arrives now, and features are recomputed.
    target = pd.Timestamp("2024-08-20 10:00", tz="UTC")
    csv = tmp_path / "revision.csv"
    csv.write_text(f"time,load\n{target.tz_convert(TZ):%Y-%m-%d %H:%M},123456\n")
    ingest_file(lake, "csv", "SYN_NORTH", csv, mapping=SourceMapping(timestamp="time", columns={"load": "load_forecast_mw"}))
    assert compute_features(lake, market, "2024-08-01", "2024-09-01").versions_written["exogenous_features"] == 1
    # And every feature row that became known after T disappears.
    lake.table("features.price_features").delete(between("known_at", pd.Timestamp("2024-08-19 09:31", tz="UTC")))

    after = featurestore.training_set(store, SERVICE, rows).sort_values("delivery_start").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    now = featurestore.training_set(store, SERVICE, rows.assign(event_timestamp=pd.Timestamp.now(tz="UTC")))
    assert now.set_index("delivery_start").loc[target, "load_forecast_mw"] == 123456


def test_the_asof_join_answers_exactly_as_feasts_own_join(own_env, tmp_path, monkeypatch):
    settings, lake, market, store = own_env
    # Several versions per period: a late revision (later known_at) ...
    csv = tmp_path / "revision.csv"
    csv.write_text("time,load\n2024-08-20 12:00,123456\n2024-08-21 00:00,654321\n")
    ingest_file(lake, "csv", "SYN_NORTH", csv, mapping=SourceMapping(timestamp="time", columns={"load": "load_forecast_mw"}))
    compute_features(lake, market, "2024-08-01", "2024-09-01")
    # ... and a tie: a version with the same known_at and a later computed_at, which must win.
    tie = lake.scan("features.exogenous_features", between("delivery_start", pd.Timestamp("2024-08-15 00:00", tz="UTC"),
                                                            pd.Timestamp("2024-08-15 05:00", tz="UTC")))
    columns = {n: tie[n] for n in tie.column_names}
    columns["load_forecast_mw"] = pa.array(np.arange(tie.num_rows, dtype=float) + 777)
    columns["computed_at"] = pa.compute.add(tie["computed_at"], pa.scalar(dt.timedelta(seconds=1)))
    lake.table("features.exogenous_features").append(pa.Table.from_arrays(list(columns.values()), schema=tie.schema))

    hours = pd.date_range("2024-08-02", "2024-09-01", freq="h", tz="UTC", inclusive="left")
    issued = [hours.floor("D") - pd.Timedelta(hours=14, minutes=30),  # D-1 09:30: the normal case
              pd.DatetimeIndex([pd.Timestamp("2024-08-10", tz="UTC")] * len(hours)),  # early or long expired
              pd.DatetimeIndex([pd.Timestamp.now(tz="UTC")] * len(hours))]  # now: every version, TTL long past
    rows = pd.concat([pd.DataFrame({"market": "SYN_NORTH", "delivery_start": hours, "event_timestamp": i})
                      for i in issued]).sample(frac=1, random_state=3).reset_index(drop=True)
    rows.loc[::50, "market"] = "NOWHERE"
    job = store.get_historical_features(entity_df=rows, features=store.get_feature_service(SERVICE))
    assert type(job).__name__ == "_AsofRetrievalJob"
    asof = job.to_df()
    pd.testing.assert_frame_equal(asof[rows.columns], rows)  # the entity frame's own order
    monkeypatch.setattr(featurestore.PrunedDuckDBOfflineStore, "asof_join", False)
    job = store.get_historical_features(entity_df=rows, features=store.get_feature_service(SERVICE))
    assert type(job).__name__ != "_AsofRetrievalJob"
    feast = job.to_df()
    names = featurestore.service_features(store, SERVICE)
    names = [n.split(":", 1)[1] for n in names]
    key = ["market", "delivery_start", "event_timestamp"]
    a = asof.sort_values(key).reset_index(drop=True)
    b = feast.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[key], b[key], check_dtype=False)  # Feast returns microseconds
    pd.testing.assert_frame_equal(a[names].astype(float), b[names].astype(float))
    seen = a["load_forecast_mw"]
    assert (seen == 123456).any() and (seen == 777).any() and a[names].isna().any().all() and a[names].notna().any().all()


def test_online_lookup_of_a_day_has_its_23_24_or_25_hours(env):
    settings, lake, market, store = env
    featurestore.materialize(store, dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc),
                             dt.datetime(2024, 11, 2, tzinfo=dt.timezone.utc))
    featurestore.materialize(store)  # incremental: nothing new, no error
    for day, n in ((dt.date(2024, 6, 12), 24), (dt.date(2024, 10, 27), 25)):
        online = featurestore.online_day(store, SERVICE, "SYN_NORTH", day, TZ)
        assert len(online) == n and online["delivery_start"].is_unique
        # fresh at the issue time (D-1 12:00 local): the oldest inputs, D-1 prices, were published on D-2
        assert not online["stale"].any() and (online["missing_features"] == 0).all()
        assert (online["feature_age"] < pd.Timedelta(days=2)).all() and (online["feature_age"] > pd.Timedelta(hours=20)).all()
    # The day after the data ends: price and calendar features exist, forecasts do not: flagged, not silent.
    last = featurestore.online_day(store, SERVICE, "SYN_NORTH", dt.date(2024, 11, 1), TZ)
    assert last["stale"].all() and (last["missing_features"] == 6).all()
    online = featurestore.online_day(store, SERVICE, "SYN_NORTH", dt.date(2024, 6, 12), TZ)
    offline = featurestore.training_set(store, SERVICE, day_rows("2024-06-12", "2024-06-11 09:30"))
    # the same definitions online and offline: the online vector equals the training row at issue time
    np.testing.assert_allclose(online["price_lag_P7D"].astype(float).to_numpy(),
                               offline.sort_values("delivery_start")["price_lag_P7D"].to_numpy())


def test_the_direct_online_reader_answers_exactly_as_feast_does(env):
    settings, lake, market, store = env
    featurestore.materialize(store, dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc),
                             dt.datetime(2024, 11, 2, tzinfo=dt.timezone.utc))
    now = pd.Timestamp("2024-12-01", tz="UTC")
    for features in (None, ["hour", "is_holiday", "price_lag_P1D", "load_forecast_mw"]):
        direct = featurestore.OnlineFeatures(store, SERVICE, features)
        feast = featurestore.OnlineFeatures(store, SERVICE, features, direct=False)
        assert type(direct.rows).__name__ == "_SqliteRows" and type(feast.rows).__name__ == "_FeastRows"
        # a normal day, both DST days, the last day (forecasts missing), a day and a market with nothing
        for m, day in (("SYN_NORTH", dt.date(2024, 6, 12)), ("SYN_NORTH", dt.date(2024, 3, 31)),
                       ("SYN_NORTH", dt.date(2024, 10, 27)), ("SYN_NORTH", dt.date(2024, 11, 1)),
                       ("SYN_NORTH", dt.date(2025, 6, 1)), ("NOWHERE", dt.date(2024, 6, 12))):
            pd.testing.assert_frame_equal(direct.day(m, day, TZ, now=now), feast.day(m, day, TZ, now=now))
    nothing = direct.day("NOWHERE", dt.date(2024, 6, 12), TZ)
    assert nothing["stale"].all() and (nothing["missing_features"] == 4).all() and nothing["known_at"].isna().all()


def test_the_cached_direct_reader_rereads_as_soon_as_the_online_store_changes(own_env, monkeypatch):
    settings, lake, market, store = own_env
    featurestore.materialize(store, dt.datetime(2024, 8, 1, tzinfo=dt.timezone.utc),
                             dt.datetime(2024, 9, 2, tzinfo=dt.timezone.utc))
    cached = featurestore.OnlineFeatures(store, SERVICE, cache=4)
    feast = featurestore.OnlineFeatures(store, SERVICE, direct=False)
    reads = []
    real_read = type(cached.rows)._read
    monkeypatch.setattr(type(cached.rows), "_read", lambda self, *a: reads.append(a) or real_read(self, *a))
    day, now = dt.date(2024, 8, 20), pd.Timestamp("2024-12-01", tz="UTC")
    first = cached.day("SYN_NORTH", day, TZ, now=now)
    again = cached.day("SYN_NORTH", day, TZ, now=now)
    pd.testing.assert_frame_equal(first, again)
    assert len(reads) == 1  # the unchanged store answered from the cache
    again.loc[0, "price_lag_P1D"] = -1.0  # callers get copies: changing one does not change the next answer
    assert cached.day("SYN_NORTH", day, TZ, now=now).loc[0, "price_lag_P1D"] == first.loc[0, "price_lag_P1D"]
    # another connection writes one hour's price features: the next lookup sees it, exactly as Feast does
    row = feast.day("SYN_NORTH", day, TZ, now=now).iloc[[5]]
    names = PriceLagsAdder().feature_names
    changed = row[["market", "delivery_start", "known_at", *names]].assign(price_lag_P1D=1234.5, computed_at=now)
    store.write_to_online_store("price_features", changed)
    after = cached.day("SYN_NORTH", day, TZ, now=now)
    assert len(reads) == 2 and after.loc[5, "price_lag_P1D"] == 1234.5
    pd.testing.assert_frame_equal(after, feast.day("SYN_NORTH", day, TZ, now=now))
    for d in range(6):  # bounded: the oldest lookups make room
        cached.day("SYN_NORTH", day + dt.timedelta(days=d), TZ, now=now)
    assert len(cached.rows._local.kept) == 4


def test_the_online_plan_reads_as_feast_does_without_importing_it_until_a_definition_changes(own_env, tmp_path):
    settings, lake, market, store = own_env
    reader = featurestore.OnlineFeatures(store, SERVICE)
    path = featurestore.save_online_plan(settings, reader, ["SYN_NORTH"])
    featurestore.materialize(store, dt.datetime(2024, 8, 1, tzinfo=dt.timezone.utc),
                             dt.datetime(2024, 9, 2, tzinfo=dt.timezone.utc))  # rewrites the registry's metadata only
    planned, how = online.planned_reader(settings, SERVICE, ["SYN_NORTH"])
    assert planned is not None, how
    feast = featurestore.OnlineFeatures(store, SERVICE, direct=False)
    now = pd.Timestamp("2024-12-01", tz="UTC")
    for day in (dt.date(2024, 8, 20), dt.date(2024, 8, 31), dt.date(2024, 9, 1), dt.date(2024, 10, 27)):
        pd.testing.assert_frame_equal(planned.day("SYN_NORTH", day, TZ, now=now), feast.day("SYN_NORTH", day, TZ, now=now))
    # a fresh interpreter reads through the plan without importing Feast
    code = ("import sys, datetime as dt; from features.settings import AurumSettings; from features import online; "
            f"r, how = online.planned_reader(AurumSettings(home={str(settings.home_dir)!r}), {SERVICE!r}, ['SYN_NORTH']); "
            "print(r.day('SYN_NORTH', dt.date(2024, 8, 20), 'Europe/Berlin')['price_lag_P1D'].sum(), 'feast' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout.split()
    assert out[1] == "False" and float(out[0]) == pytest.approx(feast.day("SYN_NORTH", dt.date(2024, 8, 20), TZ)["price_lag_P1D"].sum())
    # a market the plan has no key template for, and a changed definition: back to Feast, with the reason
    assert online.planned_reader(settings, SERVICE, ["SYN_NORTH", "SYN_SOUTH"])[0] is None
    view = store.get_feature_view("price_features")
    view.description = "changed"
    store.apply([view])
    planned, how = online.planned_reader(settings, SERVICE, ["SYN_NORTH"])
    assert planned is None and "has changed" in how
    path.write_text("{not json")
    assert online.planned_reader(settings, SERVICE, ["SYN_NORTH"])[0] is None


def test_value_bytes_decode_as_feast_parses_them():
    from feast.protos.feast.types.Value_pb2 import Value

    for value, expected in ((Value(double_val=-3.25), -3.25), (Value(int64_val=7), 7.0), (Value(int64_val=-7), -7.0),
                            (Value(int64_val=2**40), float(2**40)), (Value(int32_val=-5), -5.0), (Value(bool_val=True), 1.0),
                            (Value(bool_val=False), 0.0), (Value(float_val=0.5), 0.5), (Value(double_val=0.0), 0.0)):
        assert online.decode_value(value.SerializeToString()) == expected, value
    assert np.isnan(online.decode_value(Value(null_val=0).SerializeToString()))
    assert np.isnan(online.decode_value(b""))
    with pytest.raises(featurestore.FeatureStoreError, match="field 2"):
        online.decode_value(Value(string_val="x").SerializeToString())


def test_unknown_feature_service_or_bad_entity_rows_are_clear_errors(env):
    settings, lake, market, store = env
    with pytest.raises(featurestore.FeatureStoreError, match="unknown feature service 'nope'.*day_ahead_v1"):
        featurestore.training_set(store, "nope", day_rows("2024-06-12", "2024-06-11 09:30"))
    with pytest.raises(featurestore.FeatureStoreError, match=r"\['wind_speed'\] are not offered by service"):
        featurestore.training_set(store, SERVICE, day_rows("2024-06-12", "2024-06-11 09:30"), features=["wind_speed"])
    with pytest.raises(featurestore.FeatureStoreError, match="lack columns.*event_timestamp"):
        featurestore.training_set(store, SERVICE, day_rows("2024-06-12", "2024-06-11").drop(columns="event_timestamp"))


def test_historical_reads_push_market_and_time_window_into_the_iceberg_scan(env):
    settings, lake, market, store = env
    view = store.get_feature_view("price_features")
    rows = day_rows("2024-06-12", "2024-06-11 09:30")
    row_filter, columns = featurestore._view_plan(view, ["price_features:price_lag_P1D"], featurestore._EntitySummary(rows))
    assert columns == ["market", "delivery_start", "price_lag_P1D", "known_at", "computed_at"]
    got = lake.scan("features.price_features", row_filter).to_pandas()
    assert 0 < len(got) < 0.02 * len(lake.scan("features.price_features"))
    assert set(got["market"]) == {"SYN_NORTH"}
    assert got["known_at"].max() <= pd.Timestamp("2024-06-11 09:30", tz="UTC")
    assert got["known_at"].min() >= pd.Timestamp("2024-06-09 09:30", tz="UTC")  # issue time minus the TTL
