"""What-if scenarios: overrides of known-in-advance inputs, the derived residual load, saved definitions.

The residual-load oracle: a scenario applied to a day's features must equal the feature tables'
own transform run on fundamentals changed the same way. Saved scenarios run on SQLite and on the
real PostgreSQL (skipped with the reason when absent, failed with CI=true).
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from features.errors import ScenarioError, ScenarioNotFoundError
from features.markets import BUILTIN_MARKETS
from features.synthetic import generate_market
from features.transforms import CalendarAdder, ExogenousAdder, PriceLagsAdder
from serving.scenarios import OVERRIDABLE, ChangedInput, Override, Scenario, ScenarioStore, apply, apply_vectors

MARKET = next(m for m in BUILTIN_MARKETS if m.code == "SYN_NORTH")  # Europe/Berlin


def fundamentals(day: dt.date, seed: int = 5) -> pd.DataFrame:
    f = generate_market(MARKET.code, day, day + dt.timedelta(days=1), seed=seed)
    return f.assign(issued_at=f["delivery_start"].min() - pd.Timedelta(hours=14))


def features_of(f: pd.DataFrame) -> pd.DataFrame:
    """A day's feature rows shaped like ``OnlineFeatures.day()``: keys, price, exogenous, calendar, freshness."""
    exo = ExogenousAdder().transform(f, MARKET).drop(columns=["known_at"])
    rng = np.random.default_rng(0)
    prices = pd.DataFrame(rng.normal(60, 10, (len(exo), len(PriceLagsAdder().feature_names))),
                          columns=PriceLagsAdder().feature_names)
    cal = CalendarAdder().transform(exo["delivery_start"], MARKET)
    frame = pd.concat([exo[["market", "delivery_start"]], prices, exo.drop(columns=["market", "delivery_start"]), cal],
                      axis=1)
    return frame.assign(missing_features=0, stale=False)


def scenario(*overrides: dict, name: str = "what-if") -> Scenario:
    return Scenario(name=name, overrides=[Override(**o) for o in overrides])


@pytest.fixture
def day():
    return dt.date(2024, 6, 12)


@pytest.fixture
def frame(day):
    return features_of(fundamentals(day))


# --- the three operations -----------------------------------------------------------------------------------------


def test_scale_add_and_set_on_every_hour(frame):
    out, changes = apply(scenario({"feature": "load_forecast_mw", "op": "scale", "value": 1.1},
                                  {"feature": "fuel_price_eur_mwh", "op": "add", "value": 12.5},
                                  {"feature": "generation_forecast_mw", "op": "set", "value": 30_000}), frame)
    np.testing.assert_allclose(out["load_forecast_mw"], frame["load_forecast_mw"] * 1.1, rtol=0, atol=0)
    np.testing.assert_allclose(out["fuel_price_eur_mwh"], frame["fuel_price_eur_mwh"] + 12.5, rtol=0, atol=0)
    assert (out["generation_forecast_mw"] == 30_000).all()
    untouched = [c for c in frame.columns if c not in
                 ("load_forecast_mw", "fuel_price_eur_mwh", "generation_forecast_mw", "residual_load_mw")]
    pd.testing.assert_frame_equal(out[untouched], frame[untouched])
    assert frame["load_forecast_mw"].equals(features_of(fundamentals(dt.date(2024, 6, 12)))["load_forecast_mw"])
    by = {c.feature: c for c in changes}
    assert list(by) == ["load_forecast_mw", "fuel_price_eur_mwh", "generation_forecast_mw", "residual_load_mw"]
    assert by["load_forecast_mw"].hours == list(range(24)) and not by["load_forecast_mw"].derived
    assert by["load_forecast_mw"].old_mean == pytest.approx(frame["load_forecast_mw"].mean())
    assert by["load_forecast_mw"].new_mean == pytest.approx(frame["load_forecast_mw"].mean() * 1.1)
    assert by["generation_forecast_mw"].new_mean == 30_000
    assert by["residual_load_mw"].derived


def test_hour_subsets_change_only_those_local_hours(frame):
    out, changes = apply(scenario({"feature": "wind_forecast_mw", "op": "scale", "value": 0.5, "hours": [18, 8, 9]}),
                         frame)
    hit = frame["hour"].isin([8, 9, 18]).to_numpy()
    np.testing.assert_array_equal(out.loc[hit, "wind_forecast_mw"], frame.loc[hit, "wind_forecast_mw"] * 0.5)
    np.testing.assert_array_equal(out.loc[~hit, "wind_forecast_mw"], frame.loc[~hit, "wind_forecast_mw"])
    np.testing.assert_array_equal(out.loc[~hit, "residual_load_mw"], frame.loc[~hit, "residual_load_mw"])
    assert [(c.feature, c.hours) for c in changes] == [("wind_forecast_mw", [8, 9, 18]),
                                                       ("residual_load_mw", [8, 9, 18])]
    assert changes[0].old_mean == pytest.approx(frame.loc[hit, "wind_forecast_mw"].mean())


def test_on_the_autumn_dst_day_an_hour_matches_both_repeated_local_hours():
    f = features_of(fundamentals(dt.date(2024, 10, 27)))
    assert len(f) == 25 and (f["hour"] == 2).sum() == 2
    out, changes = apply(scenario({"feature": "load_forecast_mw", "op": "add", "value": 1000, "hours": [2]}), f)
    assert (out["load_forecast_mw"] != f["load_forecast_mw"]).sum() == 2
    assert changes[0].hours == [2]


def test_overrides_apply_in_order(frame):
    first_scale = apply(scenario({"feature": "load_forecast_mw", "op": "scale", "value": 2},
                                 {"feature": "load_forecast_mw", "op": "add", "value": 100}), frame)[0]
    first_add = apply(scenario({"feature": "load_forecast_mw", "op": "add", "value": 100},
                               {"feature": "load_forecast_mw", "op": "scale", "value": 2}), frame)[0]
    np.testing.assert_allclose(first_scale["load_forecast_mw"], frame["load_forecast_mw"] * 2 + 100)
    np.testing.assert_allclose(first_add["load_forecast_mw"], (frame["load_forecast_mw"] + 100) * 2)


def test_an_override_that_changes_nothing_is_not_reported(frame):
    out, changes = apply(scenario({"feature": "solar_forecast_mw", "op": "scale", "value": 1.0}), frame)
    assert changes == []
    pd.testing.assert_frame_equal(out, frame)
    night = scenario({"feature": "solar_forecast_mw", "op": "scale", "value": 3.0, "hours": [0, 1, 2]})
    assert (frame.loc[frame["hour"] <= 2, "solar_forecast_mw"] == 0).all()  # 0 * 3 is still 0
    assert apply(night, frame)[1] == []


# --- residual load ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [
    [{"feature": "wind_forecast_mw", "op": "scale", "value": 1.3}],
    [{"feature": "solar_forecast_mw", "op": "add", "value": 2500.0, "hours": [10, 11, 12, 13, 14]},
     {"feature": "load_forecast_mw", "op": "scale", "value": 0.95, "hours": [12, 13, 20]}],
    [{"feature": "load_forecast_mw", "op": "set", "value": 52_000.0, "hours": [7]}],
])
def test_residual_load_equals_the_feature_tables_own(day, overrides):
    """Oracle: change the fundamentals the same way and let ExogenousAdder compute the features."""
    f = fundamentals(day)
    s = scenario(*overrides)
    out, changes = apply(s, features_of(f))
    changed = f.copy()
    local_hour = changed["delivery_start"].dt.tz_convert(MARKET.timezone).dt.hour
    for o in s.overrides:
        rows = local_hour.isin(o.hours) if o.hours else slice(None)
        col = changed.loc[rows, o.feature]
        changed.loc[rows, o.feature] = (col * o.value if o.op == "scale" else col + o.value if o.op == "add"
                                        else o.value)
    expected = ExogenousAdder().transform(changed, MARKET)
    np.testing.assert_array_equal(out["residual_load_mw"].to_numpy(), expected["residual_load_mw"].to_numpy())
    np.testing.assert_array_equal(out[list(OVERRIDABLE)].to_numpy(), expected[list(OVERRIDABLE)].to_numpy())
    derived = [c for c in changes if c.feature == "residual_load_mw"]
    assert len(derived) == 1 and derived[0].derived
    assert derived[0].hours == sorted({h for o in s.overrides for h in (o.hours or range(24))})


def test_residual_load_is_untouched_by_inputs_it_does_not_depend_on(frame):
    out, changes = apply(scenario({"feature": "generation_forecast_mw", "op": "scale", "value": 1.2},
                                  {"feature": "fuel_price_eur_mwh", "op": "scale", "value": 2.0}), frame)
    assert out["residual_load_mw"].equals(frame["residual_load_mw"])
    assert "residual_load_mw" not in {c.feature for c in changes}


# --- missing inputs -----------------------------------------------------------------------------------------------


def test_missing_inputs_stay_missing_and_are_not_reported(day):
    f = fundamentals(day)
    f.loc[f.index[5:8], "wind_forecast_mw"] = np.nan
    f["fuel_price_eur_mwh"] = np.nan
    frame = features_of(f)
    assert frame["residual_load_mw"].isna().sum() == 3
    out, changes = apply(scenario({"feature": "wind_forecast_mw", "op": "set", "value": 900.0},
                                  {"feature": "fuel_price_eur_mwh", "op": "set", "value": 40.0}), frame)
    missing = frame["wind_forecast_mw"].isna()
    assert out.loc[missing, "wind_forecast_mw"].isna().all() and out.loc[missing, "residual_load_mw"].isna().all()
    assert (out.loc[~missing, "wind_forecast_mw"] == 900.0).all()
    assert out["fuel_price_eur_mwh"].isna().all()
    by = {c.feature: c for c in changes}
    assert set(by) == {"wind_forecast_mw", "residual_load_mw"}
    assert by["wind_forecast_mw"].hours == [h for h in range(24) if h not in (5, 6, 7)]
    assert np.isfinite([by["wind_forecast_mw"].old_mean, by["residual_load_mw"].new_mean]).all()


# --- validation ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("feature, message", [
    ("price_lag_P1D", "feature 'price_lag_P1D' is a price lag"),
    ("price_rolling_mean_P7D", "feature 'price_rolling_mean_P7D' is a price lag"),
    ("hour", "feature 'hour' is a calendar feature"),
    ("is_holiday", "feature 'is_holiday' is a calendar feature"),
    ("residual_load_mw", "feature 'residual_load_mw' is derived from load_forecast_mw, wind_forecast_mw, "
                         "solar_forecast_mw"),
    ("wind_mw", "unknown feature 'wind_mw'"),
])
def test_only_known_in_advance_inputs_may_be_overridden(feature, message):
    with pytest.raises(ValidationError) as err:
        Override(feature=feature, op="scale", value=1.1)
    text = str(err.value)
    assert message in text and "feature" in text
    assert "overridable: load_forecast_mw, wind_forecast_mw, solar_forecast_mw, generation_forecast_mw, " \
           "fuel_price_eur_mwh" in text


@pytest.mark.parametrize("fields, message", [
    ({"op": "scale", "value": -0.5}, "scale factor of 'load_forecast_mw' must be finite and >= 0, got -0.5"),
    ({"op": "scale", "value": float("inf")}, "scale factor of 'load_forecast_mw' must be finite and >= 0, got inf"),
    ({"op": "add", "value": float("nan")}, "add amount of 'load_forecast_mw' must be finite, got nan"),
    ({"op": "set", "value": float("inf")}, "set value of 'load_forecast_mw' must be finite and >= 0, got inf"),
    ({"op": "set", "value": -1.0}, "set value of 'load_forecast_mw' must be finite and >= 0, got -1.0"),
    ({"op": "scale", "value": 1, "hours": [24]}, "hours [24] out of range; expected local delivery hours 0..23"),
    ({"op": "scale", "value": 1, "hours": [3, -1]}, "hours [-1] out of range"),
    ({"op": "scale", "value": 1, "hours": [3, 4, 3]}, "hours [3] given more than once; expected each hour once"),
    ({"op": "scale", "value": 1, "hours": []}, "hours is empty; expected local hours 0..23, or null"),
    ({"op": "multiply", "value": 1}, "Input should be 'scale', 'add' or 'set'"),
    ({"op": "scale", "value": 1, "hour": [3]}, "Extra inputs are not permitted"),
])
def test_override_validation_names_the_field_and_the_expectation(fields, message):
    with pytest.raises(ValidationError) as err:
        Override(feature="load_forecast_mw", **fields)
    assert message in str(err.value)


def test_scenario_validation():
    ok = {"feature": "load_forecast_mw", "op": "scale", "value": 1.05}
    assert Scenario(name="high-load_2", overrides=[ok]).features == ["load_forecast_mw"]
    for name in ("High Load", "", "-lead", "a" * 65, "ok\n"):
        with pytest.raises(ValidationError, match=re.escape(f"scenario name {name!r} is not a slug; expected")):
            Scenario(name=name, overrides=[ok])
    with pytest.raises(ValidationError, match="overrides\n.*at least 1 item"):
        Scenario(name="none", overrides=[])
    with pytest.raises(ValidationError, match="overrides\n.*at most 20 items"):
        Scenario(name="many", overrides=[ok] * 21)
    assert len(Scenario(name="twenty", overrides=[ok] * 20).overrides) == 20
    # A scenario arrives as JSON in the service and is stored as JSON: the round trip is lossless.
    s = Scenario(name="mix", description="d", overrides=[ok, {"feature": "wind_forecast_mw", "op": "add",
                                                              "value": -500, "hours": [9, 3]}])
    assert Scenario.model_validate_json(s.model_dump_json()) == s
    assert s.overrides[1].hours == [3, 9]


def test_an_override_that_makes_an_input_impossible_is_an_error(frame):
    with pytest.raises(ScenarioError, match=r"scenario 'what-if': add -1e\+06 makes 'wind_forecast_mw' -\d.* at local "
                                            r"hour 0; expected a finite value >= 0"):
        apply(scenario({"feature": "wind_forecast_mw", "op": "add", "value": -1e6}), frame)


# --- the array path -----------------------------------------------------------------------------------------------


def test_apply_vectors_matches_apply_and_leaves_its_input_alone(frame):
    s = scenario({"feature": "wind_forecast_mw", "op": "scale", "value": 1.2, "hours": [3, 4]},
                 {"feature": "load_forecast_mw", "op": "add", "value": -800})
    names = [c for c in frame.columns if c in ExogenousAdder().feature_names or c.startswith("price_")]
    values = frame[names].to_numpy(dtype=float)
    before = values.copy()
    new, changes = apply_vectors(s, names, values, frame["hour"].to_numpy())
    np.testing.assert_array_equal(values, before)
    out, frame_changes = apply(s, frame)
    np.testing.assert_array_equal(new, out[names].to_numpy(dtype=float))
    assert changes == frame_changes
    assert all(isinstance(c, ChangedInput) for c in changes)


def test_apply_vectors_needs_the_overridden_inputs_and_the_parts_of_residual_load(frame):
    hours = frame["hour"].to_numpy()
    s = scenario({"feature": "wind_forecast_mw", "op": "scale", "value": 1.2})
    with pytest.raises(ScenarioError, match=r"overrides 'wind_forecast_mw', which is not among the inputs "
                                            r"\(load_forecast_mw, residual_load_mw\)"):
        apply_vectors(s, ["load_forecast_mw", "residual_load_mw"],
                      frame[["load_forecast_mw", "residual_load_mw"]].to_numpy(), hours)
    names = ["wind_forecast_mw", "residual_load_mw"]
    with pytest.raises(ScenarioError, match=r"'residual_load_mw' is among the inputs but its parts "
                                            r"\['load_forecast_mw', 'solar_forecast_mw'\] are not"):
        apply_vectors(s, names, frame[names].to_numpy(), hours)
    with pytest.raises(ScenarioError, match=r"values of shape \(24, 2\) do not match 3 feature names"):
        apply_vectors(s, [*names, "x"], frame[names].to_numpy(), hours)
    with pytest.raises(ScenarioError, match=r"local_hours of shape \(23,\); expected one local hour per row \(24\)"):
        apply_vectors(s, ["wind_forecast_mw"], frame[["wind_forecast_mw"]].to_numpy(), hours[:-1])
    # Without residual load among the inputs, wind alone is enough.
    new, changes = apply_vectors(s, ["wind_forecast_mw"], frame[["wind_forecast_mw"]].to_numpy(), hours)
    assert [c.feature for c in changes] == ["wind_forecast_mw"]


def test_local_hours_come_from_the_hour_column_or_the_time_zone(frame):
    s = scenario({"feature": "load_forecast_mw", "op": "add", "value": 10, "hours": [12]})
    no_hour = frame.drop(columns=["hour"])
    with pytest.raises(ScenarioError, match="no complete 'hour' column.*pass timezone="):
        apply(s, no_hour)
    out, changes = apply(s, no_hour, timezone=MARKET.timezone)
    assert changes[0].hours == [12]
    assert out.equals(apply(s, frame)[0].drop(columns=["hour"]))


# --- the real online lookup ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_scenario_on_the_online_stores_day_matches_the_lakes_fundamentals(tmp_path):
    """End to end: features computed and materialized from the lake, read back with OnlineFeatures.day()."""
    from marketenv import build_env

    from features import featurestore
    from features.marketdata import MarketData

    env = build_env(tmp_path / "home", dt.date(2024, 3, 20), dt.date(2024, 4, 3))
    featurestore.materialize(env.store, dt.datetime(2024, 3, 20, tzinfo=dt.timezone.utc),
                             dt.datetime(2024, 4, 5, tzinfo=dt.timezone.utc))
    the_day = dt.date(2024, 3, 31)  # spring DST: 23 hours, local hour 2 does not exist
    online = featurestore.OnlineFeatures(env.store, "day_ahead_v1").day(MARKET.code, the_day, MARKET.timezone)
    assert len(online) == 23
    s = scenario({"feature": "wind_forecast_mw", "op": "scale", "value": 0.4, "hours": [1, 2, 3]},
                 {"feature": "solar_forecast_mw", "op": "add", "value": 300})
    out, changes = apply(s, online)
    assert list(out.columns) == list(online.columns) and (out.dtypes == online.dtypes).all()

    lo = pd.Timestamp(the_day).tz_localize(MARKET.timezone)
    f = MarketData(env.lake).fundamentals(MARKET.code, lo, lo + pd.Timedelta(hours=23))
    local_hour = f["delivery_start"].dt.tz_convert(MARKET.timezone).dt.hour
    f.loc[local_hour.isin([1, 2, 3]), "wind_forecast_mw"] *= 0.4
    f["solar_forecast_mw"] += 300
    expected = ExogenousAdder().transform(f, MARKET)
    np.testing.assert_array_equal(out["residual_load_mw"].to_numpy(), expected["residual_load_mw"].to_numpy())
    assert [(c.feature, c.hours) for c in changes][0] == ("wind_forecast_mw", [1, 3])
    assert {c.feature for c in changes} == {"wind_forecast_mw", "solar_forecast_mw", "residual_load_mw"}


# --- saved scenarios ----------------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def scenario_store(request, settings):
    s = settings if request.param == "sqlite" else request.getfixturevalue("pg_serving_settings")
    store = ScenarioStore.open(s)
    yield store
    store.close()


def test_saved_scenarios_round_trip_with_versions(scenario_store):
    first = Scenario(name="cold-snap", description="load up 8 %",
                     overrides=[Override(feature="load_forecast_mw", op="scale", value=1.08)])
    saved = scenario_store.save("acme", first, saved_by="key 1")
    assert (saved.version, saved.name, saved.tenant, saved.saved_by) == (1, "cold-snap", "acme", "key 1")
    assert scenario_store.get("acme", "cold-snap").scenario == first

    second = Scenario(name="cold-snap", description="load up 12 %, calm evening",
                      overrides=[Override(feature="load_forecast_mw", op="scale", value=1.12),
                                 Override(feature="wind_forecast_mw", op="scale", value=0.3, hours=[17, 18, 19])])
    again = scenario_store.save("acme", second, saved_by="key 2")
    assert again.version == 2 and again.created_at == saved.created_at and again.updated_at >= saved.updated_at
    loaded = scenario_store.get("acme", "cold-snap")
    assert loaded.scenario == second and loaded.version == 2 and loaded.saved_by == "key 2"
    assert scenario_store.save("acme", second).version == 3


def test_tenants_see_only_their_own_scenarios(scenario_store):
    s = Scenario(name="calm", overrides=[Override(feature="wind_forecast_mw", op="scale", value=0.2)])
    scenario_store.save("acme", s)
    scenario_store.save("acme", s.model_copy(update={"name": "bright"}))
    scenario_store.save("beta", s)
    assert [x.name for x in scenario_store.list("acme")] == ["bright", "calm"]
    assert [x.name for x in scenario_store.list("beta")] == ["calm"]
    assert scenario_store.list("gamma") == []
    with pytest.raises(ScenarioNotFoundError, match="no saved scenario 'bright' for tenant 'beta'; saved: calm"):
        scenario_store.get("beta", "bright")


def test_delete_removes_one_scenario_and_names_a_missing_one(scenario_store):
    s = Scenario(name="calm", overrides=[Override(feature="wind_forecast_mw", op="scale", value=0.2)])
    scenario_store.save("acme", s)
    scenario_store.save("beta", s)
    scenario_store.delete("acme", "calm")
    assert scenario_store.list("acme") == [] and [x.name for x in scenario_store.list("beta")] == ["calm"]
    with pytest.raises(ScenarioNotFoundError, match="no saved scenario 'calm' for tenant 'acme'; saved: none"):
        scenario_store.delete("acme", "calm")
    # Saving the name again starts a new history.
    assert scenario_store.save("acme", s).version == 1


def test_a_saved_scenario_reruns_to_the_same_result(scenario_store, frame):
    s = scenario({"feature": "solar_forecast_mw", "op": "scale", "value": 1.5, "hours": list(range(9, 17))},
                 name="sunny")
    scenario_store.save("acme", s)
    rerun = scenario_store.get("acme", "sunny").scenario
    a, ca = apply(s, frame)
    b, cb = apply(rerun, frame)
    pd.testing.assert_frame_equal(a, b)
    assert ca == cb and ca


def test_scenarios_and_keys_share_one_database(settings):
    from features.markets import MarketRegistry
    from serving.keys import KeyStore

    with ScenarioStore.open(settings) as scenarios, KeyStore.open(settings, registry=MarketRegistry()) as keys:
        assert str(scenarios.engine.url) == str(keys.engine.url) == f"sqlite:///{settings.home_dir / 'serving.db'}"
        tables = set(sa.inspect(scenarios.engine).get_table_names())
    assert {"api_keys", "scenarios"} <= tables
