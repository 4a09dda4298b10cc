"""``aurum monitor performance`` through the real entry point: archived forecasts (written by serving's own
batch scoring and archive writer) against published prices, its records, its alerts, and bad input."""

from __future__ import annotations

import datetime as dt
import json
import re

import numpy as np
import pandas as pd
import pytest

from driftenv import MARKET, aurum, printed_path
from features.lake import FORECASTS_TABLE, Lake, forecast_table_layout
from features.marketdata import MarketData
from models import mlflow_model as ml
from monitoring import metricstore

NAME = f"day_ahead_{MARKET}"
WINDOW_END = "2023-06-18"  # local days 2023-06-11 .. 2023-06-17
EXTRA_DAY = dt.date(2023, 6, 12)  # the day that gets API duplicates, a scenario, a late row and a shadow challenger


def api_rows(env, base: pd.DataFrame, *, shift: float, issued, served, version: str = "1", alias: str = "champion",
             shadow: bool = False, scenario: str | None = None, source: str = "api", values=None) -> pd.DataFrame:
    """Archive rows like the forecast service writes: the batch rows' hours with values moved by ``shift``."""
    from serving.archive import forecast_frame

    q = np.stack(base["values"].to_numpy()) + shift if values is None else np.repeat(values[:, None], 3, axis=1)
    return forecast_frame(
        market=MARKET, timezone="Europe/Berlin", delivery_start=base["delivery_start"], issued_at=issued,
        predictions=pd.DataFrame(q, columns=["q10", "q50", "q90"]), levels=(0.1, 0.5, 0.9), model_name=NAME,
        model_version=version, request_id=f"req-{version}-{shift}-{scenario}", tenant="acme",
        feature_service="day_ahead_v1", source=source, model_alias=alias, served_at=served, shadow=shadow,
        scenario=scenario)


@pytest.fixture(scope="module")
def stable(archived_envs):
    """The stable market, whose archive also holds, for one day, what a live service adds: API answers of the
    champion (one issued earlier, one at gate closure but served before the batch backfill), a what-if
    scenario, an answer issued after gate closure, and a shadow challenger."""
    from serving.archive import read_forecasts, to_forecast_table, write_forecasts

    env = archived_envs.stable
    lake = Lake.open(env.settings, create=False)
    lo = pd.Timestamp(EXTRA_DAY).tz_localize("Europe/Berlin")
    batch = read_forecasts(lake, MARKET, lo, lo + pd.Timedelta(days=1), source="batch")
    gate = batch["issued_at"].iloc[0]  # gate closure on D-1, the batch rows' issue time
    prices = MarketData(lake).prices(MARKET, lo, lo + pd.Timedelta(days=1)).set_index("delivery_start")["price"]
    actual = prices.reindex(batch["delivery_start"]).to_numpy()
    extra = pd.concat([
        api_rows(env, batch, shift=-1.0, issued=gate, served=gate + pd.Timedelta(minutes=5)),  # the one that counts
        api_rows(env, batch, shift=50.0, issued=gate - pd.Timedelta(hours=20), served=gate - pd.Timedelta(hours=20)),
        api_rows(env, batch, shift=500.0, issued=gate, served=gate, source="scenario", scenario="windless"),
        api_rows(env, batch, shift=300.0, issued=gate + pd.Timedelta(hours=2), served=gate + pd.Timedelta(hours=2)),
        api_rows(env, batch, shift=0.0, issued=gate, served=gate, version="2", alias="challenger", shadow=True,
                 values=actual + 1.0),
    ], ignore_index=True)
    write_forecasts(lake, to_forecast_table(extra))
    return env, batch, actual


def oracle_mae(env, batch_day: pd.DataFrame, start: str, end: str) -> float:
    """MAE of the forecasts that should count, recomputed from the raw tables: the batch forecasts, and on
    EXTRA_DAY the API answer issued at gate closure and served first (the batch median minus 1)."""
    from serving.archive import read_forecasts

    lake = Lake.open(env.settings, create=False)
    lo, hi = (pd.Timestamp(d).tz_localize("Europe/Berlin") for d in (start, end))
    f = read_forecasts(lake, MARKET, lo, hi, source="batch", model_version="1")[["delivery_start", "forecast"]]
    f.loc[f["delivery_start"].isin(batch_day["delivery_start"]), "forecast"] -= 1.0
    p = MarketData(lake).prices(MARKET, lo, hi)[["delivery_start", "price"]]
    j = f.merge(p, on="delivery_start")
    assert len(j) == 168
    return float(np.mean(np.abs(j["price"] - j["forecast"])))


def test_a_performance_check_counts_what_was_served_and_writes_every_record(stable, monkeypatch, capsys):
    env, batch_day, actual = stable
    home = env.settings.home_dir
    code, out, err = aurum(monkeypatch, capsys, home, "monitor", "performance", "--market", MARKET, "--window", "7d",
                           "--end", WINDOW_END)
    assert code == 0, out + err
    assert "local days 2023-06-11 .. 2023-06-17: 168 hours judged (0 without a published price yet)" in out
    assert "expectation: the champion's backtest 2022-12-25 .. 2023-01-07 (14 days" in out
    summary = json.loads(printed_path(out, "summary").read_text())
    m = summary["metrics"]
    assert m["mae"] == pytest.approx(oracle_mae(env, batch_day, "2023-06-11", WINDOW_END), rel=1e-9)
    assert m["error_ratio"] == pytest.approx(m["mae"] / summary["expectation"]["metrics"]["mae"], rel=1e-12)
    assert m["error_ratio"] < 1.25 and summary["state"] == "ok"
    sel = summary["selection"]
    assert (sel["champion_rows"], sel["champion_duplicates_dropped"]) == (168, 48)  # 24 batch + 24 earlier API
    assert (sel["scenario_rows"], sel["issued_after_gate_closure"]) == (24, 24)
    [challenger] = summary["challengers"]
    assert (challenger["version"], challenger["alias"], challenger["shadow"], challenger["hours"]) == ("2", "challenger",
                                                                                                    True, 24)
    assert challenger["metrics"]["mae"] == pytest.approx(1.0)
    champion_day = np.abs(actual - (np.stack(batch_day["values"].to_numpy())[:, 1] - 1.0)).mean()
    assert challenger["mae_vs_champion"] == pytest.approx(1.0 / champion_day)
    assert [r["lead_bin"] for r in summary["by_lead"]] == [12, 18, 24, 30]
    assert len(summary["by_hour"]) == 24 and all(r["error_ratio"] is not None for r in summary["by_hour"])
    assert {r["rule"]: r["state"] for r in summary["rules"]} == {"error_ratio": "ok", "coverage": "ok"}
    assert summary["evidently"]["agrees_with_engine"] is True
    html = printed_path(out, "report")
    assert html.name.startswith("performance_2023-06-11_2023-06-17_") and html.stat().st_size > 100_000

    rows = metricstore.read(Lake.open(env.settings, create=False), MARKET, "performance")
    mine = rows[rows["run_id"] == summary["run_id"]].set_index("metric")
    assert mine.loc["error_ratio", "value"] == pytest.approx(m["error_ratio"])
    assert mine.loc["error_ratio", "state"] == "ok" and mine.loc["state", "state"] == "ok"
    assert "mae.hour_07" in mine.index and "challenger.v2.mae_vs_champion" in mine.index

    run = ml.run_record(summary["mlflow"]["run_id"])
    assert run["tags"]["monitor"] == "performance" and run["metrics"]["error_ratio"] == pytest.approx(m["error_ratio"])
    tags = ml.version(NAME, "1").tags
    assert tags["monitoring.performance.state"] == "ok" and tags["monitoring.performance.run_id"] == summary["run_id"]


def test_a_regime_shift_makes_the_errors_alert_once(archived_envs, receiver, monkeypatch, capsys):
    home = archived_envs.shifted.settings.home_dir
    url = f"http://127.0.0.1:{receiver.server_port}/hook"
    check = ("monitor", "performance", "--market", MARKET, "--window", "7d", "--webhook", url)
    code, out, err = aurum(monkeypatch, capsys, home, *check, "--end", "2023-05-28")  # the last week before the shift
    assert code == 0, out + err
    code, out, err = aurum(monkeypatch, capsys, home, *check, "--end", "2023-06-11")  # the first week after it
    assert code == 3, out + err
    assert re.search(r"^ALERT SYN_NORTH performance: ok -> alert", out, re.M)
    ratio = float(re.search(r"^rule error_ratio\s+([\d.]+)\s+alert$", out, re.M).group(1))
    assert ratio > 3  # fuel x3: the champion's forecasts stay at the old price level
    [(_, _, body)] = receiver.received
    assert (body["monitor"], body["previous_state"], body["state"]) == ("performance", "ok", "alert")
    assert {r["rule"]: r["state"] for r in body["rules"]}["error_ratio"] == "alert"
    code, out, err = aurum(monkeypatch, capsys, home, *check, "--end", "2023-06-18")
    assert code == 3 and "ALERT" not in out and len(receiver.received) == 1
    rows = metricstore.read(Lake.open(archived_envs.shifted.settings, create=False), MARKET, "performance")
    assert rows.loc[rows["metric"] == "state", "state"].tolist()[-3:] == ["ok", "alert", "alert"]


def test_bad_requests_exit_2_with_a_clear_message_and_leave_nothing_behind(archived_envs, monkeypatch, capsys):
    env = archived_envs.stable
    home = env.settings.home_dir
    reports = home / "monitoring" / "reports"
    before = sorted(reports.rglob("*"))
    lake = Lake.open(env.settings, create=False)
    checks = len(metricstore.read(lake))
    perf = ("monitor", "performance", "--market")
    cases = [
        ((*perf, MARKET, "--end", "2023-03-01"),
         "the archive holds no served forecast of day_ahead_SYN_NORTH version 1 (the champion); it has no forecast at "
         "all; score the window with the champion first (aurum score --market SYN_NORTH --from 2023-02-22 --to "
         "2023-02-28)"),
        ((*perf, MARKET, "--end", WINDOW_END, "--as-of", "2023-06-10T00:00"),
         "none of the 168 forecast hours of day_ahead_SYN_NORTH version 1 has a price published by "
         "2023-06-10T00:00:00+00:00; the latest published price is for 2023-06-10"),
        ((*perf, "NOPE"), "unknown market 'NOPE'"),
        ((*perf, "SYN_SOUTH"), "market 'SYN_SOUTH' has no champion to monitor"),
        ((*perf, MARKET, "--as-of", "yesterday"), "'yesterday' is not a time; expected"),
        ((*perf, MARKET, "--window", "0d"), "window '0d' is not a length of days"),
    ]
    for args, message in cases:
        code, out, err = aurum(monkeypatch, capsys, home, *args)
        assert code == 2, (args, out, err)
        assert message in " ".join((out + err).split()), (args, out + err)
    assert sorted(reports.rglob("*")) == before
    assert len(metricstore.read(lake)) == checks


def test_an_archive_without_columns_or_a_champion_without_backtest_errors_is_refused(tmp_path, monkeypatch, capsys):
    from pyiceberg.schema import Schema

    from features.ingest import ingest_synthetic
    from features.settings import AurumSettings

    settings = AurumSettings(home=tmp_path / "home")
    lake = Lake.open(settings)
    ingest_synthetic(lake, [MARKET], dt.date(2023, 6, 1), dt.date(2023, 6, 10), seed=3)
    perf = ("monitor", "performance", "--market", MARKET, "--end", "2023-06-10")
    code, out, err = aurum(monkeypatch, capsys, settings.home_dir, *perf)
    assert code == 2 and "there is no forecast archive 'serving.forecasts' yet: nothing was served or batch-scored" in err

    schema, spec, order = forecast_table_layout()  # an archive of an older serving, without two columns
    lake.ensure_table(FORECASTS_TABLE, Schema(*(f for f in schema.fields if f.name not in ("shadow", "quality"))),
                      spec, order)
    code, out, err = aurum(monkeypatch, capsys, settings.home_dir, *perf)
    assert code == 2 and "the forecast archive 'serving.forecasts' lacks columns ['shadow', 'quality']" in err

    lake.catalog.drop_table(FORECASTS_TABLE)
    lake.ensure_table(FORECASTS_TABLE, schema, spec, order)
    ml.configure(settings.mlflow_tracking_uri())  # a champion registered by hand: no backtest behind it
    with ml.run(ml.experiment("by-hand"), "registered by hand") as run_id:
        ml.log_params({"note": "no backtest"})
    ml.register(f"runs:/{run_id}/model", NAME, tags={"run_id": run_id})
    ml.set_alias(NAME, "champion", "1")
    code, out, err = aurum(monkeypatch, capsys, settings.home_dir, *perf)
    assert code == 2, out + err
    assert f"day_ahead_SYN_NORTH version 1: its training run '{run_id}' records no backtest metric ['mae']" in err
    assert not (settings.home_dir / "monitoring" / "reports").exists()
