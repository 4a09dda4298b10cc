"""``aurum score``: batch scoring with the champion, as the service would have on each D-1."""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Annotated

import typer


class Engine(str, Enum):
    local = "local"
    ray = "ray"


def _day(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date; expected YYYY-MM-DD", param_hint=option) from None


def _levels(value: str) -> list[float]:
    try:
        return [float(q) for q in value.split(",") if q.strip()]
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a comma-separated list of numbers such as 0.1,0.5,0.9",
                                 param_hint="--quantiles") from None


def score(
    market: Annotated[str, typer.Option("--market", "-m", help="Market code, such as SYN_NORTH.")],
    start: Annotated[str, typer.Option("--from", help="First local delivery day to score, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option("--to", help="Last local delivery day to score (inclusive), YYYY-MM-DD.")],
    engine: Annotated[Engine, typer.Option(help="local: in this process (default). ray: on Ray actors (a local "
                                           "Ray is started unless RAY_ADDRESS names a cluster); same forecasts.")]
    = Engine.local,
    batch_id: Annotated[str | None, typer.Option("--batch-id", help="Id recorded on every archived row "
                                                 "(default: a new one).")] = None,
    quantiles: Annotated[str, typer.Option(help="Comma-separated quantile levels; 0.5 is always scored "
                                           "(it is the archived forecast).")] = "0.1,0.5,0.9",
    chunk_days: Annotated[int, typer.Option(help="Days per archive commit: a crash loses at most one chunk, "
                                            "and a re-run resumes.", min=1)] = 31,
    tenant: Annotated[str, typer.Option(help="Tenant recorded on the rows.")] = "internal",
    ray_actors: Annotated[int, typer.Option(help="Scoring actors of the ray engine (half a CPU each at most).",
                                            min=1)] = 2,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Score every local delivery day from --from to --to with the market's champion, exactly as the
    forecast service would have on each D-1 (features as known at gate closure), and archive the
    forecasts in the Iceberg table serving.forecasts. Days already archived for the champion's version
    are skipped, so a re-run (after a crash, too) only adds what is missing."""
    from features.gctuning import batch_gc

    first, last = _day(start, "--from"), _day(end, "--to")
    levels = _levels(quantiles)
    with batch_gc():
        from features.settings import AurumSettings
        from serving import batch

        settings = AurumSettings()
        with _ProgressBar(enabled=progress) as bar:
            result = batch.score(settings, market, first, last, engine=engine.value, quantiles=levels,
                                 batch_id=batch_id, tenant=tenant, chunk_days=chunk_days,
                                 ray_actors=ray_actors, progress=bar.update)
    typer.echo(result.render())
    typer.echo(f"archived in serving.forecasts: batch_id {result.batch_id!r}, model version {result.model_version}")


class _ProgressBar:
    """Two rich progress bars on stderr, days scored and days archived; nothing when disabled."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> _ProgressBar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("days"), TimeElapsedColumn(), console=Console(stderr=True))
            self.bar.start()
        return self

    def update(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if phase not in self.tasks:
            self.tasks[phase] = self.bar.add_task(phase, total=total)
        self.bar.update(self.tasks[phase], completed=done, total=total)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.stop()
