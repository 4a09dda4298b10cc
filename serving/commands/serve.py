"""``aurum serve`` and ``aurum bento build``: the forecast service."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``bento`` to the app."""
