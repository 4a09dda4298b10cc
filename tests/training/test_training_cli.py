"""The training commands through the one `aurum` app (registered by the aurum.commands entry point)."""

import re

from typer.testing import CliRunner

from features.cli import app

MARKET = "SYN_NORTH"


def env(monkeypatch, market_env, tmp_path):
    monkeypatch.setenv("AURUM_HOME", str(market_env.settings.home))
    monkeypatch.setenv("AURUM_MLFLOW__TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("AURUM_MLFLOW__ARTIFACT_ROOT", (tmp_path / "art").as_uri())


def test_training_commands_are_part_of_the_aurum_app():
    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert {"train", "backtest", "tune", "approve", "models", "ui", "ingest", "features"} <= names


def test_backtest_prints_metrics_and_a_run_id_and_bad_options_are_clear(monkeypatch, market_env, tmp_path):
    env(monkeypatch, market_env, tmp_path)
    runner = CliRunner()
    out = runner.invoke(app, ["backtest", "--market", MARKET, "--model", "naive", "--from", "2024-04-01",
                              "--to", "2024-04-08", "--baselines", "none"])
    assert out.exit_code == 0, out.output
    assert re.search(r"^run \w+: backtest of naive on SYN_NORTH, 2024-04-01 \.\. 2024-04-08", out.output, re.M)
    assert "candidate" in out.output and "mae" in out.output
    bad = runner.invoke(app, ["backtest", "--market", MARKET, "--baselines", "arima"])
    assert bad.exit_code == 2 and "unknown baseline 'arima'" in bad.output
    bad = runner.invoke(app, ["train", "--market", MARKET, "--param", "depth"])
    assert bad.exit_code == 2 and "'depth' is not NAME=VALUE" in bad.output
    listed = runner.invoke(app, ["models", "list", "--market", MARKET])
    assert listed.exit_code == 0 and "no registered versions for SYN_NORTH" in listed.output
