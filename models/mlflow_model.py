"""The MLflow adapter: the only module of Aurum that imports ``mlflow``.

:class:`ForecasterPyfunc` wraps any fitted :class:`~models.forecaster.Forecaster` as an MLflow pyfunc
model. The forecaster is stored as a pickle artifact; the ``features`` and ``models`` packages are
shipped as ``code_paths``, so the model loads in a fresh process without the repository on
``sys.path``. ``predict(context, model_input, params={"quantiles": [...]})`` returns the quantile
frame of ``Forecaster.predict``.

The signature lists only the columns the model reads (market, delivery_start, its input features);
extra columns of a lookup are dropped by MLflow. MLflow's schema has no time zones, so at the pyfunc
boundary ``delivery_start`` is a naive UTC timestamp: convert with :func:`pyfunc_input` (naive values
are taken as UTC inside the model). Metadata recorded with the model (``ForecastMetadata``): the feature
service, markets, horizon, quantiles, training window and forecaster class.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import mlflow
import mlflow.pyfunc
from features.errors import RegistryUnavailableError
from models.featureframe import FEATURE_NAMES, FEATURE_SERVICE
from models.forecaster import DEFAULT_QUANTILES, Forecaster

log = logging.getLogger(__name__)

PACKAGES = ("features", "models")
ROOT = Path(__file__).resolve().parents[1]
ARTIFACT = "forecaster"


@dataclass
class ForecastMetadata:
    """What a logged forecaster is: recorded in the MLmodel file and as run tags."""

    forecaster: str
    markets: list[str]
    training_start: str
    training_end: str
    quantiles: list[float] = field(default_factory=lambda: list(DEFAULT_QUANTILES))
    feature_service: str = FEATURE_SERVICE
    horizon: str = "day-ahead: every hour of local day D, issued before gate closure on D-1"
    input_columns: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, forecaster: Forecaster, features: pd.DataFrame, quantiles=DEFAULT_QUANTILES) -> ForecastMetadata:
        ds = features["delivery_start"]
        return cls(forecaster=type(forecaster).__name__, markets=sorted(map(str, features["market"].unique())),
                   training_start=ds.min().isoformat(), training_end=ds.max().isoformat(),
                   quantiles=[float(q) for q in quantiles], input_columns=list(forecaster.input_columns_))


class ForecasterPyfunc(mlflow.pyfunc.PythonModel):
    """A fitted forecaster behind the pyfunc interface; loaded from the ``forecaster`` artifact."""

    def __init__(self, metadata: dict[str, Any]):
        self.metadata = metadata
        self.forecaster: Forecaster | None = None

    def load_context(self, context) -> None:
        with open(context.artifacts[ARTIFACT], "rb") as f:
            self.forecaster = _Unpickler(f).load()

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        quantiles = (params or {}).get("quantiles") or self.metadata["quantiles"]
        frame = model_input.copy()
        ds = frame["delivery_start"]
        if not isinstance(ds.dtype, pd.DatetimeTZDtype):
            frame["delivery_start"] = pd.to_datetime(ds).dt.tz_localize("UTC")  # naive = UTC at this boundary
        return self.forecaster.predict(frame, quantiles=tuple(float(q) for q in quantiles))


class _Unpickler(pickle.Unpickler):
    """``pickle``'s own unpickler, except that a LightGBM class is looked up after
    :func:`models.lightgbm_forecaster.import_lightgbm`, so loading a model does not import
    scikit-learn for LightGBM's sake (a naive or LEAR-only model imports no LightGBM at all)."""

    def find_class(self, module: str, name: str):
        if module.partition(".")[0] == "lightgbm":
            from models.lightgbm_forecaster import import_lightgbm

            import_lightgbm()
        return super().find_class(module, name)


def pyfunc_input(features: pd.DataFrame) -> pd.DataFrame:
    """A feature frame as the pyfunc signature takes it: tz-aware timestamps as naive UTC, and every
    integer or boolean feature as a double.

    The signature declares features as doubles so that a missing value (NaN) in, say, ``hour`` is a
    missing input the model counts, not a schema error: MLflow rejects floats in an integer column.
    """
    out = features.copy()
    for c in out.columns:
        dtype = out[c].dtype
        if isinstance(dtype, pd.DatetimeTZDtype):
            out[c] = out[c].dt.tz_convert("UTC").dt.tz_localize(None)
        elif c in FEATURE_NAMES and (pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
                                     or dtype == object):
            out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64") if dtype == object \
                else out[c].astype("float64")
    return out


def log_forecaster(forecaster: Forecaster, example: pd.DataFrame, *, name: str = "forecaster",
                   quantiles=DEFAULT_QUANTILES, training_features: pd.DataFrame | None = None,
                   registered_model_name: str | None = None):
    """Log a fitted forecaster into the active MLflow run (one is started if none is); returns the ModelInfo.

    ``example``: a few rows of a feature frame (the signature is inferred from it and from the
    forecaster's output, with a ``quantiles`` parameter). ``training_features`` (default ``example``)
    gives the training window recorded in the metadata.
    """
    from mlflow.models import infer_signature

    meta = ForecastMetadata.of(forecaster, training_features if training_features is not None else example, quantiles)
    output = forecaster.predict(example, quantiles)
    columns = ["market", "delivery_start", *dict.fromkeys([*forecaster.required_columns, *forecaster.input_columns_])]
    signature = infer_signature(pyfunc_input(example[columns]), output,
                                params={"quantiles": [float(q) for q in quantiles]})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "forecaster.pkl"
        path.write_bytes(pickle.dumps(forecaster))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=ForecasterPyfunc(asdict(meta)),
            artifacts={ARTIFACT: str(path)},
            code_paths=[str(ROOT / p) for p in PACKAGES],
            signature=signature,
            pip_requirements=_requirements(),  # explicit: inference of requirements costs 10-14 s
            metadata=asdict(meta),
            registered_model_name=registered_model_name,
        )


def download_model(uri: str, dst: str | Path) -> Path:
    """Copy the model files at ``uri`` (``models:/name/version``) into ``dst``: a folder that loads
    with :func:`load_forecaster` without the registry (a served bundle)."""
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))


def load_forecaster(uri: str):
    """The pyfunc model at ``uri`` (``runs:/…``, ``models:/name@alias``, a path).

    MLflow's own check of a model's requirements against the environment maps every installed
    distribution to its modules first (about a third of a model load, on every service start); this
    compares the model's pinned requirements with the installed versions of just those packages, and
    its Python version with this interpreter's, and logs each mismatch as a warning.
    """
    local = Path(uri) if Path(uri).exists() else Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    for problem in environment_mismatches(local):
        log.warning("model %s: %s", uri, problem)
    return mlflow.pyfunc.load_model(str(local), suppress_warnings=True)


def environment_mismatches(model_dir: Path) -> list[str]:
    """What differs between the environment a model was logged with (its ``requirements.txt`` pins and
    ``python_env.yaml``) and this one, one message per package; empty when everything matches."""
    import sys
    from importlib.metadata import PackageNotFoundError, version

    out = []
    req = model_dir / "requirements.txt"
    for line in req.read_text().splitlines() if req.exists() else []:
        name, sep, pinned = line.split("#")[0].strip().partition("==")
        if not sep:
            continue
        try:
            installed = version(name.strip())
        except PackageNotFoundError:
            installed = None
        if installed != pinned.strip():
            out.append(f"logged with {name.strip()}=={pinned.strip()}, installed: {installed or 'not installed'}")
    env = model_dir / "python_env.yaml"
    for line in env.read_text().splitlines() if env.exists() else []:
        if line.startswith("python:"):
            logged = line.split(":", 1)[1].strip()
            running = f"{sys.version_info.major}.{sys.version_info.minor}"
            if logged.split(".")[:2] != running.split("."):
                out.append(f"logged with Python {logged}, running {running}")
    return out


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "pandas", "numpy", "scikit-learn", "scipy", "lightgbm",
                                           "pydantic", "holidays")]


# ---------------------------------------------------------------- tracking and registry
#
# Training, serving and monitoring reach MLflow only through the functions below, so the SDK stays
# in this one module and its calls are easy to audit (and to point at another store).


def configure(tracking_uri: str, registry_uri: str | None = None) -> None:
    """Point this process's MLflow client at a tracking store (and model registry, default the same)."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri or tracking_uri)


def ping(store: str) -> None:
    """Touch the tracking store once; :class:`RegistryUnavailableError` naming ``store`` if it does not answer."""
    try:
        mlflow.MlflowClient().search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - every backend fails differently; the cause is kept
        raise RegistryUnavailableError(f"the MLflow store at {store} does not answer: "
                                       f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from exc


def check_reachable(url: str, redacted: str | None = None) -> None:
    """Fail fast (:class:`RegistryUnavailableError`) when a database-backed store cannot be connected to.

    MLflow itself retries a lost database for minutes before it gives up; a quick connect first
    turns an outage into an immediate, clear error. Other stores (files, HTTP) are not checked here.
    """
    if not url.startswith(("postgresql", "mysql", "mssql")):
        return
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url.split("?")[0], connect_args={"connect_timeout": 5}
                                          if url.startswith("postgresql") else {})
        with engine.connect():
            pass
        engine.dispose()
    except sqlalchemy.exc.OperationalError as exc:
        raise RegistryUnavailableError(f"the MLflow store at {redacted or url} does not answer: {exc.orig}") from exc


def experiment(name: str, artifact_location: str | None = None) -> str:
    """Id of the experiment ``name``, created (with its artifact location) on first use."""
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return mlflow.create_experiment(name, artifact_location=artifact_location)


@contextlib.contextmanager
def run(experiment_id: str, name: str, *, tags: dict[str, str] | None = None, nested: bool = False):
    """An MLflow run as a context manager; yields its run id. A failure marks the run FAILED."""
    with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags, nested=nested) as r:
        yield r.info.run_id


def log_params(params: dict[str, object]) -> None:
    mlflow.log_params({k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v, default=str))
                       for k, v in params.items()})


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    clean = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
    mlflow.log_metrics(clean, step=step)


def set_tags(tags: dict[str, object]) -> None:
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_figure(figure, artifact_file: str) -> None:
    """Log a matplotlib figure, then close it (pyplot keeps every open figure until closed)."""
    import matplotlib.pyplot as plt

    try:
        mlflow.log_figure(figure, artifact_file)
    finally:
        plt.close(figure)


def run_record(run_id: str) -> dict[str, object]:
    """Params, metrics, tags, status and artifact URI of one run."""
    r = mlflow.MlflowClient().get_run(run_id)
    return {"run_id": run_id, "params": dict(r.data.params), "metrics": dict(r.data.metrics),
            "tags": dict(r.data.tags), "status": r.info.status, "artifact_uri": r.info.artifact_uri,
            "experiment_id": r.info.experiment_id, "start_time": r.info.start_time}


def download_artifact(run_id: str, path: str, dst: str | Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst)))


def search_runs(experiment_id: str, filter_string: str = "", order_by: list[str] | None = None) -> list[dict]:
    runs = mlflow.MlflowClient().search_runs([experiment_id], filter_string=filter_string,
                                             order_by=order_by or ["attributes.start_time DESC"], max_results=1000)
    return [{"run_id": r.info.run_id, "params": dict(r.data.params), "metrics": dict(r.data.metrics),
             "tags": dict(r.data.tags), "start_time": r.info.start_time} for r in runs]


@dataclass
class VersionRecord:
    """One registered model version: number, run, tags, aliases."""

    name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]
    aliases: list[str]
    created: int


def _record(v) -> VersionRecord:
    return VersionRecord(v.name, str(v.version), v.run_id, v.source, dict(v.tags or {}), list(v.aliases or []),
                         int(v.creation_timestamp or 0))


def register(model_uri: str, name: str, *, tags: dict[str, str] | None = None, description: str = "") -> VersionRecord:
    """Register ``model_uri`` as a new version of ``name`` (created on first use) with its tags.

    All or nothing: if tagging fails, the new version is deleted again, so no half-registered
    version remains.
    """
    client = mlflow.MlflowClient()
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description="Aurum day-ahead price forecaster of one market.")
    mv = client.create_model_version(name, model_uri, run_id=_run_of(model_uri), description=description)
    try:
        for k, v in (tags or {}).items():
            client.set_model_version_tag(name, mv.version, k, str(v))
    except BaseException:
        client.delete_model_version(name, mv.version)
        raise
    return version(name, str(mv.version))


def _run_of(model_uri: str) -> str | None:
    if model_uri.startswith("runs:/"):
        return model_uri.split("/")[1]
    if model_uri.startswith("models:/m-"):
        try:
            return mlflow.get_logged_model(model_uri.split("/")[1]).source_run_id
        except mlflow.exceptions.MlflowException:
            return None
    return None


def version(name: str, number: str) -> VersionRecord:
    return _record(mlflow.MlflowClient().get_model_version(name, str(number)))


def alias_version(name: str, alias: str) -> VersionRecord | None:
    """The version ``alias`` points at, or None (no such model or alias)."""
    try:
        return _record(mlflow.MlflowClient().get_model_version_by_alias(name, alias))
    except mlflow.exceptions.MlflowException:
        return None


def aliases(prefix: str) -> dict[str, dict[str, str]]:
    """Every registered model whose name starts with ``prefix``, with its aliases (alias -> version): one query."""
    client = mlflow.MlflowClient()
    found, token = [], None
    while True:
        page = client.search_registered_models(filter_string=f"name LIKE '{prefix}%'", max_results=1000, page_token=token)
        found += list(page)
        token = page.token
        if not token:
            break
    return {m.name: {a: str(v) for a, v in (m.aliases or {}).items()} for m in found}


def set_alias(name: str, alias: str, number: str) -> None:
    mlflow.MlflowClient().set_registered_model_alias(name, alias, str(number))


def set_version_tags(name: str, number: str, tags: dict[str, object]) -> None:
    client = mlflow.MlflowClient()
    for k, v in tags.items():
        client.set_model_version_tag(name, str(number), k, str(v))


def versions(name: str) -> list[VersionRecord]:
    """Every version of a registered model, newest first ([] when the model does not exist)."""
    found = mlflow.MlflowClient().search_model_versions(f"name = '{name}'", max_results=10000)
    return sorted((_record(v) for v in found), key=lambda v: int(v.version), reverse=True)

