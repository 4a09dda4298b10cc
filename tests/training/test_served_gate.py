"""The approval gate against the served champion (``--against served``) and training as of a past day
(``--as-of``), on the synthetic market and a copy of it with a regime shift, through real Feast and a real
MLflow store (SQLite).

Both markets get the same champion: trained as of the shift day, so it knows nothing of the shift (the
generator is prefix-stable: the two lakes differ only in rows of delivery days from the shift on). Three
weeks later the champion's own recipe is trained again. On the shifted market the fresh fit beats the stale
served model by far, but the recipe gate cannot see it (the same recipe on the same window ties); the served
gate promotes it. On the stable market a fresh fit is no better than the served one, and stays challenger.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.cli import app
from features.errors import TrainingDataError
from features.settings import AurumSettings, MlflowSettings
from features.synthetic import RegimeShift
from marketenv import MarketEnv, build_env
from models import mlflow_model as ml
from models.metrics import score
from training import approval, dataset, pipeline, tracking
from training.specs import ModelSpec

MARKET = "SYN_NORTH"
NAME = f"day_ahead_{MARKET}"
SHIFT = dt.date(2024, 2, 15)  # first day of the new regime, and the champion's as-of day
RETRAIN = dt.date(2024, 3, 7)  # three weeks later: the backtest 2024-02-22 .. 2024-03-06 is all after the champion's data
# The gate's decisions are under test, not the model: a small booster whose median boosts like its tails
# (on these 14 judged days the default slower median moved one hour's error past the hour check too).
SPEC = ModelSpec.of("lgbm", n_estimators=60, median_n_estimators=60, median_learning_rate=0.1, calibration_days=28)


def own_store(env: MarketEnv, folder) -> AurumSettings:
    """The env's lake and feature store with an MLflow store in ``folder``."""
    return AurumSettings(home=env.settings.home, mlflow=MlflowSettings(
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", artifact_root=(folder / "artifacts").as_uri()))


def fork(settings: AurumSettings, folder) -> AurumSettings:
    """A copy of ``settings``' MLflow store in ``folder`` (the same artifacts), for a test that moves aliases."""
    folder.mkdir(parents=True, exist_ok=True)
    source = settings.mlflow_tracking_uri()[len("sqlite:///"):]
    shutil.copy(source, folder / "mlflow.db")
    return settings.model_copy(update={"mlflow": MlflowSettings(
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", artifact_root=settings.mlflow_artifact_root())})


def train(settings: AurumSettings, as_of: dt.date, **options) -> pipeline.TrainResult:
    """``aurum train`` of the champion's recipe as of ``as_of``, 14-day backtest, no baselines."""
    return pipeline.train(settings, MARKET, SPEC, backtest_days=14, baselines=(), as_of=as_of,
                          session=pipeline.Session.open(settings), **options)


@pytest.fixture(scope="module")
def shifted_env(tmp_path_factory) -> MarketEnv:
    return build_env(tmp_path_factory.mktemp("shifted") / "home", shift=RegimeShift(start=SHIFT))


@pytest.fixture(scope="module")
def markets(market_env, shifted_env, tmp_path_factory) -> dict[str, tuple[AurumSettings, pipeline.TrainResult]]:
    """Each market with its champion (version 1) trained as of the shift day, in an MLflow store of its own."""
    out = {}
    for key, env in (("stable", market_env), ("shifted", shifted_env)):
        settings = own_store(env, tmp_path_factory.mktemp(f"mlflow-{key}"))
        result = train(settings, SHIFT)
        assert result.version == "1" and result.decision.promote, result.decision.reason
        out[key] = (settings, result)
    return out


def cli(settings: AurumSettings, monkeypatch, *args: str):
    monkeypatch.setenv("AURUM_HOME", str(settings.home))
    monkeypatch.setenv("AURUM_MLFLOW__TRACKING_URI", settings.mlflow_tracking_uri())
    monkeypatch.setenv("AURUM_MLFLOW__ARTIFACT_ROOT", settings.mlflow_artifact_root())
    return CliRunner().invoke(app, list(args))


def test_a_retrain_on_a_shifted_market_ties_with_the_champions_recipe_but_beats_the_served_champion(
        markets, shifted_env, monkeypatch):
    settings, _ = markets["shifted"]
    # The recipe gate: the same recipe backtested on the same window and data is the candidate itself.
    recipe = train(settings, RETRAIN).decision
    assert not recipe.promote and recipe.against == "recipe" and recipe.candidate["mae"] == recipe.champion["mae"]
    assert "against the recipe of champion v1 (lgbm)" in recipe.reason and "not at least 1.0% below" in recipe.reason

    # The same version judged against the served champion, frozen: `aurum approve --against served`.
    out = cli(settings, monkeypatch, "approve", "--market", MARKET, "--version", "2", "--against", "served")
    assert out.exit_code == 0, out.output
    assert (f"{NAME} version 2: champion: against the served champion v1 (frozen, fitted on days up to 2024-02-14) "
            "on 2024-02-22 .. 2024-03-06: MAE ") in out.output
    tracking.open_tracking(settings)
    assert ml.alias_version(NAME, approval.CHAMPION).version == "2"
    tags = ml.version(NAME, "2").tags
    assert (tags["approval.decision"], tags["approval.against"], tags["approval.champion_version"],
            tags["approval.judged_days"]) == ("approved", "served", "1", "2024-02-22..2024-03-06")
    metrics = json.loads(tags["approval.metrics"])
    # the candidate is the same rolling backtest both times; the stale model errs several times more
    assert metrics["candidate"]["mae"] == pytest.approx(recipe.candidate["mae"])
    assert metrics["champion"]["mae"] > 2 * metrics["candidate"]["mae"]

    # The champion's numbers are the registered version 1's own forecasts of those days (no refit), from the
    # features as known at each day's issue time.
    data = dataset.load(shifted_env.store, shifted_env.lake, MARKET, dt.date(2024, 2, 22), dt.date(2024, 3, 7),
                        service="day_ahead_v1")
    model = ml.load_forecaster(f"models:/{NAME}/1")
    columns = list(model.metadata.get_input_schema().input_names())
    frozen = model.predict(ml.pyfunc_input(data.frame[columns]), params={"quantiles": [0.1, 0.5, 0.9]})
    m = score(data.frame["target"], frozen[["q10", "q50", "q90"]])
    assert metrics["champion"]["mae"] == pytest.approx(float(m.loc[(m["hour"] == "all") & (m["metric"] == "mae"), "value"].item()))

    # What the candidate was compared with shows in the registry's history and the version list.
    history = cli(settings, monkeypatch, "models", "history", "--market", MARKET)
    assert history.exit_code == 0 and "approve   v2    -> champion   (was v1) by aurum approve [against served]: " \
        "against the served champion v1" in history.output
    listed = cli(settings, monkeypatch, "models", "list", "--market", MARKET)
    assert "approved: [served] against the served champion v1" in listed.output


def test_a_retrain_on_a_stable_market_does_not_displace_the_served_champion(markets):
    settings, _ = markets["stable"]
    result = train(settings, RETRAIN, against="served")
    d = result.decision
    assert not d.promote and d.against == "served" and d.champion_version == "1"
    assert d.judged == ("2024-02-22", "2024-03-06")
    assert d.checks == {"no_missing_forecast": True, "interval_calibrated": True, "better_than_champion": False,
                        "no_hour_much_worse": True}
    assert "against the served champion v1 (frozen" in d.reason and "not at least 1.0% below" in d.reason
    assert ml.alias_version(NAME, approval.CHAMPION).version == "1"
    assert ml.alias_version(NAME, approval.CHALLENGER).version == result.version


def test_the_served_champions_in_sample_days_are_not_judged_and_too_few_others_are_an_error(markets, tmp_path):
    settings = fork(markets["stable"][0], tmp_path / "mlflow")
    before = len(ml.versions(NAME))
    # as of 20 February the 14-day window starts on 6 February: 9 days of it are in the champion's training data
    with pytest.raises(TrainingDataError, match=r"fitted on days up to 2024-02-14, so 5 days of the backtest window "
                                                r"2024-02-06 \.\. 2024-02-19 are out of its sample; at least 7 .* "
                                                r"ending on or after 2024-02-22"):
        train(settings, dt.date(2024, 2, 20), against="served")
    assert len(ml.versions(NAME)) == before  # refused before anything was registered
    d = train(settings, dt.date(2024, 2, 25), against="served").decision
    assert d.judged == ("2024-02-15", "2024-02-24")
    assert "on 2024-02-15 .. 2024-02-24 (4 earlier backtest days are in its training data, in-sample: not judged)" \
        in d.reason


def test_training_as_of_a_day_sees_nothing_stamped_after_its_issue_time(markets, shifted_env):
    issued = dataset.issue_time(_market(shifted_env), SHIFT)
    assert issued == pd.Timestamp("2024-02-14 11:00", tz="UTC")  # gate closure 12:00 Berlin on the day before
    (stable, a), (shifted, b) = markets["stable"], markets["shifted"]
    for settings, result in ((stable, a), (shifted, b)):
        f = result.backtests["candidate"].forecasts
        assert f["day"].max() == SHIFT - dt.timedelta(days=1)
        assert (pd.to_datetime(f["issued_at"], utc=True) < issued).all()
        assert (pd.to_datetime(f["train_last_target_known_at"], utc=True) <= issued).all()
        tracking.open_tracking(settings)
        tags = ml.version(NAME, "1").tags
        assert (tags["as_of"], tags["train_end"], tags["backtest_end"]) == ("2024-02-15", "2024-02-14", "2024-02-15")
        assert ml.run_record(result.run_id)["tags"]["data_end"] == "2024-02-14"
    # The shifted lake differs from the stable one in everything stamped after that issue time (the prices of
    # 15 February on, published from 13:00 on the 14th; the features of later days), and in nothing before it:
    # as of the shift day, both train the same backtest and the same model.
    cols = ["delivery_start", "issued_at", "fitted_at", "actual", "q10", "q50", "q90"]
    pd.testing.assert_frame_equal(a.backtests["candidate"].forecasts[cols], b.backtests["candidate"].forecasts[cols])
    probe = dataset.load(shifted_env.store, shifted_env.lake, MARKET, SHIFT, SHIFT + dt.timedelta(days=7),
                         service="day_ahead_v1").frame
    same = [_forecast(settings, "1", probe) for settings, _ in (markets["stable"], markets["shifted"])]
    pd.testing.assert_frame_equal(same[0], same[1])
    # A day later, the price of the shift day was public at the issue time: the two models differ.
    later = [train(settings, SHIFT + dt.timedelta(days=1), approve=False) for settings in (stable, shifted)]
    for (settings, _), result in zip((markets["stable"], markets["shifted"]), later):
        tracking.open_tracking(settings)
        assert ml.version(NAME, result.version).tags["train_end"] == "2024-02-15"
    diff = [_forecast(settings, r.version, probe) for (settings, _), r in zip((markets["stable"], markets["shifted"]), later)]
    assert not np.allclose(diff[0]["q50"], diff[1]["q50"])


def _market(env: MarketEnv):
    from features.marketdata import MarketData

    return MarketData(env.lake).registry().get(MARKET)


def _forecast(settings: AurumSettings, version: str, frame: pd.DataFrame) -> pd.DataFrame:
    tracking.open_tracking(settings)
    model = ml.load_forecaster(f"models:/{NAME}/{version}")
    columns = list(model.metadata.get_input_schema().input_names())
    return model.predict(ml.pyfunc_input(frame[columns]), params={"quantiles": [0.1, 0.5, 0.9]})
