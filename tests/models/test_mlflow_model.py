"""The MLflow adapter against a real SQLite-backed tracking store in a temporary folder."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from modelframes import days_between

mlflow = pytest.importorskip("mlflow")

from models.lear import LEAR  # noqa: E402
from models.mlflow_model import ROOT  # noqa: E402
from models.mlflow_model import environment_mismatches, load_forecaster, log_forecaster, pyfunc_input  # noqa: E402


@pytest.fixture
def tracking(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("models-test", artifact_location=(tmp_path / "artifacts").as_uri())
    yield uri, exp
    mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_pyfunc_round_trip_predicts_the_same_numbers_in_a_fresh_process(syn, tracking, tmp_path):
    uri, exp = tracking
    features, target = syn
    train = days_between(features, "2023-02-01", "2023-04-01")
    day = days_between(features, "2023-04-01", "2023-04-02")
    model = LEAR(windows=(28,)).fit(features[train], target[train])
    expected = model.predict(features[day], quantiles=(0.1, 0.5, 0.9))
    with mlflow.start_run(experiment_id=exp) as run:
        info = log_forecaster(model, features[day], training_features=features[train])
    loaded = load_forecaster(info.model_uri)
    got = loaded.predict(pyfunc_input(features[day]))
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True))
    wide = loaded.predict(pyfunc_input(features[day]), params={"quantiles": [0.05, 0.5, 0.95]})
    assert list(wide.columns) == ["q5", "q50", "q95", "missing_inputs"]
    assert (wide["q95"] >= expected["q90"]).all()
    meta = loaded.metadata.metadata
    assert meta["feature_service"] == "day_ahead_v1" and meta["markets"] == ["SYN_NORTH"]
    assert meta["forecaster"] == "LEAR" and meta["training_start"].startswith("2023-01-31")
    params = loaded.metadata.get_params_schema().to_dict()
    assert params[0]["name"] == "quantiles"

    # A fresh interpreter outside the repository, with no path to it: code_paths must carry the packages.
    frame = tmp_path / "day.parquet"
    pyfunc_input(features[day]).to_parquet(frame)
    script = textwrap.dedent(f"""
        import json, sys
        sys.path = [p for p in sys.path if p.rstrip('/') != {str(ROOT)!r}]  # the editable install's entry
        import mlflow, pandas as pd
        mlflow.set_tracking_uri({uri!r})
        m = mlflow.pyfunc.load_model({info.model_uri!r})
        out = m.predict(pd.read_parquet({str(frame)!r}), params={{"quantiles": [0.1, 0.5, 0.9]}})
        assert not sys.modules["models"].__file__.startswith({str(ROOT)!r}), sys.modules["models"].__file__
        print(json.dumps(out["q50"].tolist()))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(json.loads(done.stdout.strip().splitlines()[-1]), expected["q50"].to_numpy())
    assert run.info.run_id in info.model_uri or info.run_id == run.info.run_id


def test_environment_mismatches_name_each_package_and_the_python_version(tmp_path):
    """The cheap stand-in for MLflow's requirement check (which scans every installed distribution)."""
    from importlib.metadata import version

    (tmp_path / "requirements.txt").write_text(f"mlflow=={mlflow.__version__}\nlightgbm==0.0.1\n"
                                               "no-such-package-aurum==1.0\n# a comment\n")
    (tmp_path / "python_env.yaml").write_text("python: 3.1.0\nbuild_dependencies:\n- pip\n")
    found = environment_mismatches(tmp_path)
    assert found == [f"logged with lightgbm==0.0.1, installed: {version('lightgbm')}",
                     "logged with no-such-package-aurum==1.0, installed: not installed",
                     f"logged with Python 3.1.0, running {sys.version_info.major}.{sys.version_info.minor}"]
    (tmp_path / "requirements.txt").write_text(f"mlflow=={mlflow.__version__}\n")
    (tmp_path / "python_env.yaml").write_text(f"python: {sys.version.split()[0]}\n")
    assert environment_mismatches(tmp_path) == []
