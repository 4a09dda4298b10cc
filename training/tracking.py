"""Opening the MLflow store of the active profile, and what every run records about its inputs.

All MLflow calls go through :mod:`models.mlflow_model` (the one MLflow adapter); this module turns
its failures into the platform's errors and adds what a run needs to be reviewable without reading
code: lineage (Iceberg snapshots, feature service, data window, git commit) and plots.
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import RegistryUnavailableError
from features.settings import AurumSettings
from models import mlflow_model as ml
from models.metrics import quantile_level

ROOT = Path(__file__).resolve().parents[1]


def open_tracking(settings: AurumSettings) -> str:
    """Point MLflow at the profile's store, check that it answers, and return the experiment id.

    Raises:
        RegistryUnavailableError: the tracking/registry store does not answer (nothing is written).
    """
    uri = settings.mlflow_tracking_uri()
    if settings.profile == "prod" and not settings.mlflow.tracking_uri:
        ensure_schema(settings.postgres_url, "mlflow")
    elif uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    elif uri.startswith(("postgresql", "mysql", "mssql")):
        ml.check_reachable(uri, redact(uri))  # MLflow itself retries an unreachable database for about 100 s
    ml.configure(uri)
    with _first_use_lock(uri):
        ml.ping(redact(uri))
        return ml.experiment(settings.mlflow.experiment, settings.mlflow_artifact_root())


@contextlib.contextmanager
def _first_use_lock(uri: str):
    """Serialise the first contact with a SQLite store across processes.

    MLflow creates and migrates its tables on first use; two processes doing that at once on a new
    SQLite file fail ("Online migration expected to match one row"), so they take turns here.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    with open(f"{uri[len('sqlite:///'):]}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_schema(url: str, schema: str) -> None:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        engine.dispose()
    except sqlalchemy.exc.OperationalError as exc:
        raise RegistryUnavailableError(f"PostgreSQL at {redact(url)} does not answer: {exc.orig}") from exc


def redact(uri: str) -> str:
    """A store URI without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


def model_name(settings: AurumSettings, market: str) -> str:
    return f"{settings.mlflow.model_prefix}{market}"


@functools.cache
def git_commit() -> str:
    """The commit of the code that ran (``+dirty`` when the work tree has changes), or ``unknown``."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        if head.returncode:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---------------------------------------------------------------- plots


def plot_forecast(forecasts: pd.DataFrame, title: str, days: int = 14):
    """The last ``days`` days of a backtest: actual price, median and the 80 % band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = forecasts[forecasts["day"] >= sorted(forecasts["day"].unique())[-min(days, forecasts["day"].nunique())]]
    x = pd.to_datetime(f["delivery_start"], utc=True)
    fig, ax = plt.subplots(figsize=(11, 4))
    if {"q10", "q90"} <= set(f.columns):
        ax.fill_between(x, f["q10"], f["q90"], alpha=0.25, label="80 % interval (q10-q90)")
    ax.plot(x, f["actual"], color="black", lw=1.2, label="actual")
    ax.plot(x, f["q50"], lw=1.2, label="forecast (median)")
    ax.plot(x, f["naive"], lw=0.8, ls=":", label="weekly naive")
    ax.set(title=title, ylabel="price per MWh", xlabel="delivery start (UTC)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def plot_error_by_hour(by_hour: dict[str, pd.Series], title: str):
    """MAE per local delivery hour, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, s in by_hour.items():
        ax.plot(s.index, s.to_numpy(), marker="o", ms=3, label=name)
    ax.set(title=title, xlabel="local delivery hour", ylabel="MAE", xticks=range(0, 24, 2))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_calibration(forecasts: pd.DataFrame, quantile_columns: list[str], title: str):
    """Observed share of actuals below each quantile forecast against its nominal level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = forecasts[forecasts["actual"].notna()]
    levels = [quantile_level(c) for c in quantile_columns]
    observed = [float(np.mean(f["actual"] <= f[c])) for c in quantile_columns]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfect")
    ax.plot(levels, observed, marker="o", label="backtest")
    for lv, ob in zip(levels, observed):
        ax.annotate(f"{ob:.2f}", (lv, ob), textcoords="offset points", xytext=(5, -10), fontsize=8)
    ax.set(title=title, xlabel="nominal quantile level", ylabel="share of actuals below", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_importance(importance: pd.DataFrame, title: str, top: int = 15):
    """The ``top`` inputs of each member's median model by their share of its importance, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = importance[importance["quantile"] == 0.5]
    groups = list(med.groupby(["member", "model", "measure"], sort=False))
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(5.5 * max(1, len(groups)), 0.3 * top + 1.5),
                             squeeze=False)
    for ax, ((member, model, measure), g) in zip(axes[0], groups):
        g = g.groupby("input")["share"].mean().nlargest(top)[::-1]  # markets averaged
        ax.barh(g.index, g.to_numpy())
        ax.set(title=f"{member or model} ({measure})", xlabel="share of the model's importance")
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig

