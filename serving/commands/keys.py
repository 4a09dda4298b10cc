"""``aurum keys``: API keys of the forecast service."""

from __future__ import annotations

import typer

app = typer.Typer(help="API keys of the forecast service: one per tenant, bound to the markets it may read.",
                  no_args_is_help=True)
