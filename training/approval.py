"""The approval gate: which registered version is the ``champion`` that serving uses.

A candidate is compared with the current champion on the candidate's backtest window, in one of two
modes (``against``):

- ``recipe`` (the default of ``aurum train`` and ``aurum approve``): the champion's recipe (its
  :class:`~training.specs.ModelSpec`) is backtested again on that window, same days, same refit
  cadence. A new recipe against the old one: the data scientist's question.
- ``served``: the champion version as it is served, loaded from the registry and never refitted,
  forecasts each day of the window from the same point-in-time features the candidate's rolling
  backtest used. A fresh fit against the model in service: the question of the closed retraining loop
  (a retrain of the champion's own recipe ties with it in ``recipe`` mode by construction). Days the
  champion was fitted on are in-sample for it (flattering): only the days after its training end are
  judged, and fewer than :data:`MIN_JUDGED_DAYS` of them is an error.

The candidate is promoted only when its MAE is lower by the configured margin and it passes the
quality checks (no missing forecast, the 80 % interval's coverage inside the band, widened on short
backtests to what sampling explains, no local hour much worse than the champion's). Otherwise it
becomes the ``challenger``, with the reason on the version. The first champion of a market must beat
the weekly naive forecast.

Every alias change, automatic or by a person (``aurum models promote|rollback``), is recorded twice:
as tags on the version and as a run of the ``<experiment>-registry`` experiment (who, when, why,
the metrics it was based on, what the candidate was compared with), which ``aurum models history``
lists.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
from dataclasses import dataclass, field

import numpy as np

from features.errors import ConfigurationError, RegistryError
from features.settings import ApprovalSettings, AurumSettings
from models import mlflow_model as ml
from training.backtest import Backtest

CHAMPION, CHALLENGER = "champion", "challenger"
RECIPE, SERVED = "recipe", "served"
AGAINST = (RECIPE, SERVED)
MIN_JUDGED_DAYS = 7  # served mode: out-of-sample days of the champion needed to judge (one of each weekday)


@dataclass
class Decision:
    """The gate's verdict on one candidate."""

    promote: bool
    reason: str
    checks: dict[str, bool] = field(default_factory=dict)
    candidate: dict[str, float] = field(default_factory=dict)
    champion: dict[str, float] = field(default_factory=dict)
    against: str = RECIPE  # what the candidate was compared with: the champion's recipe or the served version
    champion_version: str | None = None
    judged: tuple[str, str] | None = None  # first and last local day judged

    @property
    def alias(self) -> str:
        return CHAMPION if self.promote else CHALLENGER


def check_against(against: str) -> str:
    """``against`` if it names a gate mode; :class:`ConfigurationError` otherwise."""
    if against not in AGAINST:
        raise ConfigurationError(f"approval mode {against!r} is unknown; expected one of {', '.join(AGAINST)}")
    return against


def judge(candidate: Backtest, champion: Backtest | None, rules: ApprovalSettings, *, against: str = RECIPE,
          basis: str = "") -> Decision:
    """The verdict for ``candidate`` against ``champion`` (None: there is none yet); pure, no I/O.

    ``champion`` is the champion's recipe backtested again (``against="recipe"``) or the served
    version's frozen forecasts (``"served"``), over the same hours as the candidate. ``basis``, when
    given, starts the reason: what was compared, on which days.
    """
    check_against(against)
    decision = _judge(candidate, champion, rules)
    days = sorted(candidate.forecasts["day"].unique())
    decision.against, decision.judged = against, (str(days[0]), str(days[-1]))
    if basis:
        decision.reason = f"{basis}: {decision.reason}"
    return decision


def _judge(candidate: Backtest, champion: Backtest | None, rules: ApprovalSettings) -> Decision:
    c = candidate.overall()
    q = candidate.forecasts[candidate.quantile_columns]
    checks: dict[str, bool] = {"no_missing_forecast": bool(q.notna().all().all())}
    reasons: list[str] = []
    if not checks["no_missing_forecast"]:
        reasons.append(f"{int(q.isna().any(axis=1).sum())} hours have no forecast")
    cov = c.get("coverage_0.8")
    lo, hi = coverage_band(rules, candidate.forecasts["day"].nunique())
    checks["interval_calibrated"] = cov is not None and lo <= cov <= hi
    if not checks["interval_calibrated"]:
        reasons.append(f"the 80 % interval covers {cov if cov is None else f'{cov:.3f}'} of backtest hours; "
                       f"expected {lo:.2f}-{hi:.2f} over {candidate.forecasts['day'].nunique()} days")
    if champion is None:
        rmae = c.get("rmae", np.nan)
        checks["beats_weekly_naive"] = bool(rmae < rules.max_rmae)
        if not checks["beats_weekly_naive"]:
            reasons.append(f"rMAE {rmae:.3f} is not below {rules.max_rmae} (the weekly naive forecast)")
        ok = all(checks.values())
        return Decision(ok, "first champion: " + ("passes every check" if ok else "; ".join(reasons)), checks, c)
    h = champion.overall()
    if not candidate.forecasts["delivery_start"].reset_index(drop=True).equals(
            champion.forecasts["delivery_start"].reset_index(drop=True)):
        raise RegistryError("candidate and champion backtests cover different hours; they must share one window")
    needed = h["mae"] * (1 - rules.margin)
    checks["better_than_champion"] = bool(c["mae"] <= needed)
    if not checks["better_than_champion"]:
        reasons.append(f"MAE {c['mae']:.3f} is not at least {rules.margin:.1%} below the champion's {h['mae']:.3f}")
    worst = (candidate.by_hour() / champion.by_hour()).dropna()
    checks["no_hour_much_worse"] = bool((worst <= 1 + rules.hour_tolerance).all())
    if not checks["no_hour_much_worse"]:
        hour = int(worst.idxmax())
        reasons.append(f"hour {hour:02d} MAE is {worst.max():.2f}x the champion's (tolerance {1 + rules.hour_tolerance:.2f}x)")
    ok = all(checks.values())
    reason = (f"MAE {c['mae']:.3f} vs champion {h['mae']:.3f}: passes every check" if ok else "; ".join(reasons))
    return Decision(ok, reason, checks, c, h)


def coverage_band(rules: ApprovalSettings, days: int, nominal: float = 0.8) -> tuple[float, float]:
    """The accepted coverage of the 80 % interval over a backtest of ``days`` days.

    The configured band, widened to what sampling alone explains: hours of one day miss together,
    so the effective sample is the number of days, and a calibrated interval's coverage over ``n``
    days scatters by about ``1.96 * sqrt(0.8 * 0.2 / n)`` (0.21 over 14 days, 0.06 over 180).
    """
    lo, hi = rules.coverage_band
    slack = 1.96 * float(np.sqrt(nominal * (1 - nominal) / max(days, 1)))
    return min(lo, nominal - slack), max(hi, nominal + slack)


def apply_decision(settings: AurumSettings, name: str, version: str, decision: Decision, *, who: str | None = None) -> None:
    """Set the alias the decision calls for on ``version`` and record it."""
    previous = ml.alias_version(name, CHAMPION)
    ml.set_version_tags(name, version, {
        "approval.decision": "approved" if decision.promote else "rejected",
        "approval.reason": decision.reason,
        "approval.against": decision.against,
        "approval.champion_version": decision.champion_version or "",
        "approval.judged_days": "..".join(decision.judged) if decision.judged else "",
        "approval.checks": json.dumps(decision.checks),
        "approval.metrics": json.dumps({"candidate": decision.candidate, "champion": decision.champion}, default=float),
        "approval.at": _now(),
    })
    change_alias(settings, name, decision.alias, version, action="approve" if decision.promote else "challenge",
                 why=decision.reason, metrics=decision.candidate, who=who or "aurum approve",
                 previous=previous.version if previous and decision.promote else None, against=decision.against)


def change_alias(settings: AurumSettings, name: str, alias: str, version: str, *, action: str, why: str,
                 metrics: dict[str, float] | None = None, who: str | None = None, previous: str | None = None,
                 against: str = "") -> None:
    """Point ``alias`` at ``version`` and record who, when, why, on which metrics and (for the gate's
    decisions) what the candidate was compared with (``against``: recipe or served)."""
    who = who or _user()
    ml.set_alias(name, alias, version)
    at = _now()
    ml.set_version_tags(name, version, {f"alias.{alias}.set_at": at, f"alias.{alias}.set_by": who,
                                        f"alias.{alias}.reason": why})
    exp = ml.experiment(f"{settings.mlflow.experiment}-registry", settings.mlflow_artifact_root())
    tags = {"model": name, "version": version, "alias": alias, "action": action, "who": who, "why": why,
            "at": at, "previous_version": previous or "", "against": against}
    with ml.run(exp, f"{action} {name} v{version} -> {alias}", tags=tags):
        ml.log_metrics({k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))})


def history(settings: AurumSettings, name: str) -> list[dict[str, str]]:
    """Alias changes of a registered model, newest first."""
    exp = ml.experiment(f"{settings.mlflow.experiment}-registry", settings.mlflow_artifact_root())
    runs = ml.search_runs(exp, f"tags.model = '{name}'")
    keys = ("at", "action", "alias", "version", "previous_version", "who", "why", "against")
    return [{k: r["tags"].get(k, "") for k in keys} for r in runs]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
