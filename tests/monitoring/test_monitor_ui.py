"""``aurum monitor ui``: a real Evidently UI process on a free loopback port serves one project per market whose
dashboard plots the monitoring time series of monitoring_metrics over every check, reports included."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest

from driftenv import MARKET, aurum
from features.lake import Lake
from monitoring import metricstore

STARTUP_S = 120  # bounded wait for the server (imports and the workspace sync take ~10 s here)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def series(base: str, project: str, column: str) -> dict[str, float]:
    """The dashboard series of one trend column: check run id -> value (what the UI plots over time)."""
    body = {"series_filter": [{"tags": [], "metadata": {}, "metric": "evidently:metric_v2:MeanValue",
                               "metric_labels": {"column": column}}]}
    data = httpx.post(f"{base}/api/v2/snapshots/{project}/data_series_batch", json=body, timeout=30).json()
    values = data["series"][0]["values"] if data["series"] else []
    return {src["metadata"]["run_id"]: v for src, v in zip(data["sources"], values) if v is not None}


@pytest.fixture
def checked(archived_envs, monkeypatch, capsys):
    """The stable market after a drift check and two performance checks on this machine, and one performance
    check that another machine appended to the shared table (no report, not yet in this workspace)."""
    env = archived_envs.stable
    home = env.settings.home_dir
    for args in (("drift", "--end", "2023-06-25"), ("performance", "--end", "2023-06-25"),
                 ("performance", "--end", "2023-07-02")):
        code, out, err = aurum(monkeypatch, capsys, home, "monitor", args[0], "--market", MARKET, *args[1:])
        assert code in (0, 1), out + err
    lake = Lake.open(env.settings, create=False)
    end = pd.Timestamp("2023-07-08", tz="Europe/Berlin").tz_convert("UTC")
    metricstore.append(lake, pd.DataFrame({
        "run_id": "elsewhere0000001", "market": MARKET, "model_name": f"day_ahead_{MARKET}", "model_version": "1",
        "monitor": "performance", "window_start": end - pd.Timedelta(days=7), "window_end": end,
        "metric": ["error_ratio", "state"], "value": [2.5, 2.0], "state": ["alert", "alert"],
        "computed_at": pd.Timestamp(dt.datetime.now(dt.timezone.utc))}))
    return env


def test_the_ui_serves_each_markets_trends_over_every_check(checked, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, AURUM_HOME=str(checked.settings.home_dir), DO_NOT_TRACK="1")
    out_file, err_file = tmp_path / "ui.out", tmp_path / "ui.err"  # files, not pipes: a full pipe would block it
    with open(out_file, "w") as out, open(err_file, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "features.cli", "monitor", "ui", "--port", str(port)],
                                env=env, stdout=out, stderr=err, text=True)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert proc.poll() is None, f"the UI exited with {proc.returncode}: {err_file.read_text()[-2000:]}"
            try:
                if httpx.get(f"{base}/api/version", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the UI did not answer on {base} within {STARTUP_S} s"
            time.sleep(0.5)
        page = httpx.get(base, timeout=10)
        assert page.status_code == 200 and "Evidently" in page.text
        [project] = [p["id"] for p in httpx.get(f"{base}/api/projects", timeout=10).json() if p["name"] == MARKET]
        assert httpx.get(f"{base}/projects/{project}", timeout=10).status_code == 200  # the dashboard's page
        dashboard = httpx.get(f"{base}/api/v2/dashboards/{project}", timeout=10).json()
        titles = {p["title"] for p in dashboard["panels"]}
        assert {"Share of drifted features", "Drift score of every feature", "Error ratio",
                "MAE: live and backtest", "80 % interval coverage: live and backtest"} <= titles

        # the pictures are the table's time series: every check's value, this machine's and the other one's
        table = metricstore.read(Lake.open(checked.settings, create=False), MARKET)
        for monitor, metric in (("performance", "error_ratio"), ("drift", "drift_share")):
            rows = table[(table["monitor"] == monitor) & (table["metric"] == metric)]
            expected = dict(zip(rows["run_id"], rows["value"]))
            got = series(base, project, f"{monitor}.{metric}")
            assert got == pytest.approx(expected, rel=1e-12), (monitor, metric)
            assert len(got) >= (3 if monitor == "performance" else 1)
        assert series(base, project, "performance.error_ratio")["elsewhere0000001"] == 2.5

        reports = httpx.get(f"{base}/api/projects/{project}/reports", timeout=10).json()
        names = {r["name"] for r in reports}
        assert any(n.startswith("performance 2023-06-25..2023-07-01 (") for n in names)
        assert any(n.startswith("drift 2023-06-18..2023-06-24 (") for n in names)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert f"{MARKET}: {base}/projects/{project}" in out_file.read_text()
