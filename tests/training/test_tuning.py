"""Optuna tuning on backtest folds before the test period: nested MLflow runs, a shared RDB study.

The prod test puts both the MLflow store and the Optuna study on the real PostgreSQL.
"""

import datetime as dt
import uuid

import pytest

from features.errors import ConfigurationError
from features.settings import AurumSettings, MlflowSettings
from models import mlflow_model as ml
from training import dataset, tracking, tuning
from training.specs import ModelSpec

MARKET = "SYN_NORTH"
UNTIL = dt.date(2024, 3, 15)


@pytest.fixture(scope="module")
def data(market_env):
    return dataset.load(market_env.store, market_env.lake, MARKET, dt.date(2023, 11, 10), UNTIL, service="day_ahead_v1")


def test_folds_end_where_the_test_period_starts():
    folds = tuning.folds_before(dt.date(2024, 3, 15), 3, 14)
    assert [(f.start, f.end) for f in folds] == [(dt.date(2024, 2, 2), dt.date(2024, 2, 16)),
                                                (dt.date(2024, 2, 16), dt.date(2024, 3, 1)),
                                                (dt.date(2024, 3, 1), dt.date(2024, 3, 15))]


def run_study(settings, data, kind, trials, study):
    experiment = tracking.open_tracking(settings)
    return experiment, tuning.tune(settings, experiment, data, kind, until=UNTIL, trials=trials, folds=2,
                                   fold_days=7, study_name=study, seed=1)


def test_tuning_records_every_trial_and_workers_share_the_study(data, tmp_path):
    settings = AurumSettings(home=tmp_path / "home", mlflow=MlflowSettings(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=(tmp_path / "art").as_uri()))
    experiment, first = run_study(settings, data, "lear", 3, "lear-test")
    _, second = run_study(settings, data, "lear", 2, "lear-test")  # a second worker joins the same study
    assert first.trials == 3 and second.trials == 5
    assert second.best_value <= first.best_value
    assert set(second.best_params["windows"]) <= {28, 56, 84, 182, 364, 728}
    trials = ml.search_runs(experiment, "tags.stage = 'tune-trial'")
    assert len(trials) == 5 and all(t["tags"].get("mlflow.parentRunId") in (first.run_id, second.run_id) for t in trials)
    assert ModelSpec.of("lear", **tuning.best_params(settings, "lear", MARKET, "lear-test")).params["windows"] == \
        second.best_params["windows"]
    with pytest.raises(ConfigurationError, match="no completed trial"):
        tuning.best_params(settings, "lgbm", MARKET, "never-run")
    with pytest.raises(ConfigurationError, match="nothing to tune"):
        run_study(settings, data, "naive", 1, "naive-test")


@pytest.mark.postgres
def test_mlflow_and_optuna_on_postgresql(data, pg_settings, tmp_path):
    import sqlalchemy

    schema = f"mlflow_test_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(pg_settings.postgres_url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    settings = pg_settings.model_copy(update={"mlflow": MlflowSettings(
        tracking_uri=f"{pg_settings.postgres_url}?options=-csearch_path%3D{schema}",
        artifact_root=(tmp_path / "art").as_uri())})
    study = f"lear-pg-{uuid.uuid4().hex[:8]}"
    try:
        experiment, result = run_study(settings, data, "lear", 2, study)
        assert result.trials == 2 and "postgresql" in result.storage
        assert len(ml.search_runs(experiment, "tags.stage = 'tune-trial'")) == 2
        with engine.connect() as conn:  # MLflow's tables are in the test's own schema, Optuna's in 'optuna'
            assert conn.execute(sqlalchemy.text(
                f"SELECT count(*) FROM \"{schema}\".runs")).scalar() == 3
            assert conn.execute(sqlalchemy.text(
                "SELECT count(*) FROM optuna.trials t JOIN optuna.studies s USING (study_id) WHERE s.study_name = :n"),
                {"n": study}).scalar() == 2
    finally:
        import optuna

        optuna.delete_study(study_name=study, storage=tuning.storage_url(settings))
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def test_processes_opening_a_new_mlflow_store_at_once_both_succeed(tmp_path):
    """MLflow migrates a new SQLite store on first use; concurrent first uses must not collide."""
    import subprocess
    import sys

    code = ("import sys; from features.settings import AurumSettings; from training import tracking; "
            "tracking.open_tracking(AurumSettings(home=sys.argv[1])); print('ok')")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "home")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [r[1][-500:] for r in results]
