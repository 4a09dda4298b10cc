"""``aurum monitor``: drift and forecast-quality monitoring of the serving champions.

``aurum monitor drift`` exits 0 when the check is ok, 1 on warn and 3 on alert, so a scheduler can act
on the status alone; 2 means the check could not run (a bad option, an unknown market, no champion,
a window without data). Heavy imports stay inside the commands.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

monitor_app = typer.Typer(help="Drift and forecast-quality monitoring of the serving champions.", no_args_is_help=True)

Market = Annotated[str, typer.Option("--market", "-m", help="Market code, such as SYN_NORTH or NP.")]


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


@monitor_app.command("drift")
def drift(
    market: Market,
    window: Annotated[str, typer.Option(help="Length of the window of local delivery days: 7d, 14d, 2w.")] = "7d",
    end: Annotated[str | None, typer.Option(
        help="Day after the window's last local delivery day, YYYY-MM-DD (default: the day after the latest day "
             "with prices; schedulers pass tomorrow, so a stalled feed shows as stale data).")] = None,
    webhook: Annotated[str | None, typer.Option(
        help="URL that receives a JSON POST when the state changes (default: AURUM_MONITORING__WEBHOOK_URL).")] = None,
) -> None:
    """Data and prediction drift of the market's champion over a window against its training data (like
    seasons, calibrated thresholds); writes an Evidently report and a JSON summary, appends the metrics to
    monitoring_metrics and MLflow. Exit code: 0 ok, 1 warn, 3 alert, 2 error."""
    from features.errors import InvalidWindowError
    from features.settings import AurumSettings
    from monitoring.driftcheck import run_drift
    from monitoring.windows import parse_window

    try:
        days = parse_window(window)
    except InvalidWindowError as exc:
        raise typer.BadParameter(str(exc), param_hint="--window") from None
    check = run_drift(AurumSettings(), market, days, _day(end, "--end"), webhook_url=webhook, progress=_say)
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
    for o in check.outcomes:
        if o.state is not None:
            typer.echo(f"rule {o.rule.name:<18} {o.value:>8.3f}  {o.state.label}")
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
    raise typer.Exit(check.exit_code)


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
