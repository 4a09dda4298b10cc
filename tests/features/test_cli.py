"""The aurum CLI end to end in a temporary home (real catalog, real files)."""

import subprocess
import sys

from typer.testing import CliRunner

from features.cli import app

runner = CliRunner()


def run(home, *args):
    return runner.invoke(app, list(args), env={"AURUM_HOME": str(home)})


def test_help_lists_every_stage_and_option_help():
    r = run("unused", "--help")
    assert r.exit_code == 0
    for stage in ("ingest", "data", "markets"):
        assert stage in r.output
    r = run("unused", "ingest", "synthetic", "--help")
    assert "--seed" in r.output and "Random seed" in r.output


def test_ingest_synthetic_stats_show_and_quarantine(tmp_path):
    r = run(tmp_path, "ingest", "synthetic", "--markets", "SYN_NORTH", "--start", "2023-01-01", "--end", "2023-02-01")
    assert r.exit_code == 0, r.output
    assert "prices accepted" in r.output and "744" in r.output
    r = run(tmp_path, "data", "stats")
    assert r.exit_code == 0 and "SYN_NORTH" in r.output and "744" in r.output
    r = run(tmp_path, "data", "show", "SYN_NORTH", "--from", "2023-01-10", "--to", "2023-01-11", "--table", "prices", "--csv")
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == 25
    r = run(tmp_path, "data", "quarantine")
    assert r.exit_code == 0 and "no records" in r.output


def test_bad_input_exits_2_with_one_clear_line(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    proc = subprocess.run([sys.executable, "-m", "features.cli", "ingest", "entsoe", "NL", str(bad)],
                          capture_output=True, text=True, env={"AURUM_HOME": str(tmp_path), "PATH": ""})
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "x.csv, line 1" in proc.stderr and "ENTSO-E" in proc.stderr
    r = run(tmp_path, "ingest", "synthetic", "--start", "2023-13-01")
    assert r.exit_code == 2 and "'2023-13-01' is not a date" in r.output


def test_markets_add_then_ingest_csv_with_a_mapping(tmp_path):
    r = run(tmp_path, "markets", "add", "MYZONE", "--name", "My zone", "--timezone", "Europe/Vienna", "--country", "AT")
    assert r.exit_code == 0, r.output
    data = tmp_path / "my.csv"
    data.write_text("ts;px\n2024-01-01 00:00;50,5\n2024-01-01 01:00;51,5\n")
    mapping = tmp_path / "m.toml"
    mapping.write_text('market = "MYZONE"\ntimestamp = "ts"\ndelimiter = ";"\ndecimal = ","\n[columns]\npx = "price"\n')
    r = run(tmp_path, "ingest", "csv", str(data), "--mapping", str(mapping))
    assert r.exit_code == 0, r.output
    r = run(tmp_path, "data", "show", "MYZONE", "--table", "prices", "--csv")
    assert "50.5" in r.output and "2023-12-31 23:00:00+00:00" in r.output
    r = run(tmp_path, "markets", "add", "bad", "--name", "x", "--timezone", "Mars/Base", "--country", "XX")
    assert r.exit_code != 0


def test_features_compute_for_every_market_with_data(tmp_path):
    run(tmp_path, "ingest", "synthetic", "--markets", "SYN_SOUTH,SYN_EAST", "--start", "2023-01-01", "--end", "2023-01-15")
    r = run(tmp_path, "features", "compute")
    assert r.exit_code == 0, r.output
    assert "SYN_SOUTH: price_features" in r.output and "SYN_EAST: exogenous_features" in r.output
    again = run(tmp_path, "features", "compute", "--markets", "SYN_EAST")
    assert "new versions        0" in again.output and "SYN_SOUTH" not in again.output


def test_feature_store_commands_end_with_a_full_online_day(tmp_path):
    run(tmp_path, "ingest", "synthetic", "--markets", "SYN_NORTH", "--start", "2024-06-01", "--end", "2024-06-20")
    assert run(tmp_path, "features", "compute").exit_code == 0
    r = run(tmp_path, "features", "apply")
    assert r.exit_code == 0, r.output
    assert "day_ahead_v1" in r.output
    assert run(tmp_path, "features", "materialize", "--from", "2024-05-01").exit_code == 0
    r = run(tmp_path, "features", "lookup", "SYN_NORTH")
    assert r.exit_code == 0, r.output
    assert "SYN_NORTH 2024-06-19 (24 delivery hours" in r.output
    assert "None" not in r.output and "NaN" not in r.output  # the default day has every feature
    assert "0 of 24 hours stale, 0 missing values" in r.output
