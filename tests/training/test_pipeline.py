"""The training pipeline end to end on the synthetic market: real Feast, a real MLflow store (SQLite)."""

import datetime as dt
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from features import featurestore
from features.errors import ConfigurationError, RegistryError, RegistryUnavailableError, TrainingDataError, UnknownMarketError
from features.settings import AurumSettings, MlflowSettings
from models import mlflow_model as ml
from training import approval, pipeline, tracking
from training.specs import ModelSpec

MARKET = "SYN_NORTH"


@pytest.fixture
def settings(market_env, tmp_path):
    """The shared market's lake and feature store, with an MLflow store of this test alone."""
    return AurumSettings(home=market_env.settings.home, mlflow=MlflowSettings(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=(tmp_path / "artifacts").as_uri()))


def test_train_register_approve_reject_rollback_and_serve_the_champion(settings, market_env, tmp_path):
    session = pipeline.Session.open(settings)
    name = tracking.model_name(settings, MARKET)
    # The weekly naive forecast cannot become the first champion: it does not beat itself.
    naive = pipeline.train(settings, MARKET, ModelSpec.of("naive"), backtest_days=21, session=session)
    assert naive.version == "1" and not naive.decision.promote and "rMAE" in naive.decision.reason
    assert ml.alias_version(name, approval.CHAMPION) is None
    assert ml.alias_version(name, approval.CHALLENGER).version == "1"

    # LEAR with the forecasts of D-1 and D-7: the lag view goes through Feast to training and serving
    lear_spec = ModelSpec.of("lear", windows=[56, 84], calibration_days=56, exogenous_lags="day_block")
    lear = pipeline.train(settings, MARKET, lear_spec, backtest_days=21, session=session)
    assert lear.decision.promote, lear.decision.reason
    assert ml.alias_version(name, approval.CHAMPION).version == lear.version == "2"
    assert lear.comparison.loc["candidate", "mae"] < lear.comparison.loc["naive", "mae"]

    run = ml.run_record(lear.run_id)
    assert run["params"]["feature_service"] == "day_ahead_v1" and run["params"]["model"] == "lear"
    assert "rmae" in run["metrics"] and "dm_p_vs_naive" in run["metrics"] and "naive.mae" in run["metrics"]
    assert any(k.startswith("lineage.snapshot:features.price_features") for k in run["tags"])
    assert run["tags"]["git_commit"] != ""
    record = ml.version(name, "2")
    assert ModelSpec.from_json(record.tags["model_spec"]) == lear_spec
    assert any(k.startswith("lineage.snapshot:features.exogenous_lag_features") for k in run["tags"])
    assert record.tags["approval.decision"] == "approved"
    # the registered model's feature importance: D-1's prices weigh in LEAR's coefficients; a plot beside it
    importance = pd.read_csv(ml.download_artifact(lear.run_id, "importance/feature_importance.csv", tmp_path / "dl"))
    assert set(importance["model"]) == {"LEAR"} and importance["share"].sum() == pytest.approx(1.0)
    assert {"price_lag_P1D", "load_forecast_mw_lag_P1D", "weekday"} <= set(importance["input"])
    assert importance.set_index("input").loc["price_lag_P1D", "share"] > importance["share"].median()
    assert Path(ml.download_artifact(lear.run_id, "plots/feature_importance.png", tmp_path / "dl")).stat().st_size > 0
    client = mlflow.MlflowClient()
    assert [a.path for a in client.list_artifacts(lear.run_id, "importance")] == ["importance/feature_importance.csv"]
    assert client.list_artifacts(naive.run_id, "importance") == []  # the naive weighs nothing

    # A worse candidate is rejected against the champion, on the same window, with the reason recorded.
    worse = pipeline.train(settings, MARKET, ModelSpec.of("naive"), backtest_days=21, session=session)
    assert not worse.decision.promote and "champion" in worse.decision.reason
    assert ml.alias_version(name, approval.CHAMPION).version == "2"
    assert ml.version(name, worse.version).tags["approval.decision"] == "rejected"

    # A person promotes version 3 anyway, then rolls back; both are recorded with who and why.
    assert pipeline.promote(settings, MARKET, worse.version, "testing the override", who="tester") == "2"
    assert ml.alias_version(name, approval.CHAMPION).version == worse.version
    assert pipeline.rollback(settings, MARKET, "override was a mistake", who="tester") == "2"
    assert ml.alias_version(name, approval.CHAMPION).version == "2"
    log = approval.history(settings, name)
    assert [e["action"] for e in log[:2]] == ["rollback", "promote"] and log[0]["who"] == "tester"
    assert log[0]["why"] == "override was a mistake"

    # Serving's view: load the champion by alias and forecast a day from the online store.
    featurestore.materialize(session.store, dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc),
                             dt.datetime(2024, 4, 16, tzinfo=dt.timezone.utc))
    online = featurestore.online_day(session.store, "day_ahead_v1", MARKET, dt.date(2024, 4, 12), "Europe/Berlin")
    model = ml.load_forecaster(f"models:/{name}@champion")
    lags = ["load_forecast_mw_lag_P1D", "wind_forecast_mw_lag_P7D"]
    assert set(lags) <= set(model.unwrap_python_model().metadata["input_columns"]) and online[lags].notna().all().all()
    out = model.predict(ml.pyfunc_input(online.drop(columns=["known_at", "feature_age", "stale"])),
                        params={"quantiles": [0.1, 0.5, 0.9]})
    assert len(out) == 24 and out[["q10", "q50", "q90"]].notna().all().all()
    # the lags are inputs: another D-1 forecast gives another forecast
    moved = online.drop(columns=["known_at", "feature_age", "stale"]).assign(
        load_forecast_mw_lag_P1D=online["load_forecast_mw_lag_P1D"] * 1.5)
    assert not np.allclose(model.predict(ml.pyfunc_input(moved), params={"quantiles": [0.5]})["q50"], out["q50"])
    assert (np.diff(out[["q10", "q50", "q90"]].to_numpy(), axis=1) >= 0).all()
    # A missing forecast input is a counted missing input; a missing local hour is a clear error,
    # and neither is a schema error of MLflow's (the signature declares features as doubles).
    gap = online.drop(columns=["known_at", "feature_age", "stale"])
    gap.loc[5, "load_forecast_mw"] = np.nan
    out = model.predict(ml.pyfunc_input(gap), params={"quantiles": [0.1, 0.5, 0.9]})
    assert len(out) == 24 and out["q50"].notna().all() and out.loc[5, "missing_inputs"] >= 1
    gap = gap.astype({"hour": "float64"})
    gap.loc[5, "hour"] = np.nan
    with pytest.raises(Exception, match="column 'hour' is missing in 1 rows"):
        model.predict(ml.pyfunc_input(gap), params={"quantiles": [0.1, 0.5, 0.9]})


def test_the_median_booster_runs_longer_and_slower_unless_told():
    gbm = ModelSpec.of("ensemble", n_estimators=20, learning_rate=0.2).build(calibrated=False).members[0]
    assert (gbm.n_estimators, gbm.median_n_estimators, gbm.median_learning_rate) == (20, 60, 0.1)
    gbm = ModelSpec.of("lgbm", median_n_estimators=25, median_learning_rate=0.3).build(calibrated=False)
    assert (gbm.n_estimators, gbm.median_n_estimators, gbm.median_learning_rate) == (200, 25, 0.3)
    assert gbm.median_seeds == 1
    assert ModelSpec.of("ensemble", median_seeds=2).build(calibrated=False).members[0].median_seeds == 2
    gbm = ModelSpec.of("ensemble", median_objective="quantile+l2").build(calibrated=False).members[0]
    assert (gbm.median_objective, gbm.median_seeds) == ("quantile+l2", 1)
    with pytest.raises(ConfigurationError, match="'median_objective' is 'l1'; expected one of quantile, l2"):
        ModelSpec.of("lgbm", median_objective="l1")
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ConfigurationError, match=f"'median_seeds' is {bad!r}; expected a whole number"):
            ModelSpec.of("ensemble", median_seeds=bad)


def test_bad_requests_fail_clearly_and_register_nothing(settings, tmp_path):
    with pytest.raises(ConfigurationError, match="unknown model 'xgb'"):
        ModelSpec.of("xgb")
    with pytest.raises(ConfigurationError, match="has no parameter 'depth'"):
        ModelSpec.of("lgbm", depth=3)
    with pytest.raises(ConfigurationError, match="'lear_recalibrate' is 'yes'; expected true or false"):
        ModelSpec.of("ensemble", lear_recalibrate="yes")  # a string would be truthy: refused, not guessed
    with pytest.raises(ConfigurationError, match="'target_transform' is 'log'; expected one of none, asinh, level"):
        ModelSpec.of("ensemble", target_transform="log")
    assert ModelSpec.of("ensemble", target_transform="level").build(calibrated=False).members[0].target_transform == "level"
    with pytest.raises(ConfigurationError, match="'exogenous_lags' is 'day_stats'; expected one of none, day_block"):
        ModelSpec.of("lear", exogenous_lags="day_stats")  # LEAR's inputs are day blocks
    with pytest.raises(ConfigurationError, match="'exogenous_lags' is True; expected one of none, day_stats, day_block"):
        ModelSpec.of("ensemble", exogenous_lags=True)
    for bad in (0, -1, "2", True, float("inf")):
        with pytest.raises(ConfigurationError, match="'lgbm_weight' is .*; expected a positive number"):
            ModelSpec.of("ensemble", lgbm_weight=bad)
    with pytest.raises(ConfigurationError, match="has no parameter 'lgbm_weight'"):
        ModelSpec.of("lgbm", lgbm_weight=2)
    ens = ModelSpec.of("ensemble", exogenous_lags="day_stats", lgbm_weight=2).build(calibrated=False)
    assert ens.weights == pytest.approx((2 / 3, 1 / 3))
    assert ens.members[0].exogenous_lags == "day_stats" and "load_forecast_mw_lag_P7D" in ens.members[1].exogenous
    # LEAR can take the forecasts of D-1 only (NP's recipe): fewer inputs for its LARS paths
    d1 = ModelSpec.of("ensemble", exogenous_lags="day_stats", lear_exogenous_lag_days=[1]).build(calibrated=False)
    lagged = [c for c in d1.members[1].exogenous if "_lag_" in c]
    assert lagged and all(c.endswith("_lag_P1D") for c in lagged)
    assert ModelSpec.of("lear", exogenous_lags="day_block", exogenous_lag_days=7).params["exogenous_lag_days"] == [7]
    assert ModelSpec.from_json(ModelSpec.of("ensemble", lear_exogenous_lag_days=[7, 1]).to_json()).params[
        "lear_exogenous_lag_days"] == [1, 7]
    for bad in ([], [2], "1", True, [1, None]):
        with pytest.raises(ConfigurationError, match="'lear_exogenous_lag_days' is .*; expected a non-empty list of "
                                                     r"days from \[1, 7\]"):
            ModelSpec.of("ensemble", exogenous_lags="day_stats", lear_exogenous_lag_days=bad)
    with pytest.raises(ConfigurationError, match="'lear_exogenous_lag_days' is \\[1\\] but 'exogenous_lags' is 'none'"):
        ModelSpec.of("ensemble", lear_exogenous_lag_days=[1])  # no lags to choose from: a mistake, not a no-op
    plain = ModelSpec.of("ensemble").build(calibrated=False)
    assert plain.weights == (0.5, 0.5) and not any("_lag_" in c for c in plain.members[1].exogenous)
    # LightGBM on a cross-fitted LEAR's residuals (NP's recipe): windows and daily recalibration of that LEAR
    anchored = ModelSpec.of("lgbm", target_transform="lear", anchor_windows=[728, 364], recalibrate=True)
    built = anchored.build(calibrated=False)
    assert built.anchor_windows == (364, 728) and built.recalibrates
    assert ModelSpec.from_json(anchored.to_json()) == anchored
    assert ModelSpec.of("ensemble", target_transform="lear", lear_recalibrate=True).build(calibrated=False).members[0].recalibrates
    assert not ModelSpec.of("ensemble", lear_recalibrate=True).build(calibrated=False).members[0].recalibrates
    for bad in ([], [3], 728, [True], ["728"]):
        with pytest.raises(ConfigurationError, match="'anchor_windows' is .*; expected a non-empty list of LEAR "
                                                     "calibration windows"):
            ModelSpec.of("lgbm", target_transform="lear", anchor_windows=bad)
    with pytest.raises(ConfigurationError, match="'anchor_windows' is \\[364\\] but 'target_transform' is 'level'"):
        ModelSpec.of("ensemble", target_transform="level", anchor_windows=[364])
    with pytest.raises(ConfigurationError, match="'recalibrate' is true but 'target_transform' is 'none'"):
        ModelSpec.of("lgbm", recalibrate=True)
    session = pipeline.Session.open(settings)
    with pytest.raises(UnknownMarketError):
        pipeline.train(settings, "NOWHERE", ModelSpec.of("naive"), session=session)
    with pytest.raises(TrainingDataError, match="needs at least"):
        pipeline.train(settings, MARKET, ModelSpec.of("naive"), backtest_days=400, session=session)
    assert ml.versions(tracking.model_name(settings, MARKET)) == []
    with pytest.raises(RegistryError, match="no champion"):
        pipeline.rollback(settings, MARKET, "nothing to roll back")
    # an unreachable registry fails before any work
    down = settings.model_copy(update={"mlflow": MlflowSettings(
        tracking_uri="postgresql+psycopg2://postgres@127.0.0.1:1/none")})
    with pytest.raises(RegistryUnavailableError, match="does not answer"):
        pipeline.train(down, MARKET, ModelSpec.of("naive"))
