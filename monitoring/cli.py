"""``aurum monitor``: drift and forecast-quality monitoring."""

from __future__ import annotations

import typer

monitor_app = typer.Typer(help="Drift and forecast-quality monitoring of the serving champions.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the monitoring commands to the ``aurum`` app."""
    app.add_typer(monitor_app, name="monitor")
