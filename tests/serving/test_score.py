"""Batch scoring (aurum score) on the served synthetic market: real Iceberg, Feast and MLflow stores.

Each test starts and ends with an empty archive, so the shared ``served_env`` stays as it was found.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.errors import InvalidWindowError, QuantileError, RegistryError, UnknownMarketError
from features.featurestore import ENTITY_TIMESTAMP, FeatureStoreError
from features.lake import FORECASTS_TABLE, all_of
from features.markets import BUILTIN_MARKETS
from serving import batch
from serving.archive import ensure_forecasts_table, read_forecasts

ROOT = Path(__file__).resolve().parents[2]
MARKET = "SYN_NORTH"
NORTH = next(m for m in BUILTIN_MARKETS if m.code == MARKET)


def _empty_archive(lake) -> None:
    ensure_forecasts_table(lake)
    lake.rewrite(FORECASTS_TABLE, all_of(), lambda old: None if old is None else old.slice(0, 0))


@pytest.fixture
def scoring(served_env):
    """The served market with an empty forecast archive (emptied again afterwards)."""
    _empty_archive(served_env.lake)
    yield served_env
    _empty_archive(served_env.lake)


def days(first: str, last: str) -> list[dt.date]:
    return [d.date() for d in pd.date_range(first, last, freq="D")]


def archived(env, **filters) -> pd.DataFrame:
    return read_forecasts(env.lake, MARKET, **filters)


# ---------------------------------------------------------------- what a job archives


def test_each_day_is_scored_as_the_service_would_have_on_d_minus_1(scoring):
    env = scoring
    version = env.champions[MARKET]
    result = batch.score(env.settings, MARKET, dt.date(2024, 3, 29), dt.date(2024, 4, 2), chunk_days=2)
    rows = archived(env, batch_id=result.batch_id)
    # the spring DST day 2024-03-31 has 23 delivery hours
    assert rows.groupby("delivery_day").size().to_dict() == {
        dt.date(2024, 3, 29): 24, dt.date(2024, 3, 30): 24, dt.date(2024, 3, 31): 23, dt.date(2024, 4, 1): 24,
        dt.date(2024, 4, 2): 24}
    assert result.rows == len(rows) == 119 and result.days_scored == tuple(days("2024-03-29", "2024-04-02"))
    assert not rows.duplicated(["delivery_start"]).any()
    gate = pd.to_datetime([pd.Timestamp(d - dt.timedelta(days=1)) + pd.Timedelta(hours=12) for d in rows["delivery_day"]])
    assert (rows["issued_at"] == gate.tz_localize("Europe/Berlin").tz_convert("UTC")).all()  # D-1 12:00 local
    assert (rows["delivery_start"].dt.tz_convert("Europe/Berlin").dt.date == rows["delivery_day"]).all()
    assert set(rows["source"]) == {"batch"} and set(rows["model_alias"]) == {"champion"}
    assert set(rows["model_name"]) == {"day_ahead_SYN_NORTH"} and set(rows["model_version"]) == {version}
    assert set(rows["tenant"]) == {"internal"} and set(rows["feature_service"]) == {"day_ahead_v1"}
    assert set(rows["feature_snapshot"]) == {env.lake.snapshot_id("features.price_features")}
    assert set(rows["request_id"]) == {f"{result.batch_id}/2024-03-29", f"{result.batch_id}/2024-03-31",
                                       f"{result.batch_id}/2024-04-02"}  # one per chunk of two days
    values = np.stack(rows["values"])
    assert all(list(levels) == [0.1, 0.5, 0.9] for levels in rows["levels"])
    assert (np.diff(values, axis=1) >= 0).all() and np.array_equal(rows["forecast"], values[:, 1])
    # The hour after the skipped spring hour has no same-hour lag: degraded, saying which input.
    degraded = rows[rows["quality"] == "degraded"]
    assert len(degraded) == result.degraded_rows >= 1
    assert degraded["quality_reason"].str.contains("price_lag_P").all()
    assert rows.loc[rows["quality"] == "ok", "quality_reason"].isna().all()


def test_forecasts_equal_what_training_sees_for_the_same_model_and_day(scoring):
    """The same days through training's dataset (entity rows, issue times, point-in-time features) and
    the same registered model give the archived forecasts."""
    from models import mlflow_model as ml
    from models.featureframe import FEATURE_SERVICE
    from training import dataset
    from training.backtest import model_inputs

    env = scoring
    first, last = dt.date(2024, 3, 29), dt.date(2024, 4, 2)
    result = batch.score(env.settings, MARKET, first, last)
    rows = archived(env, batch_id=result.batch_id)
    entity = dataset.delivery_rows(NORTH, first, last + dt.timedelta(days=1))
    mine = batch.issue_rows(NORTH, days("2024-03-29", "2024-04-02"))
    pd.testing.assert_frame_equal(mine, entity.rename(columns={ENTITY_TIMESTAMP: batch.ENTITY_TIMESTAMP}))
    data = dataset.load(env.store, env.lake, MARKET, first, last + dt.timedelta(days=1), service=FEATURE_SERVICE)
    model = ml.load_forecaster(f"models:/day_ahead_SYN_NORTH/{env.champions[MARKET]}")
    inputs = model_inputs(data.frame, data.features)
    expected = model.predict(ml.pyfunc_input(inputs[model.metadata.get_input_schema().input_names()]),
                             params={"quantiles": [0.1, 0.5, 0.9]})
    assert (data.frame["delivery_start"].to_numpy() == rows["delivery_start"].to_numpy()).all()
    np.testing.assert_allclose(np.stack(rows["values"]), expected[["q10", "q50", "q90"]].to_numpy(), rtol=0, atol=1e-9)
    assert (pd.to_datetime(data.frame[dataset.ISSUED_AT], utc=True).to_numpy() == rows["issued_at"].to_numpy()).all()


# ---------------------------------------------------------------- idempotent, resumable


def test_a_rerun_skips_archived_days_and_a_longer_window_adds_only_the_new_ones(scoring):
    env = scoring
    runner = CliRunner()
    from features.cli import app

    def score(*args):
        out = runner.invoke(app, ["score", "--market", MARKET, "--no-progress", *args],
                            env={"AURUM_HOME": str(env.settings.home)})
        assert out.exit_code == 0, out.output
        return out.output

    out = score("--from", "2024-03-04", "--to", "2024-03-06", "--batch-id", "first-run")
    assert "3 scored, 0 already archived; 72 rows" in out and "batch_id 'first-run'" in out
    assert len(archived(env)) == 72
    out = score("--from", "2024-03-04", "--to", "2024-03-06")
    assert "0 scored, 3 already archived; 0 rows" in out
    assert len(archived(env)) == 72
    out = score("--from", "2024-03-04", "--to", "2024-03-08", "--quantiles", "0.9")
    assert "2 scored, 3 already archived; 48 rows" in out
    rows = archived(env)
    assert len(rows) == 120 and not rows.duplicated(["delivery_start"]).any()
    late = rows[rows["delivery_day"] >= dt.date(2024, 3, 7)]
    assert all(list(levels) == [0.5, 0.9] for levels in late["levels"])  # 0.5 is always scored


KILLED_AFTER_CHUNKS = r"""
import os, signal, sys
from serving import batch

real, done = batch.archive_chunk, []

def archive_then_die(*args, **kwargs):
    out = real(*args, **kwargs)
    done.append(out)
    if len(done) == int(os.environ["KILL_AFTER_CHUNKS"]):
        os.kill(os.getpid(), signal.SIGKILL)  # a crash between two commits of the job
    return out

batch.archive_chunk = archive_then_die
from features.cli import main
sys.argv = ["aurum", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_a_killed_run_is_resumed_by_a_rerun_without_duplicates(scoring):
    env = scoring
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AURUM_")}
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_CHUNKS, "score", "--market", MARKET, "--from", "2024-02-01",
         "--to", "2024-02-10", "--chunk-days", "3", "--batch-id", "killed"],
        cwd=ROOT, env=environ | {"AURUM_HOME": str(env.settings.home), "KILL_AFTER_CHUNKS": "2",
                                 "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    rows = archived(env)  # the table reads fine after the crash and holds exactly the committed chunks
    assert rows.groupby("delivery_day").size().to_dict() == {d: 24 for d in days("2024-02-01", "2024-02-06")}
    result = batch.score(env.settings, MARKET, dt.date(2024, 2, 1), dt.date(2024, 2, 10), batch_id="resumed")
    assert result.days_skipped == tuple(days("2024-02-01", "2024-02-06"))
    assert result.days_scored == tuple(days("2024-02-07", "2024-02-10"))
    rows = archived(env)
    assert len(rows) == 240 and not rows.duplicated(["delivery_start"]).any()
    assert rows.groupby("batch_id").size().to_dict() == {"killed": 144, "resumed": 96}


# ---------------------------------------------------------------- bad input


def test_bad_input_is_one_clear_error_and_archives_nothing(scoring):
    env = scoring
    s = env.settings
    with pytest.raises(UnknownMarketError, match="unknown market 'NOPE'"):
        batch.score(s, "NOPE", dt.date(2024, 3, 1), dt.date(2024, 3, 2))
    with pytest.raises(InvalidWindowError, match="'2024-03-01' is before the first '2024-03-05'"):
        batch.score(s, MARKET, dt.date(2024, 3, 5), dt.date(2024, 3, 1))
    with pytest.raises(RegistryError, match="'day_ahead_SYN_SOUTH' has no 'champion'"):
        batch.score(s, "SYN_SOUTH", dt.date(2024, 3, 1), dt.date(2024, 3, 2))
    with pytest.raises(QuantileError, match="1.5"):
        batch.score(s, MARKET, dt.date(2024, 3, 1), dt.date(2024, 3, 2), quantiles=[0.1, 1.5])
    with pytest.raises(QuantileError, match="0.05 is not calibrated"):  # the model's own levels only
        batch.score(s, MARKET, dt.date(2024, 3, 1), dt.date(2024, 3, 2), quantiles=[0.05, 0.5])
    # The data ends on 2024-04-14: the TSO forecasts of the 15th, and every input after it, are unknown.
    with pytest.raises(FeatureStoreError) as err:
        batch.score(s, MARKET, dt.date(2024, 4, 12), dt.date(2024, 4, 20), chunk_days=1)
    message = str(err.value)
    assert "2024-04-15: load_forecast_mw" in message and "2024-04-16" in message and "every input" in message
    assert "6 delivery days" in message and "2024-04-14" not in message and "nothing was archived" in message
    assert archived(env).empty  # not even the good days 12-14 before the bad ones


def test_the_command_exits_2_with_one_line_naming_the_bad_value(scoring):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AURUM_")}
    proc = subprocess.run([sys.executable, "-m", "features.cli", "score", "--market", "NOPE", "--from", "2024-03-01",
                           "--to", "2024-03-02"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=environ | {"AURUM_HOME": str(scoring.settings.home), "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown market 'NOPE'; expected one of")


def test_unscoreable_days_and_input_quality_name_the_inputs():
    local_day = pd.Series([dt.date(2024, 3, 1)] * 2 + [dt.date(2024, 3, 2)] * 2)
    inputs = pd.DataFrame({"price_lag_P1D": [1.0, np.nan, np.nan, np.nan], "hour": [0.0, 1.0, 0.0, 1.0]})
    with pytest.raises(FeatureStoreError, match=r"1 delivery days .* 2024-03-02: price_lag_P1D"):
        batch.unscoreable_days(inputs, local_day, MARKET, "day_ahead_v1")
    batch.unscoreable_days(inputs.iloc[:2], local_day.iloc[:2], MARKET, "day_ahead_v1")  # one hour missing: fine
    quality, reason = batch.input_quality(inputs.iloc[:2])
    assert list(quality) == ["ok", "degraded"] and reason[0] is None and reason[1].endswith(": price_lag_P1D")
    assert batch.ENTITY_TIMESTAMP == ENTITY_TIMESTAMP


# ---------------------------------------------------------------- the Ray engine


@pytest.mark.slow
def test_the_ray_engine_archives_the_same_forecasts_as_the_local_one(scoring):
    env = scoring
    first, last = dt.date(2024, 3, 10), dt.date(2024, 3, 14)
    on_ray = batch.score(env.settings, MARKET, first, last, engine="ray", chunk_days=2, ray_actors=2)
    assert on_ray.engine == "ray" and on_ray.days_scored == tuple(days("2024-03-10", "2024-03-14"))
    ray_rows = archived(env, batch_id=on_ray.batch_id)
    _empty_archive(env.lake)
    local = batch.score(env.settings, MARKET, first, last, engine="local", chunk_days=2)
    local_rows = archived(env, batch_id=local.batch_id)
    assert len(ray_rows) == len(local_rows) == 120 and on_ray.rows == local.rows == 120
    for column in ("delivery_start", "delivery_day", "issued_at", "quality", "quality_reason", "model_version",
                   "feature_snapshot"):
        pd.testing.assert_series_equal(ray_rows[column], local_rows[column], check_names=False)
    np.testing.assert_allclose(np.stack(ray_rows["values"]), np.stack(local_rows["values"]), rtol=0, atol=1e-9)
    np.testing.assert_allclose(ray_rows["forecast"], local_rows["forecast"], rtol=0, atol=1e-9)
    assert (ray_rows["request_id"].str.split("/").str[1] == local_rows["request_id"].str.split("/").str[1]).all()


def test_ray_is_imported_by_the_batch_engine_alone_and_only_when_it_runs():
    users = sorted(str(p.relative_to(ROOT)) for pkg in ("features", "models", "training", "serving", "monitoring")
                   for p in (ROOT / pkg).rglob("*.py") if re.search(r"^\s*(import|from)\s+ray\b", p.read_text(), re.M))
    assert users == ["serving/batch.py"]
    probe = "import sys, serving.batch; print(sorted(m for m in ('ray', 'feast', 'mlflow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr  # a writer actor or `aurum --help` pays for none of them
