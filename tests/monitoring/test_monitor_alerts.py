"""Alert rules, state changes and the webhook (against a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest

from features.errors import ConfigurationError
from features.settings import AurumSettings
from monitoring import alerts
from monitoring.alerts import State


def rule(name: str, settings: AurumSettings | None = None, market: str = "SYN_NORTH") -> alerts.Rule:
    return next(r for r in alerts.rules_for(settings or AurumSettings(), market) if r.name == name)


def test_levels_and_bands_give_ok_warn_alert_and_a_missing_metric_is_not_judged():
    share = rule("drift_share")
    assert [share.judge(v) for v in (0.0, 0.2, 0.34, 0.35, 1.0)] == [State.OK, State.WARN, State.WARN, State.ALERT,
                                                                     State.ALERT]
    coverage = rule("coverage")
    assert [coverage.judge(v) for v in (0.80, 0.74, 0.70, 0.90, 0.60, 0.97)] == [
        State.OK, State.OK, State.WARN, State.WARN, State.ALERT, State.ALERT]
    assert share.judge(math.nan) is None and share.judge(None) is None
    outcomes = alerts.evaluate(alerts.rules_for(AurumSettings(), "SYN_NORTH"),
                               {"drift_share": 0.25, "max_drift_ratio": 0.5, "missing_share": 0.0})
    states = {o.rule.name: o.state for o in outcomes}
    assert states["drift_share"] == State.WARN and states["feature_drift"] == State.OK
    assert states["error_ratio"] is None and states["coverage"] is None  # the quality monitor is not wired yet
    assert alerts.overall(outcomes) == State.WARN
    assert alerts.overall([]) == State.OK
    assert {r.monitor for r in alerts.rules_for(AurumSettings(), "SYN_NORTH", "drift")} == {"drift"}


def test_a_market_overrides_its_levels_and_a_bad_override_is_named(monkeypatch):
    monkeypatch.setenv("AURUM_MONITORING__MARKET_RULES",
                       json.dumps({"SYN_NORTH": {"drift_share_alert": 0.25, "coverage_warn_band": [0.7, 0.9]}}))
    settings = AurumSettings()
    assert rule("drift_share", settings).alert == 0.25
    assert rule("drift_share", settings, "SYN_SOUTH").alert == 0.35  # other markets keep the defaults
    assert rule("coverage", settings).warn == (0.7, 0.9)
    bad = AurumSettings(monitoring={"market_rules": {"NP": {"drift_share_alrt": 0.3}}})
    with pytest.raises(ConfigurationError, match=r"market 'NP' name unknown levels \['drift_share_alrt'\]"):
        alerts.rules_for(bad, "NP")
    with pytest.raises(ConfigurationError, match="market 'NP': missing_share_warn"):
        alerts.rules_for(AurumSettings(monitoring={"market_rules": {"NP": {"missing_share_warn": 2.0}}}), "NP")


def test_only_a_change_of_state_raises_an_alert():
    states = [State.OK, State.OK, State.WARN, State.WARN, State.ALERT, State.ALERT, State.OK]
    previous = [None, *states[:-1]]
    assert [alerts.changed(p, s) for p, s in zip(previous, states)] == [False, False, True, False, True, False, True]
    assert alerts.changed(None, State.ALERT)  # a first check that is not ok alerts
    assert alerts.EXIT_CODES == {State.OK: 0, State.WARN: 1, State.ALERT: 3}  # 2 is every error


def an_alert() -> alerts.Alert:
    outcomes = alerts.evaluate([rule("drift_share"), rule("feature_drift")],
                               {"drift_share": 0.5, "max_drift_ratio": 3.0})
    return alerts.Alert("SYN_NORTH", "drift", "day_ahead_SYN_NORTH", "3", State.OK, State.ALERT, "abc123",
                        dt.date(2023, 6, 5), dt.date(2023, 6, 12), dt.datetime(2023, 6, 12, 6, tzinfo=dt.timezone.utc),
                        outcomes, {"report": "/tmp/r.html"})


def test_the_webhook_receives_the_alert_as_json(receiver):
    url = f"http://127.0.0.1:{receiver.server_port}/hooks/aurum?token=secret"
    delivery = alerts.deliver(an_alert(), url, timeout_s=5)
    assert delivery.delivered and delivery.status == 200
    assert delivery.target == f"http://127.0.0.1:{receiver.server_port}"  # no path or token in the record
    [(path, content_type, body)] = receiver.received
    assert path == "/hooks/aurum?token=secret" and content_type == "application/json"
    assert body["event"] == "aurum.monitoring.state_change"
    assert (body["market"], body["monitor"]) == ("SYN_NORTH", "drift")
    assert (body["previous_state"], body["state"]) == ("ok", "alert")
    assert body["model"] == {"name": "day_ahead_SYN_NORTH", "version": "3"}
    assert body["window"] == {"start": "2023-06-05", "end": "2023-06-12", "end_exclusive": True}
    assert {r["rule"]: r["state"] for r in body["rules"]} == {"drift_share": "alert", "feature_drift": "alert"}
    assert "ok -> alert" in body["message"] and "drift_share 0.5 (alert)" in body["message"]


def test_a_failed_delivery_is_reported_not_raised(receiver):
    receiver.status = 500
    failed = alerts.deliver(an_alert(), f"http://127.0.0.1:{receiver.server_port}/", timeout_s=5)
    assert not failed.delivered and failed.status == 500 and failed.error == "HTTP 500"
    port = receiver.server_port
    receiver.shutdown()
    receiver.server_close()
    refused = alerts.deliver(an_alert(), f"http://127.0.0.1:{port}/", timeout_s=5)
    assert not refused.delivered and refused.status is None and "ConnectError" in refused.error
    with pytest.raises(ConfigurationError, match="webhook URL 'ftp://example.com/x' is not an http"):
        alerts.check_webhook_url("ftp://example.com/x")
