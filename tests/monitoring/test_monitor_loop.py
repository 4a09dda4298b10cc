"""The closed loop: a regime shift makes the archived forecasts go bad, ``aurum monitor run --retrain-on-alert``
alerts on performance, retrains the champion's recipe through ``aurum train`` (a real subprocess), the approval
gate decides, and the chain alert -> training run -> decision is in MLflow and monitoring_metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from driftenv import MARKET, aurum, build_loop_env
from features.lake import Lake
from models import mlflow_model as ml
from monitoring import loop, metricstore
from monitoring.champion import champion

NAME = f"day_ahead_{MARKET}"


@pytest.fixture(scope="module")
def loop_env(drift_envs, tmp_path_factory):
    return build_loop_env(tmp_path_factory.mktemp("loop"), drift_envs)


def test_a_performance_alert_retrains_the_champions_recipe_and_records_the_chain(loop_env, monkeypatch, capsys):
    home = loop_env.settings.home_dir
    code, out, err = aurum(monkeypatch, capsys, home, "monitor", "run", "--market", MARKET, "--window", "7d",
                           "--end", "2023-06-18", "--retrain-on-alert")
    assert code == 3, out + err  # alert (drift and performance), and both checks ran
    path = Path(re.search(r"^monitor run \w+ \(MLflow run \w+\); summary (\S+)$", out, re.M).group(1))
    summary = json.loads(path.read_text())
    assert summary["errors"] == {}
    assert summary["checks"]["performance"]["state"] == "alert" and summary["checks"]["drift"]["state"] == "alert"
    r = summary["retrain"]
    assert r["status"] in ("approved", "rejected"), r
    assert r["command"].startswith(f"aurum train --market {MARKET} --model lgbm ")
    assert "--param n_estimators=60" in r["command"] and "--backtest-days 14" in r["command"]
    assert r["version"] == "2" and re.fullmatch(r"[0-9a-f]{32}", r["training_run_id"]) and r["reason"]
    assert r["decision"] == ("champion" if r["status"] == "approved" else "challenger")

    # the training run trained on the data now in the lake (a year past the champion's), and registered version 2
    training = ml.run_record(r["training_run_id"])
    assert training["tags"]["registered_version"] == "2" and training["tags"]["data_end"] == "2024-01-07"
    version = ml.version(NAME, "2")
    assert r["decision"] in version.aliases
    assert version.tags["approval.decision"] == ("approved" if r["status"] == "approved" else "rejected")
    assert version.tags["monitoring.retrain.trigger_run_id"] == summary["checks"]["performance"]["run_id"]
    assert version.tags["monitoring.retrain.replaces_version"] == "1"
    assert ml.alias_version(NAME, "champion").version == ("2" if r["status"] == "approved" else "1")

    # the monitoring run holds the chain, and the two checks are its children
    run = ml.run_record(summary["mlflow"]["run_id"])
    tags = run["tags"]
    assert tags["retrain.trigger"].startswith("performance alert: error_ratio ")
    assert (tags["retrain.status"], tags["retrain.training_run_id"], tags["retrain.version"],
            tags["retrain.decision"]) == (r["status"], r["training_run_id"], "2", r["decision"])
    perf_run = ml.run_record(summary["checks"]["performance"]["mlflow_run_id"])
    assert perf_run["tags"]["mlflow.parentRunId"] == run["run_id"]
    assert ml.run_record(summary["checks"]["drift"]["mlflow_run_id"])["tags"]["mlflow.parentRunId"] == run["run_id"]

    lake = Lake.open(loop_env.settings, create=False)
    rows = metricstore.read(lake, MARKET, "retrain").set_index("metric")
    assert set(rows["state"]) == {r["status"]} and rows.loc["version", "value"] == 2.0
    assert rows.loc["promoted", "value"] == (1.0 if r["status"] == "approved" else 0.0)
    assert rows.loc["trigger_error_ratio", "value"] > 1.5 and (rows["model_version"] == "1").all()

    # a persisting alert does not retrain again within the cooldown
    skipped = loop.retrain(loop_env.settings, champion(loop_env.settings, MARKET, lineage=False), lake,
                           log=home / "unused.log")
    assert skipped.status == "skipped" and "retrain_cooldown_hours=24" in skipped.reason and not skipped.command
