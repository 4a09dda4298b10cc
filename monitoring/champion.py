"""The serving champion of a market, and the lineage its training run recorded.

Monitoring meets training only through the MLflow registry (through :mod:`models.mlflow_model`, the
one MLflow adapter): the version behind the alias ``champion`` of ``<model_prefix><MARKET>``, its
version tags (``feature_service``, ``train_days``, ``run_id``) and the tags of the training run
that logged it (``data_start`` and ``data_end``, the first and last local delivery day of the data
it loaded; ``feature_service``; ``lineage.snapshot:<table>``, the Iceberg snapshot of every table it
read). Those say exactly which rows the model was fitted on, so the reference can be rebuilt.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from features.errors import LineageError, NoChampionError
from features.settings import AurumSettings
from models import mlflow_model as ml

CHAMPION = "champion"
SNAPSHOT_TAG = "lineage.snapshot:"


def model_name(settings: AurumSettings, market: str) -> str:
    return f"{settings.mlflow.model_prefix}{market}"


def redact(uri: str) -> str:
    """A store URI without its password."""
    parts = urlsplit(uri)
    if parts.password:
        return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
    return uri


def open_registry(settings: AurumSettings, market: str) -> None:
    """Point MLflow at the profile's store and check that it answers.

    A local SQLite store that does not exist yet is not created: no model was ever trained there.

    Raises:
        NoChampionError: the local store does not exist.
        RegistryUnavailableError: the store does not answer.
    """
    uri = settings.mlflow_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise NoChampionError(f"market {market!r} has no champion: the MLflow store {uri} does not exist yet; "
                              f"train one first (aurum train --market {market})")
    ml.configure(uri)
    ml.ping(redact(uri))


@dataclass(frozen=True)
class Lineage:
    """What the champion's training run read: the local delivery days, the feature service, the snapshots.

    ``data_start`` .. ``data_end`` are the first and last local day of the data the run loaded
    (inclusive); the model was fitted on its last ``train_days`` days (+1, as training counts) or on
    all of it. ``started_at`` is when the run began: no feature version computed later was read.
    """

    run_id: str
    feature_service: str
    data_start: dt.date
    data_end: dt.date
    train_days: int | None
    snapshots: dict[str, int]
    started_at: dt.datetime

    @property
    def fitted_days(self) -> tuple[dt.date, dt.date]:
        """First and last local delivery day the model was fitted on (both inclusive)."""
        first = self.data_start
        if self.train_days is not None:
            first = max(first, self.data_end - dt.timedelta(days=self.train_days))
        return first, self.data_end


@dataclass(frozen=True)
class Champion:
    """A market's champion version. ``lineage`` is None when it was resolved without it (the performance
    monitor needs the training run, not the data it read)."""

    market: str
    model_name: str
    version: str
    lineage: Lineage | None
    tags: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None

    @property
    def model_uri(self) -> str:
        """The pinned version (not the alias, which may move while a check runs)."""
        return f"models:/{self.model_name}/{self.version}"


def champion(settings: AurumSettings, market: str, *, lineage: bool = True) -> Champion:
    """The version behind ``champion`` for ``market``, with the lineage of its training run (unless
    ``lineage`` is False: then only the run id is resolved, and the lineage tags are not required).

    Raises:
        NoChampionError: no store, no registered model or no ``champion`` alias.
        LineageError: the version names no run, or the run lacks the data window, feature service or
            snapshot tags a reference is rebuilt from.
        RegistryUnavailableError: the store does not answer.
    """
    open_registry(settings, market)
    name = model_name(settings, market)
    version = ml.alias_version(name, CHAMPION)
    if version is None:
        known = ml.versions(name)
        what = (f"versions {[v.version for v in known]} of {name!r} but none is aliased {CHAMPION!r}" if known
                else f"no registered model {name!r}")
        raise NoChampionError(f"market {market!r} has no champion to monitor: there are {what}; "
                              f"train and approve one first (aurum train --market {market})")
    run_id = version.run_id or version.tags.get("run_id")
    where = f"{name} version {version.version}"
    if not run_id:
        raise LineageError(f"{where} names no MLflow run, so its training data is unknown; expected the run "
                           "of `aurum train` that registered it")
    if not lineage:
        return Champion(market, name, version.version, None, dict(version.tags), run_id)
    try:
        record = ml.run_record(run_id)
    except Exception as exc:  # noqa: BLE001 - the adapter re-raises MLflow's own exception type
        raise LineageError(f"{where}: its training run {run_id!r} cannot be read ({type(exc).__name__}); "
                           "the reference data cannot be rebuilt") from exc
    tags = record["tags"]
    service = version.tags.get("feature_service") or tags.get("feature_service")
    snapshots = {k[len(SNAPSHOT_TAG):]: v for k, v in tags.items() if k.startswith(SNAPSHOT_TAG)}
    missing = [t for t, v in (("data_start", tags.get("data_start")), ("data_end", tags.get("data_end")),
                              ("feature_service", service), (f"{SNAPSHOT_TAG}<table>", snapshots)) if not v]
    if missing:
        raise LineageError(f"{where}: its training run {run_id!r} records no {', '.join(missing)}; expected the "
                           "lineage tags `aurum train` writes (data window, feature service, Iceberg snapshots)")
    try:
        start, end = dt.date.fromisoformat(tags["data_start"]), dt.date.fromisoformat(tags["data_end"])
        train_days = int(version.tags["train_days"]) if version.tags.get("train_days") else None
        snaps = {table: int(s) for table, s in snapshots.items()}
    except ValueError as exc:
        raise LineageError(f"{where}: run {run_id!r} has a malformed lineage tag ({exc}); expected ISO days "
                           "for data_start/data_end and integers for train_days and snapshot ids") from exc
    started = dt.datetime.fromtimestamp(int(record["start_time"]) / 1000, dt.timezone.utc)
    found = Lineage(run_id, service, start, end, train_days, snaps, started)
    return Champion(market, name, version.version, found, dict(version.tags), run_id)
