"""Alert rules: metric levels that make a check ``ok``, ``warn`` or ``alert``, one alert per state change.

A rule reads one metric of a check and compares it with a warn and an alert level
(``features.settings.AlertRules``, overridable per market in ``AURUM_MONITORING__MARKET_RULES``):
``value >= alert`` is ``alert``, ``value >= warn`` is ``warn``; a band rule (coverage) warns outside
its warn band and alerts outside its alert band. A rule whose metric the check did not produce is
not evaluated. A check's state is its worst rule's. Drift rules judge ``aurum monitor drift``; the
performance rules (``error_ratio``, ``coverage``) ``aurum monitor performance``.

An alert is raised when a check's state differs from the previous check's of the same market and
monitor (the ``state`` row of ``monitoring_metrics``; before the first check the state counts as
``ok``): ok -> warn, warn -> alert, alert -> ok (recovered), and so on; a state that persists is not
re-alerted. Alerts are printed and, when a webhook URL is set, POSTed as JSON (:meth:`Alert.body`).

Exit codes of the CLI, for schedulers: 0 ok, 1 warn, 3 alert (2 is every error: a bad option, an
unknown market, no champion, a window without data).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from enum import IntEnum
from urllib.parse import urlsplit

from pydantic import ValidationError

from features.errors import ConfigurationError
from features.settings import AlertRules, AurumSettings


class State(IntEnum):
    OK = 0
    WARN = 1
    ALERT = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> State:
        return cls[text.upper()]


EXIT_CODES: dict[State, int] = {State.OK: 0, State.WARN: 1, State.ALERT: 3}

# name, monitor, metric, what it means
RULES: tuple[tuple[str, str, str, str], ...] = (
    ("drift_share", "drift", "drift_share", "share of monitored features whose drift reaches their threshold"),
    ("feature_drift", "drift", "max_drift_ratio",
     "largest drift of one monitored feature, in multiples of its calibrated threshold"),
    ("prediction_drift", "drift", "prediction_drift",
     "drift of the champion's median forecast, in multiples of its calibrated threshold"),
    ("missing_share", "drift", "missing_share", "share of missing feature values in the window"),
    ("data_lag_hours", "drift", "data_lag_hours",
     "stale data: hours from the window's last delivery hour with features to the window's end"),
    ("error_ratio", "performance", "error_ratio", "live MAE over the champion's backtest MAE"),
    ("coverage", "performance", "coverage_0.8",
     "coverage of the 80 % interval (bands widened to what sampling explains over the window's days)"),
)


@dataclass(frozen=True)
class Rule:
    name: str
    monitor: str
    metric: str
    warn: float | tuple[float, float]
    alert: float | tuple[float, float]
    description: str

    @property
    def band(self) -> bool:
        return isinstance(self.warn, tuple)

    def judge(self, value: float | None) -> State | None:
        """The state ``value`` puts this rule in; None when there is no value to judge."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if self.band:
            (wlo, whi), (alo, ahi) = self.warn, self.alert
            return State.ALERT if not alo <= value <= ahi else State.WARN if not wlo <= value <= whi else State.OK
        return State.ALERT if value >= self.alert else State.WARN if value >= self.warn else State.OK


def levels_for(settings: AurumSettings, market: str) -> AlertRules:
    """The rule levels of ``market``: the defaults with its overrides.

    Raises:
        ConfigurationError: an override names no rule level, or makes a level invalid.
    """
    base = settings.monitoring.rules.model_dump()
    overrides = settings.monitoring.market_rules.get(market, {})
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise ConfigurationError(f"monitoring rules of market {market!r} name unknown levels {unknown}; "
                                 f"expected some of {sorted(base)}")
    try:
        return AlertRules(**{**base, **overrides})
    except ValidationError as exc:
        raise ConfigurationError(f"monitoring rules of market {market!r}: "
                                 + "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())) from exc


def widen_for_sampling(rule: Rule, days: int, *, warn_z: float, alert_z: float, nominal: float = 0.8) -> Rule:
    """A band rule whose bands are widened to at least ``nominal`` ± z standard errors of a calibrated
    interval's coverage over ``days`` days (hours of one day miss together, so the effective sample is
    the number of days: the standard error is ``sqrt(nominal (1 - nominal) / days)``, 0.15 over a week);
    the approval gate widens its coverage band the same way. Other rules are returned unchanged."""
    if not rule.band or days < 1:
        return rule
    se = math.sqrt(nominal * (1 - nominal) / days)

    def widen(band: tuple[float, float], z: float) -> tuple[float, float]:
        return (min(band[0], max(0.0, nominal - z * se)), max(band[1], min(1.0, nominal + z * se)))

    return Rule(rule.name, rule.monitor, rule.metric, widen(rule.warn, warn_z), widen(rule.alert, alert_z),
                rule.description)


def rules_for(settings: AurumSettings, market: str, monitor: str | None = None) -> list[Rule]:
    """The rule set of ``market`` (of one monitor when given)."""
    levels = levels_for(settings, market).model_dump()
    out = []
    for name, mon, metric, description in RULES:
        if monitor is not None and mon != monitor:
            continue
        if f"{name}_warn_band" in levels:
            warn, alert = tuple(levels[f"{name}_warn_band"]), tuple(levels[f"{name}_alert_band"])
        else:
            warn, alert = levels[f"{name}_warn"], levels[f"{name}_alert"]
        out.append(Rule(name, mon, metric, warn, alert, description))
    return out


@dataclass(frozen=True)
class RuleOutcome:
    rule: Rule
    value: float | None
    state: State | None  # None: not evaluated (the check has no such metric)

    def as_dict(self) -> dict[str, object]:
        return {"rule": self.rule.name, "metric": self.rule.metric, "value": self.value,
                "state": self.state.label if self.state is not None else "not evaluated",
                "warn": self.rule.warn, "alert": self.rule.alert, "description": self.rule.description}


def evaluate(rules: list[Rule], metrics: dict[str, float]) -> list[RuleOutcome]:
    return [RuleOutcome(r, metrics.get(r.metric), r.judge(metrics.get(r.metric))) for r in rules]


def overall(outcomes: list[RuleOutcome]) -> State:
    """The worst evaluated rule's state (ok when none was evaluated)."""
    return max((o.state for o in outcomes if o.state is not None), default=State.OK)


def changed(previous: State | None, state: State) -> bool:
    """Whether a check in ``state`` after one in ``previous`` (None: the first check) raises an alert."""
    return (previous if previous is not None else State.OK) != state


@dataclass
class Alert:
    """One state change of a market's monitor."""

    market: str
    monitor: str
    model_name: str
    model_version: str
    previous: State | None
    state: State
    run_id: str
    window_start: dt.date
    window_end: dt.date  # exclusive
    computed_at: dt.datetime
    reasons: list[RuleOutcome]
    links: dict[str, str] = field(default_factory=dict)

    def message(self) -> str:
        was = self.previous.label if self.previous is not None else "none"
        why = ", ".join(f"{o.rule.name} {o.value:.3g} ({o.state.label})" for o in self.reasons
                        if o.state is not None and o.state > State.OK and o.value is not None)
        return (f"{self.market} {self.monitor}: {was} -> {self.state.label} "
                f"({self.model_name} v{self.model_version}, {self.window_start} .. "
                f"{self.window_end - dt.timedelta(days=1)})" + (f": {why}" if why else ""))

    def body(self) -> dict[str, object]:
        """The webhook's JSON body."""
        return {
            "event": "aurum.monitoring.state_change", "market": self.market, "monitor": self.monitor,
            "model": {"name": self.model_name, "version": self.model_version},
            "previous_state": self.previous.label if self.previous is not None else None,
            "state": self.state.label, "run_id": self.run_id,
            "window": {"start": str(self.window_start), "end": str(self.window_end), "end_exclusive": True},
            "computed_at": self.computed_at.isoformat(), "message": self.message(),
            "rules": [o.as_dict() for o in self.reasons], "links": self.links,
        }


@dataclass
class Delivery:
    """What became of a webhook POST; ``target`` is the URL's scheme and host only (paths often hold secrets)."""

    target: str
    delivered: bool
    status: int | None = None
    error: str | None = None


def check_webhook_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host.

    Raises:
        ConfigurationError: anything else (checked before a check starts, not when an alert is due).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"webhook URL {url!r} is not an http(s) URL with a host; expected such as "
                                 "https://hooks.example.com/aurum")
    return url


def deliver(alert: Alert, url: str, timeout_s: float = 10.0) -> Delivery:
    """POST the alert's JSON body to ``url``; a failure is returned (and reported by the caller), never raised."""
    import httpx

    parts = urlsplit(url)
    target = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Delivery(target, False, None, f"webhook URL scheme {parts.scheme!r} is not http or https")
    try:
        response = httpx.post(url, json=alert.body(), timeout=timeout_s)
        response.raise_for_status()
        return Delivery(target, True, response.status_code)
    except httpx.HTTPStatusError as exc:
        return Delivery(target, False, exc.response.status_code, f"HTTP {exc.response.status_code}")
    except httpx.HTTPError as exc:
        return Delivery(target, False, None, f"{type(exc).__name__}: {exc}")
