"""The feature store on the prod profile: SQL registry on PostgreSQL, Redis online store, PostgreSQL Iceberg catalog."""

import datetime as dt
import uuid

import pandas as pd
import pytest

from features import featurestore
from features.featuretables import compute_features
from features.ingest import ingest_synthetic
from features.lake import Lake
from features.marketdata import MarketData

pytestmark = pytest.mark.postgres


def test_apply_materialize_and_lookup_on_postgresql_and_redis(pg_settings, redis_available):
    settings = pg_settings.model_copy(update={"feast_project": f"aurum_test_{uuid.uuid4().hex[:8]}"})
    lake = Lake.open(settings)
    ingest_synthetic(lake, ["SYN_SOUTH"], dt.date(2024, 5, 1), dt.date(2024, 6, 1), seed=9)
    market = MarketData(lake).registry().get("SYN_SOUTH")
    compute_features(lake, market)
    store = featurestore.apply(settings)
    try:
        assert store.config.registry.registry_type == "sql"
        assert store.config.online_store.type == "redis"
        featurestore.materialize(store, dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc),
                                 dt.datetime(2024, 6, 2, tzinfo=dt.timezone.utc))
        online = featurestore.online_day(store, "day_ahead_v1", "SYN_SOUTH", dt.date(2024, 5, 20), market.timezone)
        assert len(online) == 24 and online["load_forecast_mw"].notna().all()
        d = pd.Timestamp("2024-05-20")
        hours = pd.date_range(d.tz_localize(market.timezone), periods=24, freq="h").tz_convert("UTC")
        rows = pd.DataFrame({"market": "SYN_SOUTH", "delivery_start": hours,
                             "event_timestamp": pd.Timestamp("2024-05-19 09:30", tz="UTC")})
        offline = featurestore.training_set(store, "day_ahead_v1", rows).sort_values("delivery_start")
        assert (offline["load_forecast_mw"].to_numpy() == online["load_forecast_mw"].astype(float).to_numpy()).all()
        # the direct Redis reader answers exactly as Feast does, for a day with data and one without
        direct = featurestore.OnlineFeatures(store, "day_ahead_v1")
        feast = featurestore.OnlineFeatures(store, "day_ahead_v1", direct=False)
        assert type(direct.rows).__name__ == "_RedisRows"
        now = pd.Timestamp("2024-07-01", tz="UTC")
        for day in (dt.date(2024, 5, 20), dt.date(2024, 6, 1), dt.date(2024, 8, 1)):
            pd.testing.assert_frame_equal(direct.day("SYN_SOUTH", day, market.timezone, now=now),
                                          feast.day("SYN_SOUTH", day, market.timezone, now=now))
    finally:
        featurestore.drop_project(store)  # this project's Redis keys and registry entry only
