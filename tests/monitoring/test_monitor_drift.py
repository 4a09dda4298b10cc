"""Drift over a year of weekly windows: a stable market stays quiet, a shifted one alerts soon after the shift.

The windows are judged by the engine and the drift rules exactly as ``aurum monitor drift`` judges
them (the CLI adds the report and the records); the Evidently report is shown to agree with the engine.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest

from driftenv import MARKET, MONITORED_END, REFERENCE_END, SHIFT
from monitoring import alerts
from monitoring.alerts import State
from monitoring.driftcheck import DriftMonitor

WEEK = dt.timedelta(days=7)


def weekly_states(env) -> tuple[list[dt.date], list[State], list[dict]]:
    """State and metrics of every weekly window of the monitored year (local days, Sunday to Saturday)."""
    monitor = DriftMonitor.open(env.settings, MARKET)
    frame = monitor.frame(REFERENCE_END, MONITORED_END)
    rules = alerts.rules_for(env.settings, MARKET, "drift")
    starts, states, metrics = [], [], []
    start = REFERENCE_END
    while start + WEEK <= MONITORED_END:
        m = monitor.assess(frame, start, start + WEEK).metrics()
        starts.append(start)
        states.append(alerts.overall(alerts.evaluate(rules, m)))
        metrics.append(m)
        start += WEEK
    return starts, states, metrics


@pytest.fixture(scope="module")
def stable_year(drift_envs):
    return weekly_states(drift_envs.stable)


def test_a_stable_market_raises_no_alarm_over_a_year_of_weekly_windows(stable_year):
    starts, states, metrics = stable_year
    assert len(starts) == 52 and starts[0] == REFERENCE_END
    noisy = [(s, m["drift_share"], round(m["max_drift_ratio"], 2)) for s, st, m in zip(starts, states, metrics)
             if st != State.OK]
    assert not noisy, f"windows of a stable market out of ok: {noisy}"
    # not a blind monitor: weather moves features a good part of the way to their thresholds
    assert max(m["max_drift_ratio"] for m in metrics) > 0.5
    assert all(m["missing_share"] < 0.01 and m["data_lag_hours"] == 0 for m in metrics)


def test_a_shifted_market_alerts_soon_after_the_shift_and_only_once(drift_envs, stable_year):
    starts, states, metrics = weekly_states(drift_envs.shifted)
    before = [i for i, s in enumerate(starts) if s + WEEK <= SHIFT.start]
    # before the shift the market is the stable one, to the last digit
    assert [metrics[i] for i in before] == [stable_year[2][i] for i in before]
    assert all(states[i] == State.OK for i in before)
    first = next(i for i, s in enumerate(states) if s == State.ALERT)
    assert starts[first] <= SHIFT.start < starts[first] + WEEK + WEEK  # the window of the shift or the next one
    assert all(s == State.ALERT for s in states[first:])  # stays alerted: one state change, one alert
    changes = [alerts.changed(p, s) for p, s in zip([None, *states[:-1]], states)]
    assert sum(changes) == 1
    after = metrics[first + 2]  # fuel x3: far beyond its threshold; load was not shifted
    assert after["drift.fuel_price_eur_mwh"] > 10 * after["drift.load_forecast_mw"]


def test_the_evidently_report_agrees_with_the_engine(drift_envs, tmp_path):
    from monitoring import evidently_adapter

    monitor = DriftMonitor.open(drift_envs.shifted.settings, MARKET)
    start = dt.date(2023, 6, 11)
    assessment = monitor.assess(monitor.frame(start, start + WEEK), start, start + WEEK)
    report = evidently_adapter.drift_report(assessment, drift_share=0.35)
    engine = {c.column: c.score for c in [*assessment.columns, assessment.prediction]}
    assert report.scores() == pytest.approx(engine, rel=1e-12)
    assert report.drifted() == {"count": len(assessment.drifted), "share": pytest.approx(assessment.drift_share)}
    assert len(assessment.drifted) >= 3
    html = report.save_html(tmp_path / "r.html").read_text()
    assert "Wasserstein distance / reference std" in html
    n, total = len(assessment.drifted), len(assessment.columns)
    assert re.search(rf"Drift is detected for [\d.]+% of columns \({n} out of {total}\)", html)
