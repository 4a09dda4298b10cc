"""The service's work without HTTP: champion forecasts from the online store, the baseline fallback,
scenarios, the forecast cache and the registry reload, on a real MLflow store and real Feast."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from features import featurestore
from features.errors import ForecastRequestError, ForecastUnavailableError, UnknownMarketError
from features.marketdata import MarketData
from features.transforms.exogenous import residual_load
from models import mlflow_model as ml
from serving.runtime import ForecastRuntime
from serving.scenarios import Override, Scenario

MARKET = "SYN_NORTH"
Q = (0.1, 0.5, 0.9)


@pytest.fixture(scope="module")
def runtime(served_env):
    rt = ForecastRuntime.open(served_env.settings, archive=False)
    yield rt
    rt.close()


def oracle(served_env, day: dt.date, frame_edit=None) -> np.ndarray:
    """The champion's pyfunc on Feast's own online answer for the day (the path of the training tests)."""
    online = featurestore.online_day(served_env.store, "day_ahead_v1", MARKET, day, "Europe/Berlin")
    frame = online.drop(columns=["known_at", "feature_age", "stale"])
    if frame_edit:
        frame = frame_edit(frame)
    model = ml.load_forecaster(f"models:/day_ahead_{MARKET}@champion")
    return model.predict(ml.pyfunc_input(frame), params={"quantiles": list(Q)})[["q10", "q50", "q90"]].to_numpy()


def test_forecast_is_the_champion_on_the_online_features(runtime, served_env):
    day = dt.date(2024, 4, 12)
    f = runtime.forecast(MARKET, day, Q)
    assert f.quality == "ok" and f.quality_reason is None
    assert f.model_alias == "champion" and f.model_version == served_env.champions[MARKET]
    assert len(f.delivery_start) == 24 and list(f.local_hour) == list(range(24))
    np.testing.assert_allclose(f.values, oracle(served_env, day), rtol=1e-12)
    assert (np.diff(f.values, axis=1) >= 0).all()
    assert f.issued_at == pd.Timestamp("2024-04-11 12:00", tz="Europe/Berlin").tz_convert("UTC")
    assert f.known_at <= f.issued_at and f.max_age_s > 0 and f.stale_hours == 0
    body = f.to_api("r1")
    assert body["model"]["version"] == f.model_version and body["features"]["snapshot_id"] is not None
    assert [h["values"]["q50"] for h in body["hours"]] == list(f.values[:, 1])


def test_spring_dst_day_has_23_hours(runtime, served_env):
    f = runtime.forecast(MARKET, dt.date(2024, 3, 31), Q)
    assert len(f.delivery_start) == 23 and 2 not in set(f.local_hour)
    np.testing.assert_allclose(f.values, oracle(served_env, dt.date(2024, 3, 31)), rtol=1e-12)


def test_stale_features_fall_back_to_the_weekly_naive_baseline(runtime, served_env):
    day = dt.date(2024, 4, 18)  # features end with the data on 2024-04-15; prices a week before are known
    f = runtime.forecast(MARKET, day, Q)
    assert f.quality == "degraded" and f.model_alias == "baseline"
    assert "missing" in f.quality_reason and "weekly-naive baseline" in f.quality_reason
    prices = MarketData(served_env.lake).prices(MARKET, "2024-04-10T22:00:00+00:00", "2024-04-11T22:00:00+00:00")
    np.testing.assert_allclose(f.values[:, 1], prices.sort_values("delivery_start")["price"].to_numpy())
    assert (f.values[:, 0] <= f.values[:, 1]).all() and (f.values[:, 1] <= f.values[:, 2]).all()


def test_no_features_and_no_prices_is_a_clear_error(runtime):
    with pytest.raises(ForecastUnavailableError, match="no prices"):
        runtime.forecast(MARKET, dt.date(2020, 1, 10), Q)


def test_bad_requests_name_the_field(runtime):
    with pytest.raises(ForecastRequestError, match="quantiles \\[0.3\\]") as e:
        runtime.forecast(MARKET, dt.date(2024, 4, 12), (0.3, 0.5))
    assert e.value.field == "quantiles"
    with pytest.raises(ForecastRequestError, match="outside the accepted range") as e:
        runtime.forecast(MARKET, dt.date.today() + dt.timedelta(days=30), Q)
    assert e.value.field == "delivery_day"
    with pytest.raises(ForecastUnavailableError, match="no approved model served here"):
        runtime.forecast("SYN_SOUTH", dt.date(2024, 4, 12), Q)  # a known market without a champion here
    with pytest.raises(UnknownMarketError, match="NOPE"):
        runtime.forecast("NOPE", dt.date(2024, 4, 12), Q)


def test_the_cache_answers_only_identical_inputs(runtime, served_env):
    day = dt.date(2024, 4, 10)
    first = runtime.forecast(MARKET, day, Q)
    again = runtime.forecast(MARKET, day, Q)
    assert again.cached and np.array_equal(first.values, again.values)
    high = Scenario(name="high-load", overrides=[Override(feature="load_forecast_mw", op="scale", value=1.1)])
    what_if = runtime.forecast(MARKET, day, Q, scenario=high)
    assert not what_if.cached and what_if.scenario == "high-load"
    assert {c.feature for c in what_if.changes} == {"load_forecast_mw", "residual_load_mw"}

    def scaled(frame):
        frame = frame.copy()
        frame["load_forecast_mw"] *= 1.1
        frame["residual_load_mw"] = residual_load(frame["load_forecast_mw"], frame["wind_forecast_mw"],
                                                  frame["solar_forecast_mw"])
        return frame

    np.testing.assert_allclose(what_if.values, oracle(served_env, day, scaled), rtol=1e-9)
    assert not np.allclose(what_if.values, first.values)


def test_an_unreachable_registry_keeps_the_last_good_model(served_env):
    rt = ForecastRuntime.open(served_env.settings, archive=False)
    try:
        version = rt.book.champion(MARKET).version
        rt.book.tracking_uri = "postgresql+psycopg2://nobody:secret@127.0.0.1:1/none"  # nothing listens on port 1
        ml.configure(rt.book.tracking_uri)
        outcome = rt.book.refresh()
        assert "kept last good model" in outcome[MARKET]
        state = rt.book.status()[MARKET]
        assert state["registry_ok"] is False and "does not answer" in state["error"] and "secret" not in state["error"]
        assert rt.forecast(MARKET, dt.date(2024, 4, 12), Q).model_version == version
    finally:
        rt.book.tracking_uri = served_env.settings.mlflow_tracking_uri()
        ml.configure(rt.book.tracking_uri)
        rt.close()
    assert rt.book.refresh()[MARKET] == "unchanged" and rt.book.status()[MARKET]["registry_ok"]


def test_a_lag_of_the_hour_dst_removed_is_no_reason_to_fall_back(runtime, served_env):
    """2024-04-01's one-day lag of 02:00 does not exist (2024-03-31 skipped it): the model still answers."""
    f = runtime.forecast(MARKET, dt.date(2024, 4, 1), Q)
    assert f.quality == "ok" and f.missing_inputs >= 1
    np.testing.assert_allclose(f.values, oracle(served_env, dt.date(2024, 4, 1)), rtol=1e-12)


def test_a_second_start_reads_the_online_store_through_the_saved_plan(runtime, served_env):
    from features.online import OnlineReader, plan_path

    assert plan_path(served_env.settings.home_dir / "feast", "day_ahead_v1").exists()  # saved by the first start
    second = ForecastRuntime.open(served_env.settings, archive=False)
    try:
        assert type(second.online) is OnlineReader  # not featurestore.OnlineFeatures: no Feast behind it
        for day in (dt.date(2024, 4, 12), dt.date(2024, 3, 31)):
            np.testing.assert_array_equal(second.forecast(MARKET, day, Q).values, runtime.forecast(MARKET, day, Q).values)
    finally:
        second.close()
