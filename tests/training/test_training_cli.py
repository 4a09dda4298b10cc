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


def test_as_of_days_outside_the_data_and_bad_gate_modes_are_clear_errors(monkeypatch, market_env, tmp_path):
    from features.errors import TrainingDataError

    env(monkeypatch, market_env, tmp_path)
    monkeypatch.setenv("COLUMNS", "200")  # usage errors print in a box as wide as the terminal
    runner = CliRunner()
    # prices from 2023-11-01 (features from the 9th, a week of lags later) to 2024-04-14; a 28-day backtest
    # needs 56 days of history before the as-of day
    early = runner.invoke(app, ["train", "--market", MARKET, "--model", "naive", "--as-of", "2023-12-01"])
    assert isinstance(early.exception, TrainingDataError)
    assert str(early.exception) == ("as-of day 2023-12-01 leaves 22 days of usable history before it (market "
                                    "'SYN_NORTH' has features from 2023-11-09); a 28-day backtest needs at least 56; "
                                    "expected a day from 2024-01-04 to 2024-04-15")
    late = runner.invoke(app, ["train", "--market", MARKET, "--model", "naive", "--as-of", "2024-05-01"])
    assert isinstance(late.exception, TrainingDataError)
    assert str(late.exception).startswith("as-of day 2024-05-01 is after the data: market 'SYN_NORTH' has prices up "
                                          "to 2024-04-14; expected a day from 2024-01-04 to 2024-04-15")
    bad = runner.invoke(app, ["train", "--market", MARKET, "--as-of", "2024-02-30"])
    assert bad.exit_code == 2 and "'2024-02-30' is not a day; expected YYYY-MM-DD" in bad.output
    bad = runner.invoke(app, ["train", "--market", MARKET, "--against", "best"])
    assert bad.exit_code == 2 and "approval mode 'best' is unknown; expected one of recipe, served" in bad.output
    bad = runner.invoke(app, ["approve", "--market", MARKET, "--against", "frozen"])
    assert bad.exit_code == 2 and "approval mode 'frozen' is unknown" in bad.output
    bad = runner.invoke(app, ["backtest", "--market", MARKET, "--as-of", "2024-04-01", "--to", "2024-04-08"])
    assert bad.exit_code == 2 and "both end the window" in bad.output
    listed = runner.invoke(app, ["models", "list", "--market", MARKET])
    assert "no registered versions for SYN_NORTH" in listed.output  # nothing was registered by the refusals


def test_backtest_as_of_a_day_ends_the_window_there(monkeypatch, market_env, tmp_path):
    env(monkeypatch, market_env, tmp_path)
    out = CliRunner().invoke(app, ["backtest", "--market", MARKET, "--model", "naive", "--as-of", "2024-04-08",
                                   "--backtest-days", "7", "--baselines", "none"])
    assert out.exit_code == 0, out.output
    assert re.search(r"^run \w+: backtest of naive on SYN_NORTH, 2024-04-01 \.\. 2024-04-08", out.output, re.M)
    late = CliRunner().invoke(app, ["backtest", "--market", MARKET, "--model", "naive", "--as-of", "2024-04-20"])
    assert "as-of day 2024-04-20 is after the data" in str(late.exception)
