"""``aurum train | backtest | approve | models | ui``: the training stage's commands.

Registered into the ``aurum`` app through the ``aurum.commands`` entry point (``pyproject.toml``),
so ``features`` never imports ``training``. Commands are thin: settings, one library call, and what
the next step needs (run ids, versions, the UI address). Heavy imports stay inside the commands.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from typing import Annotated

import typer

models_app = typer.Typer(help="Registered models per market: versions, aliases, manual promotion and rollback.",
                         no_args_is_help=True)

Market = Annotated[str, typer.Option("--market", "-m", help="Market code, such as SYN_NORTH or NP.")]
Model = Annotated[str, typer.Option("--model", help="Model family: lgbm, ensemble, lear or naive.")]
BacktestDays = Annotated[int, typer.Option(help="Days of the rolling-origin backtest at the end of the history.", min=7)]
RefitDays = Annotated[int, typer.Option(help="Refit the model every N days of the backtest (1 = daily, as operations).", min=1)]
TrainDays = Annotated[int | None, typer.Option(help="Train on the last N days only (default: all history).", min=7)]


def register(app: typer.Typer) -> None:
    """Add the training commands to the ``aurum`` app."""
    app.command("train")(train)
    app.command("backtest")(backtest)
    app.command("tune")(tune)
    app.command("approve")(approve)
    app.add_typer(models_app, name="models")
    app.command("ui")(ui)


def _settings():
    from features.settings import AurumSettings

    return AurumSettings()


def _say(msg: str) -> None:
    typer.echo(f"  {msg}", err=True)


def _print_comparison(comparison) -> None:
    import pandas as pd

    cols = [c for c in ("mae", "rmae", "smape", "rmse", "pinball_q10", "pinball_q50", "pinball_q90", "coverage_0.8")
            if c in comparison.columns] + [c for c in comparison.columns if c.startswith("dm_vs_")]
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.float_format", "{:.4f}".format):
        typer.echo(comparison[cols].to_string())


Params = Annotated[list[str] | None, typer.Option("--param", help="Model parameter NAME=VALUE (JSON value), repeatable.")]
FromStudy = Annotated[bool, typer.Option(help="Take the parameters of the best trial of the model's Optuna study.")]
AsOf = Annotated[str | None, typer.Option(
    "--as-of", help="Train as on this local delivery day's issue time (gate closure on the day before), YYYY-MM-DD: "
                    "the backtest ends at it and only earlier delivery days are read (default: everything).")]
Against = Annotated[str, typer.Option(
    help="What the approval gate compares the candidate with: 'recipe' (the champion's recipe backtested again on "
         "the same window: a new recipe against the old) or 'served' (the champion version as served, frozen, on "
         "the days after its training data: a fresh fit against the model in service).")]
Baselines = Annotated[str, typer.Option(help="Comma-separated baselines to backtest beside it (naive, lear), or 'none'.")]


def _spec(settings, model: str, market: str, params: list[str] | None, from_study: bool):
    import json

    from training.specs import ModelSpec

    values: dict[str, object] = {}
    if from_study:
        from training import tuning

        values |= tuning.best_params(settings, model, market)
    for p in params or []:
        key, sep, raw = p.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{p!r} is not NAME=VALUE", param_hint="--param")
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw
    return ModelSpec.of(model, **values)


def _baselines(text: str) -> tuple[str, ...]:
    from training import pipeline

    chosen = tuple(b.strip() for b in text.split(",") if b.strip() and b.strip() != "none")
    unknown = [b for b in chosen if b not in pipeline.BASELINES]
    if unknown:
        raise typer.BadParameter(f"unknown baseline {unknown[0]!r}; expected {', '.join(pipeline.BASELINES)} or none",
                                 param_hint="--baselines")
    return chosen


def _against(text: str) -> str:
    from features.errors import ConfigurationError
    from training import approval

    try:
        return approval.check_against(text)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc), param_hint="--against") from exc


def train(market: Market, model: Model = "lgbm", backtest_days: BacktestDays = 28, refit_days: RefitDays = 7,
          train_days: TrainDays = None, param: Params = None, from_study: FromStudy = False,
          as_of: AsOf = None, against: Against = "recipe", baselines: Baselines = "naive,lear",
          approve: Annotated[bool, typer.Option(help="Run the approval gate after registering.")] = True) -> None:
    """Train a forecaster for one market through the feature service, backtest it against the weekly
    naive and LEAR baselines, log everything to MLflow, register it and run the approval gate."""
    from training import pipeline

    day = _day(as_of, "--as-of") if as_of else None
    gate, chosen = _against(against), _baselines(baselines)
    settings = _settings()
    spec = _spec(settings, model, market, param, from_study)
    result = pipeline.train(settings, market, spec, backtest_days=backtest_days, refit_days=refit_days,
                            train_days=train_days, baselines=chosen, approve=approve, as_of=day, against=gate,
                            progress=_say)
    _print_comparison(result.comparison)
    typer.echo(f"run {result.run_id}: {result.model_name} version {result.version}")
    if result.decision is not None:
        typer.echo(f"approval: {result.decision.alias} ({result.decision.reason})")
    typer.echo("review it: aurum ui  (then http://127.0.0.1:5000/#/experiments)")


def backtest(market: Market, model: Model = "lgbm",
             start: Annotated[str | None, typer.Option("--from", help="First local delivery day to forecast, YYYY-MM-DD.")] = None,
             end: Annotated[str | None, typer.Option("--to", help="Day after the last one to forecast (default: the end of the data).")] = None,
             backtest_days: BacktestDays = 28, refit_days: RefitDays = 7, train_days: TrainDays = None,
             param: Params = None, from_study: FromStudy = False, baselines: Baselines = "naive,lear",
             as_of: Annotated[str | None, typer.Option(
                 "--as-of", help="Backtest as of this local delivery day, YYYY-MM-DD: the window ends at it and "
                                 "only earlier delivery days are read (checked against the data; instead of --to).")] = None,
             ) -> None:
    """Rolling-origin backtest: forecast each day D with only what was known on D-1, refitting every
    --refit-days, beside the weekly naive and LEAR baselines; logged as an MLflow run (not registered)."""
    from models import mlflow_model as ml
    from training import backtest as bt
    from training import pipeline

    if as_of and end:
        raise typer.BadParameter(f"--as-of {as_of!r} and --to {end!r} both end the window; expected one of them",
                                 param_hint="--as-of")
    day = _day(as_of, "--as-of") if as_of else None
    chosen = _baselines(baselines)
    settings = _settings()
    spec = _spec(settings, model, market, param, from_study)
    session = pipeline.Session.open(settings)
    first, last = pipeline.history_window(session.lake, market)
    if day is not None:
        stop = pipeline.check_as_of(session.lake, market, day, 0 if start else backtest_days)
    else:
        stop = _day(end, "--to") if end else last
    begin = _day(start, "--from") if start else stop - dt.timedelta(days=backtest_days)
    window = bt.BacktestWindow(begin, stop, refit_days, train_days)
    data = pipeline.load_data(session, market, 0, start=first, end=stop)
    results, comparison = pipeline.run_backtests(data, spec, window, baselines=chosen, progress=_say)
    with ml.run(session.experiment_id, f"backtest {spec.kind} {market}", tags=pipeline.run_tags(data, spec, "backtest") | {"as_of": str(day or "")}) as run_id:
        pipeline.log_run(data, spec, window, results, comparison)
    _print_comparison(comparison)
    typer.echo(f"run {run_id}: backtest of {spec.kind} on {market}, {window.start} .. {window.end}")


def tune(market: Market, model: Model = "lgbm",
         trials: Annotated[int, typer.Option(help="Trials this worker adds to the shared study.", min=1)] = 20,
         folds: Annotated[int, typer.Option(help="Backtest folds per trial (pruning happens between folds).", min=1)] = 3,
         fold_days: Annotated[int, typer.Option(help="Days per fold.", min=7)] = 14,
         backtest_days: Annotated[int, typer.Option(help="The test period at the end of the history, never tuned on: "
                                                    "folds end where it starts.", min=0)] = 28,
         study: Annotated[str | None, typer.Option(help="Study name (default MODEL-MARKET); workers sharing it cooperate.")] = None,
         seed: Annotated[int | None, typer.Option(help="TPE sampler seed (give each worker its own).")] = None) -> None:
    """Tune a model family with Optuna (TPE, median pruning on backtest folds before the test period);
    every trial is a nested MLflow run and the study is stored in the profile's database."""
    from training import pipeline, tuning

    settings = _settings()
    session = pipeline.Session.open(settings)
    first, last = pipeline.history_window(session.lake, market)
    until = last - dt.timedelta(days=backtest_days)
    data = pipeline.load_data(session, market, 0, start=first, end=until)
    result = tuning.tune(settings, session.experiment_id, data, model, until=until, trials=trials, folds=folds,
                         fold_days=fold_days, study_name=study, seed=seed, progress=_say)
    typer.echo(f"study {result.study} ({result.trials} trials in {result.storage}): best MAE {result.best_value:.4f}")
    typer.echo(f"best parameters: {result.best_params}")
    typer.echo(f"run {result.run_id}; train with them: aurum train --market {market} --model {model} --from-study")


def approve(market: Market,
            version: Annotated[str | None, typer.Option(help="Registered version to judge (default: the newest).")] = None,
            against: Against = "recipe") -> None:
    """Run the approval gate on a registered version: champion if better than the current one by the
    margin and it passes the quality checks, otherwise challenger with the reason."""
    from models import mlflow_model as ml
    from training import pipeline, tracking

    gate = _against(against)
    settings = _settings()
    session = pipeline.Session.open(settings)
    name = tracking.model_name(settings, market)
    if version is None:
        found = ml.versions(name)
        if not found:
            raise typer.BadParameter(f"{name!r} has no registered version; run aurum train --market {market}",
                                     param_hint="--market")
        version = found[0].version
    decision = pipeline.approve_candidate(session, market, version, against=gate)
    typer.echo(f"{name} version {version}: {decision.alias}: {decision.reason}")


@models_app.command("list")
def models_list(market: Market) -> None:
    """Every registered version of a market's model with its aliases, metrics and approval reason."""
    import json

    from training import pipeline

    settings = _settings()
    found = pipeline.list_versions(settings, market)
    if not found:
        typer.echo(f"no registered versions for {market}; run aurum train --market {market}")
        return
    for v in found:
        metrics = json.loads(v.tags.get("approval.metrics", "{}")).get("candidate", {})
        mae = f"MAE {metrics['mae']:.3f}" if "mae" in metrics else ""
        kind = json.loads(v.tags.get("model_spec", "{}")).get("kind", "?")
        created = dt.datetime.fromtimestamp(v.created / 1000, dt.timezone.utc).isoformat(timespec="seconds")
        against = v.tags.get("approval.against")
        gate = f"[{against}] " if against else ""
        typer.echo(f"v{v.version:<4} {kind:<9} {','.join(v.aliases) or '-':<11} {created} {mae:<11} "
                   f"{v.tags.get('approval.decision', '')}: {gate}{v.tags.get('approval.reason', '')}")


@models_app.command("promote")
def models_promote(market: Market,
                   version: Annotated[str, typer.Option(help="Version to make the champion.")],
                   reason: Annotated[str, typer.Option(help="Why (recorded with the change).")]) -> None:
    """Make a version the champion by hand (recorded: who, when, why)."""
    from training import pipeline

    previous = pipeline.promote(_settings(), market, version, reason)
    typer.echo(f"{market}: champion is now version {version} (was {previous or 'none'})")


@models_app.command("rollback")
def models_rollback(market: Market,
                    reason: Annotated[str, typer.Option(help="Why (recorded with the change).")]) -> None:
    """Point the champion back at the version it replaced (recorded: who, when, why)."""
    from training import pipeline

    target = pipeline.rollback(_settings(), market, reason)
    typer.echo(f"{market}: champion rolled back to version {target}")


@models_app.command("history")
def models_history(market: Market) -> None:
    """Every alias change of a market's model: when, what, who and why."""
    from training import approval, tracking

    settings = _settings()
    tracking.open_tracking(settings)
    for e in approval.history(settings, tracking.model_name(settings, market)):
        gate = f" [against {e['against']}]" if e.get("against") else ""
        typer.echo(f"{e['at']}  {e['action']:<9} v{e['version']:<4} -> {e['alias']:<10} (was v{e['previous_version'] or '-'}) "
                   f"by {e['who']}{gate}: {e['why']}")


def ui(port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000) -> None:
    """Start the MLflow UI on 127.0.0.1 against the project's store (Ctrl-C stops it)."""
    from training import tracking

    settings = _settings()
    tracking.open_tracking(settings)  # creates the store and experiment if this is a fresh home
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", settings.mlflow_tracking_uri(),
           "--default-artifact-root", settings.mlflow_artifact_root(), "--workers", "1"]
    typer.echo(f"MLflow UI: http://127.0.0.1:{port}  (store {tracking.redact(settings.mlflow_tracking_uri())})")
    try:
        subprocess.run(cmd, env=env, check=False)
    except KeyboardInterrupt:
        pass


def _day(text: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a day; expected YYYY-MM-DD", param_hint=option) from None
