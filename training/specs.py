"""Model specifications: what ``aurum train --model`` builds, recorded so any version can be rebuilt.

A spec is a model family (``naive``, ``lear``, ``lgbm``, ``ensemble``) and its parameters. It is
logged with every run and tagged on every registered version, so the approval gate can backtest the
current champion's recipe on the candidate's window (like with like) without trusting old numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from features.errors import ConfigurationError

KINDS = ("naive", "lear", "lgbm", "ensemble")

# n_jobs 1: LightGBM's threads spin when the other core is busy (a fit took 3x longer with 2 threads
# on this 2-core machine while anything else ran); processes, not threads, are the way to scale out.
DEFAULTS: dict[str, dict[str, object]] = {
    "naive": {},
    "lear": {"windows": [56, 84, 364, 728], "calibration_days": 182, "recalibrate": False, "exogenous_lags": "none",
             "exogenous_lag_days": [1, 7]},
    # Chosen on the EPF validation year, before the test period (docs/models.md): day-block inputs,
    # one pooled booster per quantile, the raw target; conformal intervals on the last 182 days.
    "lgbm": {"structure": "pooled", "inputs": "day_block", "target_transform": "none", "n_estimators": 200,
             "learning_rate": 0.1, "median_n_estimators": None, "median_learning_rate": None, "num_leaves": 31,
             "min_data_in_leaf": 20, "calibration_days": 182, "n_jobs": 1, "exogenous_lags": "none",
             "anchor_windows": [728], "recalibrate": False, "median_seeds": 1, "median_objective": "quantile"},
    # The recommended champion: LEAR and LightGBM averaged quantile by quantile, conformal intervals.
    # target_transform "level" suits markets of slow price levels (NP); "none" lost nowhere (docs/models.md)
    "ensemble": {"lear_windows": [56, 84, 364, 728], "lear_recalibrate": False, "target_transform": "none",
                 "n_estimators": 200, "learning_rate": 0.1, "median_n_estimators": None, "median_learning_rate": None,
                 "num_leaves": 31, "min_data_in_leaf": 20, "calibration_days": 182, "n_jobs": 1,
                 "exogenous_lags": "none", "lear_exogenous_lag_days": [1, 7], "lgbm_weight": 1.0,
                 "anchor_windows": [728], "median_seeds": 1, "median_objective": "quantile"},
}
# target_transform "lear" (lgbm, ensemble): LightGBM fits the residuals of a LEAR forecast, cross-fitted on
# the training days, of a LEAR on the anchor_windows (docs/models.md); on the EPF validation year it beat
# the D-1 level on NP, then lost on NP's test period: no recipe uses it. recalibrate (lgbm) refits that
# LEAR daily between the refits of a backtest, as the ensemble's lear_recalibrate does for both its LEARs.
# exogenous_lags: the day-ahead forecasts of D-1 and D-7 (feature view exogenous_lag_features) as inputs.
# LEAR takes them as day blocks ("day_block"), LightGBM as day blocks or as their daily mean, min and max
# ("day_stats"); the ensemble's LEAR takes them whenever its LightGBM does. On the EPF validation year they
# helped NP and not BE or FR (docs/models.md): a per-market choice, off by default.
# exogenous_lag_days (lear), lear_exogenous_lag_days (ensemble): which of those days LEAR takes when it takes
# them, both by default as in the paper; NP's recipe takes D-1 only: the same accuracy on its validation
# year for 28 % less LEAR time (a cheaper LARS path; docs/models.md).
# lgbm_weight: the LightGBM member's weight in the ensemble's quantile average (LEAR's is 1).
# The median booster (the point forecast) by default runs 3x the rounds at half the learning rate of the
# P10/P90 boosters (None = that rule): on 91 validation days 2.6 / 0.6 / 0.1 % less ensemble MAE on NP /
# BE / FR (docs/models.md), for 1.7x the boosting rounds of a fit (3x to slow every level alike).
MEDIAN_ROUNDS_FACTOR, MEDIAN_RATE_FACTOR = 3, 0.5
# median_seeds: median boosters of that many seeds, averaged (less variance in the point forecast, one
# more median booster each; on NP's validation year noise, docs/models.md). median_objective: the median
# booster's loss, "quantile" (pinball), "l2" (squared: the mean) or "quantile+l2" (one of each, averaged;
# NP's recipe: -1.3 % ensemble MAE on its validation year, docs/models.md).

# LEAR recalibrated daily between the weekly refits of a backtest (docs/models.md): on the validation
# year 1-2.5 % less ensemble MAE in five of six measurements, for ~2.5-7 s more per refit week; off by
# default (speed first, and operations do not recalibrate a registered model daily yet).
FLAGS = frozenset({"recalibrate", "lear_recalibrate"})

BOOSTER_KEYS = ("learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction", "bagging_fraction",
                "lambda_l2", "max_bin")


def _lag_days(kind: str, key: str, value: object) -> list[int]:
    """``value`` as a sorted list of the lag days of the exogenous forecasts, checked against those there are."""
    from features.transforms.exogenous import EXOGENOUS_LAG_DAYS

    days = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(days, (list, tuple)) or not days
            or any(isinstance(d, bool) or not isinstance(d, int) or d not in EXOGENOUS_LAG_DAYS for d in days)):
        raise ConfigurationError(f"model {kind!r} parameter {key!r} is {value!r}; expected a non-empty list of "
                                 f"days from {list(EXOGENOUS_LAG_DAYS)}, e.g. [1]")
    return sorted(set(days))


@dataclass(frozen=True)
class ModelSpec:
    """A model family and its parameters (defaults filled in)."""

    kind: str
    params: dict[str, object] = field(default_factory=dict)

    @classmethod
    def of(cls, kind: str, **overrides: object) -> ModelSpec:
        if kind not in KINDS:
            raise ConfigurationError(f"unknown model {kind!r}; expected one of {', '.join(KINDS)}")
        unknown = set(overrides) - set(DEFAULTS[kind]) - set(BOOSTER_KEYS)
        if unknown:
            raise ConfigurationError(f"model {kind!r} has no parameter {sorted(unknown)[0]!r}; "
                                     f"it takes {sorted(set(DEFAULTS[kind]) | set(BOOSTER_KEYS if kind in ('lgbm', 'ensemble') else ()))}")
        for k in set(overrides) & FLAGS:
            if not isinstance(overrides[k], bool):
                raise ConfigurationError(f"model {kind!r} parameter {k!r} is {overrides[k]!r}; expected true or false")
        lags = overrides.get("exogenous_lags", "none")
        allowed = ("none", "day_block") if kind == "lear" else ("none", "day_stats", "day_block")
        if lags not in allowed:
            raise ConfigurationError(f"model {kind!r} parameter 'exogenous_lags' is {lags!r}; expected one of "
                                     f"{', '.join(allowed)}")
        for key in ("exogenous_lag_days", "lear_exogenous_lag_days"):
            if key in overrides:
                overrides = {**overrides, key: _lag_days(kind, key, overrides[key])}
                if lags == "none" and overrides[key] != DEFAULTS[kind][key]:
                    raise ConfigurationError(f"model {kind!r} parameter {key!r} is {overrides[key]!r} but "
                                             f"'exogenous_lags' is 'none': set exogenous_lags too, or drop {key!r}")
        transform = overrides.get("target_transform", "none")
        if "anchor_windows" in overrides:
            w = overrides["anchor_windows"]
            if (not isinstance(w, (list, tuple)) or not w
                    or any(isinstance(d, bool) or not isinstance(d, int) or d < 7 for d in w)):
                raise ConfigurationError(f"model {kind!r} parameter 'anchor_windows' is {w!r}; expected a non-empty "
                                         f"list of LEAR calibration windows in days (at least 7 each), e.g. [728]")
            overrides = {**overrides, "anchor_windows": sorted(set(w))}
            if transform != "lear" and overrides["anchor_windows"] != DEFAULTS[kind]["anchor_windows"]:
                raise ConfigurationError(f"model {kind!r} parameter 'anchor_windows' is {w!r} but 'target_transform' "
                                         f"is {transform!r}: the windows are those of target_transform 'lear'")
        if kind == "lgbm" and overrides.get("recalibrate") and transform != "lear":
            raise ConfigurationError(f"model 'lgbm' parameter 'recalibrate' is true but 'target_transform' is "
                                     f"{transform!r}: it refits the LEAR of target_transform 'lear' daily")
        if "median_objective" in overrides:
            from models.lightgbm_forecaster import MEDIAN_OBJECTIVES

            if overrides["median_objective"] not in MEDIAN_OBJECTIVES:
                raise ConfigurationError(f"model {kind!r} parameter 'median_objective' is "
                                         f"{overrides['median_objective']!r}; expected one of {', '.join(MEDIAN_OBJECTIVES)}")
        if "median_seeds" in overrides:
            n = overrides["median_seeds"]
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ConfigurationError(f"model {kind!r} parameter 'median_seeds' is {n!r}; expected a whole number "
                                         f"of at least 1 (median boosters of that many seeds, averaged)")
        if "lgbm_weight" in overrides:
            w = overrides["lgbm_weight"]
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < float(w) < float("inf"):
                raise ConfigurationError(f"model {kind!r} parameter 'lgbm_weight' is {w!r}; expected a positive number "
                                         f"(LEAR's weight is 1)")
        if "target_transform" in overrides:
            from models.lightgbm_forecaster import TARGET_TRANSFORMS

            if overrides["target_transform"] not in TARGET_TRANSFORMS:
                raise ConfigurationError(f"model {kind!r} parameter 'target_transform' is "
                                         f"{overrides['target_transform']!r}; expected one of {', '.join(TARGET_TRANSFORMS)}")
        return cls(kind, {**DEFAULTS[kind], **overrides})

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "params": self.params}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        try:
            d = json.loads(text)
            return cls.of(d["kind"], **d.get("params", {}))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"model spec {text!r} is not valid JSON of kind and params: {exc}") from exc

    def build(self, calibrated: bool = True):
        """A new, unfitted forecaster of this spec.

        ``calibrated=False`` leaves out the conformal wrapper: the same point forecast at half the
        fitting cost, for uses that judge the median only (tuning, baselines, the champion's rerun).
        """
        from models.conformal import ConformalForecaster
        from models.ensemble import QuantileAverageEnsemble
        from models.featureframe import EXOGENOUS_FEATURES, EXOGENOUS_LAG_FEATURES
        from models.lear import LEAR
        from models.lightgbm_forecaster import LightGBMForecaster
        from models.naive import WeeklyNaive

        p = dict(self.params)
        if self.kind == "naive":
            return WeeklyNaive()
        wrap = ((lambda m: ConformalForecaster(m, calibration_days=int(p["calibration_days"])))
                if calibrated else (lambda m: m))
        def lear_exogenous(days: list[int]) -> tuple[str, ...]:
            if p["exogenous_lags"] == "none":
                return EXOGENOUS_FEATURES
            return EXOGENOUS_FEATURES + tuple(c for c in EXOGENOUS_LAG_FEATURES
                                          if any(c.endswith(f"_lag_P{d}D") for d in days))

        if self.kind == "lear":  # in-sample LASSO residuals understate the error: calibrate on held-out days
            return wrap(LEAR(windows=tuple(p["windows"]), recalibrate=bool(p["recalibrate"]),
                             exogenous=lear_exogenous(p["exogenous_lag_days"])))
        booster = {k: p[k] for k in BOOSTER_KEYS if k in p}
        median = {"median_n_estimators": int(MEDIAN_ROUNDS_FACTOR * int(p["n_estimators"])
                                             if p["median_n_estimators"] is None else p["median_n_estimators"]),
                  "median_learning_rate": float(MEDIAN_RATE_FACTOR * float(p["learning_rate"])
                                                if p["median_learning_rate"] is None else p["median_learning_rate"]),
                  "median_seeds": int(p["median_seeds"]), "median_objective": str(p["median_objective"])}
        if self.kind == "lgbm":
            return wrap(LightGBMForecaster(structure=p["structure"], inputs=p["inputs"],
                                           target_transform=p["target_transform"], n_estimators=int(p["n_estimators"]),
                                           params=booster, n_jobs=int(p["n_jobs"]), exogenous_lags=p["exogenous_lags"],
                                           anchor_windows=tuple(p["anchor_windows"]),
                                           recalibrate=bool(p["recalibrate"]), **median))
        gbm = LightGBMForecaster(inputs="day_block", target_transform=p["target_transform"],
                                 n_estimators=int(p["n_estimators"]), params=booster, n_jobs=int(p["n_jobs"]),
                                 exogenous_lags=p["exogenous_lags"], anchor_windows=tuple(p["anchor_windows"]),
                                 recalibrate=bool(p["lear_recalibrate"]) and p["target_transform"] == "lear", **median)
        lear = LEAR(windows=tuple(p["lear_windows"]), recalibrate=bool(p["lear_recalibrate"]),
                    exogenous=lear_exogenous(p["lear_exogenous_lag_days"]))
        return wrap(QuantileAverageEnsemble([gbm, lear], weights=(float(p["lgbm_weight"]), 1.0)))
