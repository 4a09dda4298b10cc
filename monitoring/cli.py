"""``aurum monitor``: drift and forecast-performance monitoring of the serving champions, their dashboards,
and the closed loop that retrains on a performance alert.

``aurum monitor drift``, ``performance`` and ``run`` exit 0 when the check is ok, 1 on warn and 3 on
alert, so a scheduler can act on the status alone; 2 means a check could not run (a bad option, an
unknown market, no champion, a window without data). Heavy imports stay inside the commands.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

monitor_app = typer.Typer(help="Drift and forecast-performance monitoring of the serving champions, their "
                          "dashboards, and retraining on alerts.", no_args_is_help=True)

Market = Annotated[str, typer.Option("--market", "-m", help="Market code, such as SYN_NORTH or NP.")]
Window = Annotated[str, typer.Option(help="Length of the window of local delivery days: 7d, 14d, 2w.")]
End = Annotated[str | None, typer.Option(
    help="Day after the window's last local delivery day, YYYY-MM-DD (default: the day after the latest day "
         "with prices; schedulers pass tomorrow, so a stalled feed shows as stale data).")]
AsOf = Annotated[str | None, typer.Option(
    "--as-of", help="Judge only prices published by this UTC time, YYYY-MM-DDTHH:MM (default: now); later ones "
                    "count as not yet arrived.")]
Webhook = Annotated[str | None, typer.Option(
    help="URL that receives a JSON POST when the state changes (default: AURUM_MONITORING__WEBHOOK_URL).")]


def register(app: typer.Typer) -> None:
    """Add the monitoring commands to the ``aurum`` app."""
    app.add_typer(monitor_app, name="monitor")


def _say(msg: str) -> None:
    typer.echo(f"  {msg}", err=True)


def _day(text: str | None, option: str) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a day; expected YYYY-MM-DD", param_hint=option) from None


def _time(text: str | None, option: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a time; expected YYYY-MM-DDTHH:MM (UTC unless an offset is "
                                 "given)", param_hint=option) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _days(window: str) -> int:
    from features.errors import InvalidWindowError
    from monitoring.windows import parse_window

    try:
        return parse_window(window)
    except InvalidWindowError as exc:
        raise typer.BadParameter(str(exc), param_hint="--window") from None


@monitor_app.command("drift")
def drift(
    market: Market,
    window: Window = "7d",
    end: End = None,
    webhook: Webhook = None,
) -> None:
    """Data and prediction drift of the market's champion over a window against its training data (like
    seasons, calibrated thresholds); writes an Evidently report and a JSON summary, appends the metrics to
    monitoring_metrics and MLflow. Exit code: 0 ok, 1 warn, 3 alert, 2 error."""
    from features.settings import AurumSettings
    from monitoring.driftcheck import run_drift

    days = _days(window)
    check = run_drift(AurumSettings(), market, days, _day(end, "--end"), webhook_url=webhook, progress=_say)
    _print_drift(check)
    raise typer.Exit(check.exit_code)


def _print_drift(check) -> None:
    a = check.assessment
    typer.echo(f"{check.market}: {check.champion.model_name} v{check.champion.version}, local days "
               f"{check.window_start} .. {check.window_end - dt.timedelta(days=1)} ({a.window_rows} hours) against "
               f"{a.reference_days} reference days of the same season"
               + (f" (nearest reference days are {a.season_gap_days:.0f} days away in the year)"
                  if a.season_gap_days > check.summary["reference"]["calibration"]["season_half_width_days"] else ""))
    inside = check.summary["reference"]["window_days_inside_reference"]
    if inside:
        typer.echo(f"warning: {inside} days of the window are in the champion's training data "
                   f"({check.summary['reference']['first_day']} .. {check.summary['reference']['last_day']}); "
                   "they are compared with themselves", err=True)
    verification = check.summary["reference"]["verification"]["status"]
    if verification != "exact":
        typer.echo(f"warning: the rebuilt reference {verification} from the training data "
                   f"(see {check.summary_json})", err=True)
    typer.echo(f"{'feature':<26} {'score':>8} {'threshold':>9}  drift")
    for c in [*a.columns, *([a.prediction] if a.prediction is not None else [])]:
        typer.echo(f"{c.column:<26} {c.score:>8.3f} {c.threshold:>9.3f}  {'DRIFT' if c.drifted else '-'}")
    _print_outcome(check)


def _print_outcome(check) -> None:
    """Rules, state, alert and where the records are: the same for every check."""
    for o in check.outcomes:
        if o.state is not None:
            band = f" (warn outside {o.rule.warn[0]:.2f}-{o.rule.warn[1]:.2f}, alert outside {o.rule.alert[0]:.2f}-" \
                   f"{o.rule.alert[1]:.2f})" if o.rule.band else ""
            typer.echo(f"rule {o.rule.name:<18} {o.value:>8.3f}  {o.state.label}{band}")
    previous = check.previous.label if check.previous is not None else "none"
    typer.echo(f"state: {check.state.label} (previous: {previous})")
    if check.alert is not None:
        delivered = ""
        if check.delivery is not None:
            delivered = (f" (sent to {check.delivery.target})" if check.delivery.delivered else
                         f" (webhook {check.delivery.target} failed: {check.delivery.error})")
        typer.echo(f"ALERT {check.alert.message()}{delivered}")
        if check.delivery is not None and not check.delivery.delivered:
            typer.echo(f"error: the alert was not delivered: {check.delivery.error}", err=True)
    typer.echo(f"report {check.report_html}")
    typer.echo(f"summary {check.summary_json}")
    typer.echo(f"run {check.run_id} (MLflow run {check.mlflow_run_id}); history: table {check.summary['table']}")


def _print_performance(check) -> None:
    s, a = check.summary, check.assessment
    w, exp = s["window"], s["expectation"]
    typer.echo(f"{check.market}: {check.champion.model_name} v{check.champion.version}, local days "
               f"{check.window_start} .. {check.window_end - dt.timedelta(days=1)}: {w['hours']} hours judged "
               f"({w['pending_hours']} without a published price yet), prices published by {s['as_of']}")
    window = exp["backtest_window"]
    typer.echo(f"expectation: the champion's backtest {window[0]} .. {window[1]} ({exp['backtest_days']} days, run "
               f"{exp['training_run_id']})" if window else f"expectation: run {exp['training_run_id']}")
    live, expected = a.champion.overall(), a.expectation.metrics
    typer.echo(f"{'metric':<14} {'live':>9} {'backtest':>9} {'ratio':>7}")
    for k in ("mae", "rmae", "rmse", *sorted(x for x in live if x.startswith("pinball_")), "coverage_0.8"):
        if k in live:
            e = expected.get(k)
            ratio = f"{live[k] / e:>7.2f}" if e and k != "coverage_0.8" else ""
            typer.echo(f"{k:<14} {live[k]:>9.3f} {e if e is not None else float('nan'):>9.3f} {ratio}")
    leads = ", ".join(f"{int(r['lead_bin'])}-{int(r['lead_bin']) + 6} h: {r['mae']:.2f} ({int(r['hours'])} h)"
                      for r in s["by_lead"])
    typer.echo(f"MAE by lead time: {leads}")
    hours = sorted(s["by_hour"], key=lambda r: -(r.get("error_ratio") or 0))[:3]
    if hours and hours[0].get("error_ratio") is not None:
        typer.echo("worst local hours against the backtest: " + ", ".join(
            f"{int(r['hour']):02d}h MAE {r['mae']:.2f} ({r['error_ratio']:.2f}x)" for r in hours))
    for g in s["challengers"]:
        typer.echo(f"challenger {g['model_name']} v{g['version']} ({g['alias']}{', shadow' if g['shadow'] else ''}): "
                   f"{g['hours']} hours, MAE {g['metrics'].get('mae', float('nan')):.3f}, "
                   f"{(g.get('mae_vs_champion') or float('nan')):.2f}x the champion's on {int(g['common_hours'])} "
                   "common hours")
    sel = s["selection"]
    typer.echo(f"counted: {sel['champion_rows']} forecasts of the champion ({sel['champion_duplicates_dropped']} "
               f"duplicates dropped); left out: {sel['scenario_rows']} scenario rows, "
               f"{sel['issued_after_gate_closure']} issued after gate closure, "
               f"{sum(sel['earlier_champion_rows'].values())} of earlier champion versions")
    if not s["evidently"]["agrees_with_engine"]:
        typer.echo("warning: the Evidently report's loss means differ from the engine's (see the summary)", err=True)
    _print_outcome(check)


@monitor_app.command("performance")
def performance(market: Market, window: Window = "7d", end: End = None, as_of: AsOf = None,
                webhook: Webhook = None) -> None:
    """Forecast performance of the market's champion over a window: its archived forecasts (serving.forecasts,
    one per hour: the latest issued by gate closure) against the prices published since: MAE, rMAE, pinball
    loss and 80 % coverage, by lead time and local hour, against its backtest; writes an Evidently report and
    a JSON summary, appends the metrics to monitoring_metrics and MLflow. Exit code: 0 ok, 1 warn, 3 alert,
    2 error."""
    from features.settings import AurumSettings
    from monitoring.performancecheck import run_performance

    days = _days(window)
    check = run_performance(AurumSettings(), market, days, _day(end, "--end"), as_of=_time(as_of, "--as-of"),
                            webhook_url=webhook, progress=_say)
    _print_performance(check)
    typer.echo("dashboards over time: aurum monitor ui  (http://127.0.0.1:8000)")
    raise typer.Exit(check.exit_code)


@monitor_app.command("run")
def run(
    market: Market, window: Window = "7d", end: End = None, as_of: AsOf = None, webhook: Webhook = None,
    retrain_on_alert: Annotated[bool, typer.Option(
        "--retrain-on-alert", help="On a performance alert, retrain the champion's recipe (aurum train, in a "
                                   "subprocess; as of --end when the lake holds later data, a replay) and let the "
                                   "approval gate judge it against the served champion, frozen (--against served).")] = False,
    windows: Annotated[int, typer.Option(
        min=1, help="Check this many consecutive windows ending at --end, oldest first (a backfill in one "
                    "process); only the last may retrain.")] = 1,
) -> None:
    """Drift and performance checks of one window (each with its report, summary, table rows and MLflow run,
    nested under this run's), and with --retrain-on-alert the closed loop: performance alert -> aurum train ->
    approval gate, recorded in MLflow and monitoring_metrics. Exit code: 2 if a check could not run, else the
    worse state's (0 ok, 1 warn, 3 alert)."""
    from features.settings import AurumSettings
    from monitoring.loop import default_end, run_monitors

    days = _days(window)
    settings = AurumSettings()
    stop, as_of_time = _day(end, "--end"), _time(as_of, "--as-of")
    if windows > 1 and stop is None:
        import pandas as pd

        from features.lake import Lake
        from features.marketdata import MarketData

        lake = Lake.open(settings, create=False)
        m = MarketData(lake).registry().get(market)
        stop = default_end(lake, m.code, m.timezone, pd.Timestamp(as_of_time or dt.datetime.now(dt.timezone.utc)))
    code = 0
    for i in reversed(range(windows)):
        window_end = stop - dt.timedelta(days=i * days) if stop is not None else None
        result = run_monitors(settings, market, days, window_end, retrain_on_alert=retrain_on_alert and i == 0,
                              as_of=as_of_time, webhook_url=webhook, progress=_say)
        typer.echo(f"== {result.market} {result.window_start} .. {result.window_end - dt.timedelta(days=1)}")
        if result.drift is not None:
            _print_drift(result.drift)
        if result.performance is not None:
            _print_performance(result.performance)
        for name, why in result.errors.items():
            typer.echo(f"error: the {name} check could not run: {why}", err=True)
        r = result.retrain
        if r is not None:
            typer.echo(f"retrain: {r.status}: {r.reason}")
            if r.command:
                typer.echo(f"retrain command: {r.display_command}")
            if r.training_run_id:
                typer.echo(f"retrain run {r.training_run_id}: {result.champion.model_name} version {r.version} -> "
                           f"{r.decision}" + (" (the forecast service picks it up by polling the alias)"
                                              if r.decision == "champion" else ""))
            if r.log:
                typer.echo(f"retrain log {r.log}")
        typer.echo(f"monitor run {result.run_id} (MLflow run {result.mlflow_run_id}); summary {result.summary_json}")
        code = max(code, result.exit_code, key=lambda c: (c == 2, c == 3, c == 1))
    typer.echo("dashboards over time: aurum monitor ui  (http://127.0.0.1:8000)")
    raise typer.Exit(code)


@monitor_app.command("ui")
def ui(port: Annotated[int, typer.Option(help="Port on 127.0.0.1.", min=1, max=65535)] = 8000) -> None:
    """Serve the monitoring dashboards and reports on 127.0.0.1: an Evidently UI over the workspace under the
    home folder, one project per market whose dashboard plots drift scores, errors, coverage and states
    over every check in monitoring_metrics (Ctrl-C stops it)."""
    from features.lake import Lake
    from features.settings import AurumSettings
    from monitoring import dashboard

    settings = AurumSettings()
    _say("syncing the Evidently workspace with monitoring_metrics")
    projects = dashboard.sync(settings, Lake.open(settings, create=False))
    folder = dashboard.workspace_dir(settings)
    if not projects:
        typer.echo("no monitoring check has run yet: the dashboards are empty (aurum monitor run --market M)", err=True)
    for market, project in projects.items():
        typer.echo(f"{market}: http://127.0.0.1:{port}/projects/{project}")
    typer.echo(f"Evidently UI: http://127.0.0.1:{port}  (workspace {folder})", err=False)
    from monitoring import evidently_adapter

    try:
        evidently_adapter.serve(folder, "127.0.0.1", port)
    except KeyboardInterrupt:
        pass


@monitor_app.command("reference")
def reference(market: Market,
              rebuild: Annotated[bool, typer.Option(help="Rebuild it from the lineage even if it is cached.")] = False
              ) -> None:
    """Build (or show the cached) reference of the market's champion: its training days rebuilt through the
    feature service, its forecasts, and the calibrated drift thresholds."""
    from features.settings import AurumSettings
    from monitoring.reference import Reference

    ref = Reference.for_champion(AurumSettings(), market, rebuild=rebuild, progress=_say)
    s = ref.stats
    typer.echo(f"{ref.champion.model_name} v{ref.champion.version}: local days {ref.first_day} .. {ref.last_day}, "
               f"{s.rows} rows through {ref.roles.service}; rebuilt: {ref.verification['status']}")
    typer.echo(f"calibrated on {s.calibration['weeks']} weeks: threshold = {s.calibration['threshold_margin']} x the "
               "largest week-to-season score")
    for c, t in s.thresholds.items():
        typer.echo(f"  {c:<26} {s.roles[c]:<11} threshold {t:.3f}")
    if ref.roles.calendar:
        typer.echo(f"calendar features (matched by season, not tested): {', '.join(ref.roles.calendar)}")
    if ref.roles.unmonitored:
        typer.echo(f"missing in every reference row (not monitored): {', '.join(ref.roles.unmonitored)}")
    typer.echo(f"cached in {ref.path}")
