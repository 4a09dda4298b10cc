"""Hyperparameter tuning with Optuna on rolling-origin backtest folds before the test period.

``tune`` samples parameters with TPE; each trial backtests them on ``folds`` consecutive windows
that all end before ``until`` (the start of the period the model will be judged on, so nothing is
tuned on the test period), reporting the MAE after each fold so the median pruner can stop a poor
trial early. Every trial is a nested MLflow run under one ``tune`` run. The study lives in an RDB
(SQLite under the home folder locally, PostgreSQL schema ``optuna`` in prod), so several workers on
several machines can run ``aurum tune`` on the same study at once.

Search spaces are plain functions of a trial, one per model family.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from features.errors import ConfigurationError, TrainingDataError
from features.settings import AurumSettings
from models import mlflow_model as ml
from training import backtest
from training.dataset import TrainingData
from training.specs import ModelSpec
from training.tracking import ensure_schema, redact


def lgbm_space(trial) -> dict[str, object]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 8, 96, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 5, 100, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        "n_estimators": trial.suggest_int("n_estimators", 100, 600, step=50),
    }


def lear_space(trial) -> dict[str, object]:
    short = trial.suggest_categorical("short_window", [28, 56, 84])
    return {"windows": [short, trial.suggest_categorical("long_window", [182, 364, 728])]}


SPACES: dict[str, Callable] = {"lgbm": lgbm_space, "ensemble": lgbm_space, "lear": lear_space}


def storage_url(settings: AurumSettings) -> str:
    """The Optuna RDB of the active profile (prod: PostgreSQL, schema ``optuna``)."""
    if settings.profile == "local":
        path = settings.home_dir / "optuna.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    ensure_schema(settings.postgres_url, "optuna")
    sep = "&" if "?" in settings.postgres_url else "?"
    return f"{settings.postgres_url}{sep}options=-csearch_path%3Doptuna"


@dataclass
class TuneResult:
    study: str
    storage: str
    trials: int
    best_value: float
    best_params: dict[str, object]
    run_id: str
    folds: list[tuple[dt.date, dt.date]]


def folds_before(until: dt.date, folds: int, fold_days: int) -> list[backtest.BacktestWindow]:
    """``folds`` consecutive windows of ``fold_days`` days ending at ``until`` (exclusive), oldest first."""
    return [backtest.BacktestWindow(until - dt.timedelta(days=fold_days * (folds - i)),
                                    until - dt.timedelta(days=fold_days * (folds - i - 1)), refit_days=fold_days)
            for i in range(folds)]


def tune(settings: AurumSettings, experiment_id: str, data: TrainingData, kind: str, *, until: dt.date,
         trials: int = 20, folds: int = 3, fold_days: int = 14, study_name: str | None = None,
         seed: int | None = 0, progress: Callable[[str], None] | None = None) -> TuneResult:
    """Run ``trials`` more trials of the shared study; see the module docstring."""
    import optuna

    if kind not in SPACES:
        raise ConfigurationError(f"model {kind!r} has nothing to tune; tune one of {', '.join(SPACES)}")
    windows = folds_before(until, folds, fold_days)
    if windows[0].start <= data.first_day() + dt.timedelta(days=28):
        raise TrainingDataError(f"{folds} folds of {fold_days} days before {until} start on {windows[0].start}, "
                                f"too close to the first day of data ({data.first_day()}); use fewer or shorter folds")
    name = study_name or f"{kind}-{data.market.code}"
    storage = storage_url(settings)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))
    space = SPACES[kind]
    say = progress or (lambda m: None)

    def objective(trial) -> float:
        params = space(trial)
        spec = ModelSpec.of(kind, **params)
        with ml.run(experiment_id, f"trial {trial.number}", nested=True,
                    tags={"stage": "tune-trial", "study": name, "trial": str(trial.number)}):
            ml.log_params({"model": kind, **params})
            maes = []
            for step, w in enumerate(windows):
                # the median is what is tuned: no conformal wrapper, half the fits
                maes.append(backtest.run(data, functools.partial(spec.build, calibrated=False), w).overall()["mae"])
                ml.log_metrics({"fold_mae": maes[-1]}, step=step)
                trial.report(float(np.mean(maes)), step)
                if trial.should_prune():
                    ml.set_tags({"pruned": "true"})
                    say(f"trial {trial.number}: pruned after fold {step + 1} (MAE {np.mean(maes):.3f})")
                    raise optuna.TrialPruned()
            ml.log_metrics({"mae": float(np.mean(maes))})
            say(f"trial {trial.number}: MAE {np.mean(maes):.3f} {params}")
            return float(np.mean(maes))

    with ml.run(experiment_id, f"tune {kind} {data.market.code}",
                tags={"stage": "tune", "study": name, "market": data.market.code, "model_kind": kind}) as run_id:
        ml.log_params({"study": name, "storage": redact(storage), "trials": trials, "folds": folds,
                       "fold_days": fold_days, "until": until,
                       "fold_windows": [f"{w.start}..{w.end}" for w in windows]})
        study.optimize(objective, n_trials=trials, catch=())
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            raise TrainingDataError(f"study {name!r} has no completed trial yet")
        best = study.best_trial
        params = ModelSpec.of(kind, **_spec_params(kind, best.params)).params
        ml.log_metrics({"best_mae": best.value, "study_trials": len(study.trials)})
        ml.set_tags({"best_params": ModelSpec(kind, params).to_json()})
    return TuneResult(name, redact(storage), len(study.trials), float(best.value), params, run_id,
                      [(w.start, w.end) for w in windows])


def _spec_params(kind: str, trial_params: dict[str, object]) -> dict[str, object]:
    """A trial's raw parameters as ModelSpec parameters."""
    if kind == "lear":
        return {"windows": [trial_params["short_window"], trial_params["long_window"]]}
    return dict(trial_params)


def best_params(settings: AurumSettings, kind: str, market: str, study_name: str | None = None) -> dict[str, object]:
    """The best parameters so far of a study (for ``aurum train --from-study``)."""
    import optuna

    name = study_name or f"{kind}-{market}"
    try:
        study = optuna.load_study(study_name=name, storage=storage_url(settings))
        return _spec_params(kind, study.best_trial.params)
    except (KeyError, ValueError) as exc:
        raise ConfigurationError(f"study {name!r} has no completed trial in {redact(storage_url(settings))}; "
                                 f"run aurum tune --market {market} --model {kind} first") from exc

