"""``aurum serve`` and ``aurum bento build``: the forecast service."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Annotated

import typer

ROOT = Path(__file__).resolve().parents[2]
bento_app = typer.Typer(help="Bentos of the forecast service: the approved champions packaged to start without the registry.",
                        no_args_is_help=True)

Markets = Annotated[str | None, typer.Option(help="Comma-separated markets to serve (default: every market with a champion).")]


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``bento`` to the app."""
    app.command("serve")(serve)
    app.add_typer(bento_app, name="bento")


def _env(settings, markets: str | None, **serving) -> dict[str, str]:
    """The environment of the service process: the caller's settings, made explicit."""
    env = dict(os.environ)
    env["AURUM_HOME"] = str(settings.home_dir)
    env.setdefault("BENTOML_HOME", str(settings.home_dir / "bentoml"))
    env.setdefault("BENTOML_DO_NOT_TRACK", "True")
    if markets:
        env["AURUM_SERVING__MARKETS"] = "[" + ",".join(f'"{m.strip()}"' for m in markets.split(",") if m.strip()) + "]"
    for key, value in serving.items():
        if value is not None:
            env[f"AURUM_SERVING__{key.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default from settings: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default from settings: 3000).")] = None,
    markets: Markets = None,
    workers: Annotated[int, typer.Option(help="Service worker processes.", min=1)] = 1,
    shadow: Annotated[bool | None, typer.Option("--shadow/--no-shadow", help="Score the challenger too, off the request path.")] = None,
    auth: Annotated[bool | None, typer.Option("--auth/--no-auth", help="Require API keys (default on).")] = None,
    reload_interval: Annotated[float | None, typer.Option(help="Seconds between registry checks of the champion.")] = None,
    bento: Annotated[str | None, typer.Option(help="Serve a built Bento (tag from 'aurum bento build') instead of the registry.")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Start in the background, wait until ready, print the address; log and pid under the home folder.")] = False,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the service a previous --detach started from this home folder.")] = False,
) -> None:
    """Start the forecast service (BentoML) on 127.0.0.1 with each market's approved champion; Ctrl-C stops it."""
    from features.settings import AurumSettings

    settings = AurumSettings()
    pidfile = settings.home_dir / "serve.pid"
    if stop or detach:
        _stop_detached(pidfile)
    if stop:
        return
    host, port = host or settings.serving.host, port or settings.serving.port
    env = _env(settings, markets, shadow=shadow, auth=auth, reload_interval_s=reload_interval)
    from serving.launcher import SOURCE_TARGET, service_command

    target = bento or SOURCE_TARGET
    env["AURUM_SERVING__WORKERS"] = str(workers)
    if detach:
        from serving.launcher import start

        service = start(settings.home_dir, settings.home_dir / "serve.log", port=port, host=host, target=target,
                        env=env, inherit=True)
        pidfile.write_text(f"{service.process.pid}\n")
        typer.echo(f"http://{host}:{port}")
        typer.echo(f"  ready after {service.ready_after:.1f} s (pid {service.process.pid}); log {service.log}; "
                   f"stop it with: aurum serve --stop", err=True)
        return
    cmd = service_command(target, host, port)
    typer.echo(f"serving on http://{host}:{port}  (OpenAPI: http://{host}:{port}/docs.json, models: /v1/models)", err=True)
    try:
        raise typer.Exit(subprocess.call(cmd, env=env))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _stop_detached(pidfile: Path) -> None:
    """Stop the process group a previous ``--detach`` started (nothing when none is running)."""
    import signal

    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    import time

    try:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until it has let go of its port
            os.killpg(pid, 0)
            time.sleep(0.2)
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        typer.echo(f"  stopped the service started earlier (pid {pid})", err=True)
    pidfile.unlink(missing_ok=True)


@bento_app.command("build")
def build(markets: Markets = None) -> None:
    """Build a Bento packaging the current champions (it starts without the registry); prints its tag."""
    from features.settings import AurumSettings

    settings = AurumSettings()
    env = _env(settings, None)
    os.environ.setdefault("BENTOML_HOME", env["BENTOML_HOME"])
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    from features.lake import Lake
    from features.marketdata import MarketData
    from models import mlflow_model as ml
    from serving.service import build_bento

    if markets:
        wanted = [m.strip() for m in markets.split(",") if m.strip()]
    else:
        ml.configure(settings.mlflow_tracking_uri())
        codes = MarketData(Lake.open(settings)).registry().codes()
        wanted = [m for m in codes if ml.alias_version(f"{settings.mlflow.model_prefix}{m}", "champion")]
    if not wanted:
        typer.echo("error: no market has a champion to package; train and approve one first", err=True)
        raise typer.Exit(2)
    tag = build_bento(settings, wanted, root=ROOT)
    typer.echo(tag)
    typer.echo(f"  serve it without the registry: aurum serve --bento {tag}", err=True)
