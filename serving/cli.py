"""``aurum serve | bento | keys | score``: the serving stage's commands.

Registered into the ``aurum`` app through the ``aurum.commands`` entry point (``pyproject.toml``);
each command lives in ``serving.commands`` and keeps its heavy imports inside the function.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the serving commands to the ``aurum`` app."""
    from serving.commands import keys, score, serve

    app.add_typer(keys.app, name="keys")
    app.command("score")(score.score)
    serve.register(app)
