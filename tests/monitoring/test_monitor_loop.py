"""The closed loop: a regime shift makes the archived forecasts go bad, ``aurum monitor run --retrain-on-alert``
alerts on performance, retrains the champion's recipe through ``aurum train`` (a real subprocess) as of the alert
window's end, the approval gate judges it against the served champion (frozen) and promotes it, the chain alert ->
training run -> decision is in MLflow and monitoring_metrics, and the new champion is the one scored and judged
next."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from driftenv import MARKET, archive_batch, aurum, build_loop_env
from features.lake import Lake
from models import mlflow_model as ml
from monitoring import loop, metricstore
from monitoring.champion import champion

NAME = f"day_ahead_{MARKET}"


@pytest.fixture(scope="module")
def loop_env(drift_envs, tmp_path_factory):
    return build_loop_env(tmp_path_factory.mktemp("loop"), drift_envs)


def test_a_performance_alert_retrains_as_of_the_window_and_the_served_gate_promotes_the_fresh_fit(
        loop_env, monkeypatch, capsys):
    home = loop_env.settings.home_dir
    code, out, err = aurum(monkeypatch, capsys, home, "monitor", "run", "--market", MARKET, "--window", "7d",
                           "--end", "2023-06-18", "--retrain-on-alert")
    assert code == 3, out + err  # alert (drift and performance), and both checks ran
    path = Path(re.search(r"^monitor run \w+ \(MLflow run \w+\); summary (\S+)$", out, re.M).group(1))
    summary = json.loads(path.read_text())
    assert summary["errors"] == {}
    assert summary["checks"]["performance"]["state"] == "alert" and summary["checks"]["drift"]["state"] == "alert"
    r = summary["retrain"]
    assert r["status"] == "approved", r
    assert r["command"].startswith(f"aurum train --market {MARKET} --model lgbm ")
    assert "--param n_estimators=60" in r["command"] and "--backtest-days 14" in r["command"]
    # the lake holds half a year more: the retrain knows only what was known at the end of the alert window
    assert r["command"].endswith(" --against served --as-of 2023-06-18") and r["as_of"] == "2023-06-18"
    assert r["version"] == "2" and re.fullmatch(r"[0-9a-f]{32}", r["training_run_id"]) and r["decision"] == "champion"
    # judged against the model that alerted, frozen, on days after its training data
    assert r["reason"].startswith("against the served champion v1 (frozen, fitted on days up to 2023-01-07) on "
                                  "2023-06-04 .. 2023-06-17: MAE ")
    mae = re.search(r"MAE ([\d.]+) vs champion ([\d.]+): passes every check$", r["reason"])
    assert float(mae[1]) < 0.99 * float(mae[2])

    training = ml.run_record(r["training_run_id"])
    assert training["tags"]["registered_version"] == "2" and training["tags"]["data_end"] == "2023-06-17"
    version = ml.version(NAME, "2")
    assert "champion" in version.aliases and ml.alias_version(NAME, "champion").version == "2"
    assert (version.tags["approval.decision"], version.tags["approval.against"], version.tags["as_of"],
            version.tags["train_end"]) == ("approved", "served", "2023-06-18", "2023-06-17")
    assert version.tags["monitoring.retrain.trigger_run_id"] == summary["checks"]["performance"]["run_id"]
    assert version.tags["monitoring.retrain.replaces_version"] == "1"
    assert version.tags["monitoring.retrain.as_of"] == "2023-06-18"

    # the monitoring run holds the chain, and the two checks are its children
    run = ml.run_record(summary["mlflow"]["run_id"])
    tags = run["tags"]
    assert tags["retrain.trigger"].startswith("performance alert: error_ratio ")
    assert (tags["retrain.status"], tags["retrain.training_run_id"], tags["retrain.version"],
            tags["retrain.decision"], tags["retrain.as_of"]) == ("approved", r["training_run_id"], "2", "champion",
                                                                  "2023-06-18")
    perf_run = ml.run_record(summary["checks"]["performance"]["mlflow_run_id"])
    assert perf_run["tags"]["mlflow.parentRunId"] == run["run_id"]
    assert ml.run_record(summary["checks"]["drift"]["mlflow_run_id"])["tags"]["mlflow.parentRunId"] == run["run_id"]

    lake = Lake.open(loop_env.settings, create=False)
    rows = metricstore.read(lake, MARKET, "retrain").set_index("metric")
    assert set(rows["state"]) == {"approved"} and rows.loc["version", "value"] == 2.0
    assert rows.loc["promoted", "value"] == 1.0
    assert rows.loc["trigger_error_ratio", "value"] > 1.5 and (rows["model_version"] == "1").all()

    # the registry's history says what the new champion was compared with
    code, out, _ = aurum(monkeypatch, capsys, home, "models", "history", "--market", MARKET)
    assert code in (0, None) and "v2    -> champion   (was v1) by aurum approve [against served]: against the " \
        "served champion v1 (frozen" in out

    # a persisting alert does not retrain again within the cooldown
    skipped = loop.retrain(loop_env.settings, champion(loop_env.settings, MARKET, lineage=False), lake,
                           log=home / "unused.log")
    assert skipped.status == "skipped" and "retrain_cooldown_hours=24" in skipped.reason and not skipped.command

    # the next week is scored by the new champion (aurum score takes the champion at scoring time) and judged
    scored = archive_batch(loop_env, dt.date(2023, 6, 18), dt.date(2023, 6, 24))
    assert scored.model_version == "2" and len(scored.days_scored) == 7
    code, out, err = aurum(monkeypatch, capsys, home, "monitor", "performance", "--market", MARKET, "--window", "7d",
                           "--end", "2023-06-25")
    assert code in (0, 1, 3), out + err
    assert f"{MARKET}: {NAME} v2, local days 2023-06-18 .. 2023-06-24" in out


def test_the_retrain_command_is_as_of_the_window_end_only_in_a_replay(loop_env):
    champ = champion(loop_env.settings, MARKET, lineage=False)
    lake = Lake.open(loop_env.settings, create=False)
    assert loop.retrain_as_of(lake, MARKET, "Europe/Berlin", dt.date(2023, 6, 18)) == dt.date(2023, 6, 18)
    # the lake ends on 2024-01-07: a window ending after it is today's, and everything known is before it
    assert loop.retrain_as_of(lake, MARKET, "Europe/Berlin", dt.date(2024, 1, 8)) is None
    assert loop.retrain_command(champ)[-2:] == ["--against", "served"]
