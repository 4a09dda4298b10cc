"""LightGBM is imported without its scikit-learn wrapper where the platform loads or fits a model first
(``models.lightgbm_forecaster.import_lightgbm``): checked in fresh interpreters, which is where it matters."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from modelframes import days_between

mlflow = pytest.importorskip("mlflow")

from models.lightgbm_forecaster import LightGBMForecaster  # noqa: E402
from models.mlflow_model import log_forecaster, pyfunc_input  # noqa: E402


def run_fresh(script: str) -> dict:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_logged_lightgbm_model_loads_and_predicts_without_scikit_learn(syn, tmp_path):
    features, target = syn
    train = days_between(features, "2023-03-01", "2023-05-01")
    day = days_between(features, "2023-05-01", "2023-05-03")
    model = LightGBMForecaster(n_estimators=15).fit(features[train], target[train])
    expected = model.predict(features[day], quantiles=(0.1, 0.5, 0.9))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.create_experiment("lean", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=exp):
            info = log_forecaster(model, features[day], training_features=features[train])
    finally:
        mlflow.set_tracking_uri(None)
    frame = tmp_path / "day.parquet"
    pyfunc_input(features[day]).to_parquet(frame)
    got = run_fresh(f"""
        import json, sys
        import mlflow, pandas as pd
        from models.mlflow_model import load_forecaster
        mlflow.set_tracking_uri({uri!r})
        m = load_forecaster({info.model_uri!r})
        out = m.predict(pd.read_parquet({str(frame)!r}))
        import lightgbm
        after_load = {{"sklearn": "sklearn" in sys.modules, "wrapper": lightgbm.compat.SKLEARN_INSTALLED}}
        from sklearn.linear_model import Lasso  # scikit-learn itself still imports and works afterwards
        Lasso(alpha=0.1).fit([[0.0], [1.0], [2.0]], [0.0, 1.0, 2.0])
        print(json.dumps({{"q50": out["q50"].tolist(), **after_load}}))
    """)
    assert got["sklearn"] is False and got["wrapper"] is False
    np.testing.assert_allclose(got["q50"], expected["q50"].to_numpy())


def test_a_process_with_scikit_learn_already_gets_lightgbm_whole():
    got = run_fresh("""
        import json, sklearn
        from models.lightgbm_forecaster import import_lightgbm
        lgb = import_lightgbm()
        print(json.dumps({"wrapper": lgb.compat.SKLEARN_INSTALLED}))
    """)
    assert got["wrapper"] is True


def test_fitting_imports_lightgbm_lean_and_the_booster_works():
    got = run_fresh("""
        import json, sys
        import numpy as np
        from models.lightgbm_forecaster import import_lightgbm
        lgb = import_lightgbm()
        x = np.arange(200, dtype=float).reshape(-1, 1)
        booster = lgb.train({"objective": "quantile", "alpha": 0.5, "verbose": -1, "min_data_in_leaf": 5},
                            lgb.Dataset(x, x[:, 0] * 2.0), num_boost_round=30)
        err = float(np.abs(booster.predict(x) - x[:, 0] * 2.0).mean())
        print(json.dumps({"sklearn": "sklearn" in sys.modules, "err": err}))
    """)
    assert got["sklearn"] is False
    assert got["err"] < 20.0  # the booster learnt y = 2x on [0, 400) (a constant guess errs by ~100)
