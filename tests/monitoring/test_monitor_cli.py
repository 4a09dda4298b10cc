"""``aurum monitor drift`` and ``aurum monitor reference`` through the real entry point (``features.cli.main``),
in process: exit codes, the report, the summary, the Iceberg rows, the MLflow records, the webhook."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from driftenv import MARKET, aurum, printed_path
from features.lake import Lake
from models import mlflow_model as ml
from monitoring import metricstore


def test_a_drift_check_writes_its_report_summary_table_rows_and_mlflow_records(drift_envs, monkeypatch, capsys):
    env = drift_envs.stable
    home = env.settings.home_dir
    code, out, err = aurum(monkeypatch, capsys, home, "monitor", "drift", "--market", MARKET, "--window", "7d",
                           "--end", "2023-03-13")
    assert code == 0, out + err
    assert "local days 2023-03-06 .. 2023-03-12 (168 hours)" in out and "state: ok" in out
    html, summary_path = printed_path(out, "report"), printed_path(out, "summary")
    assert html.parent == summary_path.parent == home / "monitoring" / "reports" / MARKET
    assert html.stat().st_size > 100_000
    summary = json.loads(summary_path.read_text())
    assert summary["window"] == {"start": "2023-03-06", "end_exclusive": "2023-03-13", "last_day": "2023-03-12",
                                 "days": 7, "days_with_data": 7, "rows": 168, "rows_scored": 168}
    assert summary["model"]["version"] == drift_envs.version and summary["state"] == "ok"
    assert summary["reference"]["verification"]["status"] == "exact"
    assert summary["reference"]["first_day"] == "2022-01-09" and summary["reference"]["season_gap_days"] == 0
    assert len(summary["features"]) == 15 and summary["evidently"]["agrees_with_engine"] is True
    assert {r["rule"] for r in summary["rules"] if r["state"] != "not evaluated"} == {
        "drift_share", "feature_drift", "prediction_drift", "missing_share", "data_lag_hours"}

    # the Iceberg time series: every metric of the check, one commit
    rows = metricstore.read(Lake.open(env.settings, create=False), MARKET, "drift")
    mine = rows[rows["run_id"] == summary["run_id"]].set_index("metric")
    assert mine.loc["drift_share", "value"] == pytest.approx(summary["metrics"]["drift_share"])
    assert mine.loc["state", "state"] == "ok" and mine.loc["drift_share", "state"] == "ok"
    assert set(mine.loc[[m for m in mine.index if m.startswith("drift.")], "state"]) <= {"ok", "drift"}
    assert (mine["model_version"] == drift_envs.version).all()
    assert mine["window_start"].iloc[0] == pd.Timestamp("2023-03-05 23:00", tz="UTC")  # local midnight, Berlin

    # MLflow: a run per check, and the latest state on the champion's version
    run = ml.run_record(summary["mlflow"]["run_id"])
    assert run["tags"]["model_version"] == drift_envs.version and run["tags"]["aurum_run_id"] == summary["run_id"]
    assert run["metrics"]["drift_share"] == pytest.approx(summary["metrics"]["drift_share"])
    tags = ml.version(f"day_ahead_{MARKET}", drift_envs.version).tags
    assert tags["monitoring.drift.state"] == "ok" and tags["monitoring.drift.run_id"] == summary["run_id"]
    assert tags["monitoring.drift.window"] == "2023-03-06..2023-03-12"

    # the same window with a stricter market rule warns: exit 1, and the change from ok is an alert
    code, out, err = aurum(monkeypatch, capsys, home, "monitor", "drift", "--market", MARKET, "--end", "2023-03-13",
                           env={"AURUM_MONITORING__MARKET_RULES": json.dumps({MARKET: {"missing_share_warn": 0.0}})})
    assert code == 1, out + err
    assert "state: warn (previous: ok)" in out and re.search(r"^ALERT SYN_NORTH drift: ok -> warn", out, re.M)


def test_a_state_change_alerts_once_through_the_webhook(drift_envs, receiver, monkeypatch, capsys):
    home = drift_envs.shifted.settings.home_dir
    url = f"http://127.0.0.1:{receiver.server_port}/hook"
    drift = ("monitor", "drift", "--market", MARKET, "--window", "7d", "--webhook", url)
    code, out, err = aurum(monkeypatch, capsys, home, *drift, "--end", "2023-05-14")  # before the shift
    assert code == 0, out + err
    assert receiver.received == []  # a first check that is ok raises nothing
    code, out, err = aurum(monkeypatch, capsys, home, *drift, "--end", "2023-06-11")  # the first week after it
    assert code == 3, out + err
    assert "state: alert (previous: ok)" in out and f"(sent to http://127.0.0.1:{receiver.server_port})" in out
    [(path, _, body)] = receiver.received
    assert path == "/hook" and (body["previous_state"], body["state"]) == ("ok", "alert")
    assert body["window"]["start"] == "2023-06-04" and body["model"]["version"] == drift_envs.version
    assert next(r for r in body["rules"] if r["rule"] == "feature_drift")["state"] == "alert"
    code, out, err = aurum(monkeypatch, capsys, home, *drift, "--end", "2023-06-18")
    assert code == 3 and "ALERT" not in out  # still alert: no second alert
    assert len(receiver.received) == 1
    rows = metricstore.read(Lake.open(drift_envs.shifted.settings, create=False), MARKET, "drift")
    assert rows.loc[rows["metric"] == "state", "state"].tolist()[-3:] == ["ok", "alert", "alert"]
    alert_rows = rows[rows["metric"] == "alert"]
    assert alert_rows["value"].tolist() == [1.0]  # delivered


def test_bad_requests_exit_2_with_a_clear_message_and_leave_nothing_behind(drift_envs, monkeypatch, capsys):
    env = drift_envs.stable
    home = env.settings.home_dir
    reports = home / "monitoring" / "reports"
    before = sorted(reports.rglob("*")) if reports.exists() else []
    lake = Lake.open(env.settings, create=False)
    checks = len(metricstore.read(lake))
    drift = ("monitor", "drift", "--market")
    cases = [
        ((*drift, "NOPE"), "unknown market 'NOPE'"),
        ((*drift, "SYN_SOUTH"), "market 'SYN_SOUTH' has no champion to monitor"),
        ((*drift, MARKET, "--end", "2030-01-01"),
         "has no features for the local days 2029-12-25 .. 2029-12-31 through service 'day_ahead_v1'; "
         "its latest day with prices is 2024-01-07"),
        ((*drift, MARKET, "--window", "7x"), "window '7x' is not a length of days"),
        ((*drift, MARKET, "--end", "2023-13-01"), "'2023-13-01' is not a day"),
        ((*drift, MARKET, "--webhook", "ftp://hooks.example.com/x"), "is not an http(s) URL"),
    ]
    for args, message in cases:
        code, out, err = aurum(monkeypatch, capsys, home, *args)
        assert code == 2, (args, out, err)
        assert message in " ".join((out + err).split()), (args, out + err)
    assert (sorted(reports.rglob("*")) if reports.exists() else []) == before
    assert len(metricstore.read(lake)) == checks


def test_the_reference_command_shows_the_cached_reference(drift_envs, monkeypatch, capsys):
    code, out, err = aurum(monkeypatch, capsys, drift_envs.stable.settings.home_dir, "monitor", "reference",
                           "--market", MARKET)
    assert code == 0, out + err
    assert f"day_ahead_{MARKET} v{drift_envs.version}: local days 2022-01-09 .. 2023-01-07, 8736 rows" in out
    assert "rebuilt: exact" in out and re.search(r"fuel_price_eur_mwh\s+numerical\s+threshold \d+\.\d{3}", out)
    assert "calendar features (matched by season, not tested): hour, weekday, month" in out
