"""The reference of a drift check: the champion's training data rebuilt from its lineage, cached per version."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from driftenv import MARKET
from features import featurestore
from features.errors import LineageError, NoChampionError, UnknownMarketError
from features.settings import AurumSettings
from models import mlflow_model as ml
from models.featureframe import CALENDAR_FEATURES, EXOGENOUS_FEATURES, PRICE_FEATURES
from monitoring.champion import champion
from monitoring.drift import PREDICTION
from monitoring.reference import Reference


def test_the_reference_is_the_champions_training_data_rebuilt_from_its_lineage(drift_envs, tmp_path):
    from training import dataset

    env = drift_envs.stable
    ref = Reference.for_champion(env.settings, MARKET, rebuild=True)
    lineage = ref.champion.lineage
    assert (ref.champion.model_name, ref.champion.version) == (f"day_ahead_{MARKET}", drift_envs.version)
    assert lineage.feature_service == "day_ahead_v1" and lineage.train_days is None
    assert (ref.first_day, ref.last_day) == (dt.date(2022, 1, 9), dt.date(2023, 1, 7))  # the days it was fitted on
    assert set(lineage.snapshots) == {"market.prices", "features.price_features", "features.exogenous_features",
                                      "features.exogenous_lag_features", "features.calendar_features"}
    # the rows the training run loaded (its lineage.json), and the same values training's own loader reads
    path = ml.download_artifact(lineage.run_id, "lineage.json", tmp_path)
    assert ref.stats.rows == json.loads(path.read_text())["rows"]
    training = dataset.load(env.store, env.lake, MARKET, ref.first_day, ref.last_day + dt.timedelta(days=1),
                            service=lineage.feature_service)
    frame = ref.stats.frame
    assert frame["delivery_start"].tolist() == training.frame["delivery_start"].tolist()
    for c in ref.roles.numerical:
        np.testing.assert_array_equal(frame[c].to_numpy(), training.frame[c].to_numpy())
    # the rebuilt rows are exactly what training read: no feature version was computed after the run began
    assert ref.verification["status"] == "exact"
    # roles from the feature service: the calendar view is matched on, not tested
    assert set(ref.roles.numerical) == set(PRICE_FEATURES) | set(EXOGENOUS_FEATURES)
    assert set(ref.roles.calendar) == set(CALENDAR_FEATURES) and ref.roles.categorical == ()
    assert set(ref.stats.thresholds) == set(ref.roles.numerical) | {PREDICTION}
    assert frame[PREDICTION].notna().all() and frame[PREDICTION].std() > 0
    assert ref.stats.calibration["weeks"] >= 50


def test_the_reference_is_cached_per_model_version_and_recalibrated_without_the_feature_store(drift_envs, monkeypatch):
    env = drift_envs.stable
    first = Reference.for_champion(env.settings, MARKET)
    assert first.path == env.settings.home_dir / "monitoring" / "reference" / f"day_ahead_{MARKET}" / drift_envs.version
    assert (first.path / "reference.parquet").exists() and (first.path / "reference.json").exists()

    def no_feature_store(*args, **kwargs):
        raise AssertionError("a cached reference must not read the feature store")

    monkeypatch.setattr(featurestore, "training_set", no_feature_store)
    cached = Reference.for_champion(env.settings, MARKET)
    assert cached.stats.thresholds == first.stats.thresholds and cached.built_at == first.built_at
    wider = AurumSettings(home=env.settings.home, monitoring={"threshold_margin": 3.0})
    recalibrated = Reference.for_champion(wider, MARKET)
    for c, t in first.stats.thresholds.items():
        week_max = first.stats.calibration["week_score_max"][c]
        assert recalibrated.stats.thresholds[c] == pytest.approx(max(0.05, 3.0 * week_max))
    monkeypatch.undo()
    Reference.for_champion(env.settings, MARKET)  # back to the default margin for the other tests


def test_no_champion_and_a_champion_without_lineage_are_clear_errors(drift_envs, tmp_path):
    env = drift_envs.stable
    with pytest.raises(NoChampionError,
                       match=r"market 'SYN_SOUTH' has no champion .* no registered model 'day_ahead_SYN_SOUTH'"):
        Reference.for_champion(env.settings, "SYN_SOUTH")
    with pytest.raises(UnknownMarketError, match="unknown market 'NOPE'"):
        Reference.for_champion(env.settings, "NOPE")
    empty = AurumSettings(home=tmp_path / "empty")
    with pytest.raises(NoChampionError, match=r"the MLflow store sqlite:///.*mlflow.db does not exist yet"):
        champion(empty, MARKET)
    # a version registered by hand, from a run that recorded nothing about its data
    experiment = ml.experiment("hand-made", (tmp_path / "artifacts").as_uri())
    with ml.run(experiment, "no lineage") as run_id:
        pass
    version = ml.register(f"runs:/{run_id}/model", "day_ahead_SYN_EAST")
    ml.set_alias("day_ahead_SYN_EAST", "champion", version.version)
    with pytest.raises(LineageError, match=rf"day_ahead_SYN_EAST version {version.version}: its training run "
                                           rf"'{run_id}' records no data_start, data_end, feature_service"):
        champion(env.settings, "SYN_EAST")
