"""The typed settings of every Aurum deployable: one pydantic-settings object, ``AURUM_`` prefix.

Two profiles share all code:

- ``local`` (default): everything embedded under ``AURUM_HOME`` (default ``./.aurum``): an Iceberg
  SQL catalog in SQLite (``catalog.db``) and a file warehouse (``warehouse/``).
- ``prod``: an Iceberg SQL catalog on PostgreSQL (``AURUM_POSTGRES_URL``) or a REST catalog
  (``AURUM_CATALOG__TYPE=rest``, ``AURUM_CATALOG__URI=https://…``), a warehouse on any
  fsspec/pyarrow URI (``s3://…``, ``gs://…``, ``file://…``) and Redis (``AURUM_REDIS_URL``).

Nested fields use ``__``: ``AURUM_CATALOG__WAREHOUSE=s3://bucket/aurum``. Nothing here touches the
network or the disk at import; entry points build a settings object and pass it down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.errors import ConfigurationError

DEFAULT_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    # Harmonised day-ahead price limits of the European market coupling are -500 and +4000 EUR/MWh.
    "price": (-500.0, 4000.0),
    "load_forecast_mw": (0.0, 200_000.0),
    "load_actual_mw": (0.0, 200_000.0),
    "generation_forecast_mw": (0.0, 300_000.0),
    "wind_forecast_mw": (0.0, 150_000.0),
    "wind_onshore_forecast_mw": (0.0, 150_000.0),
    "wind_offshore_forecast_mw": (0.0, 80_000.0),
    "solar_forecast_mw": (0.0, 150_000.0),
    "fuel_price_eur_mwh": (0.0, 1_000.0),
}

# An exact zero in a zone-wide load, generation or wind forecast is a placeholder for missing
# data in public sources (seen in the ENTSO-E files); a zero solar forecast is simply night.
DEFAULT_ZERO_IS_MISSING: tuple[str, ...] = (
    "load_forecast_mw",
    "load_actual_mw",
    "generation_forecast_mw",
    "wind_forecast_mw",
    "wind_onshore_forecast_mw",
    "wind_offshore_forecast_mw",
)


class CatalogSettings(BaseModel):
    """Where the Iceberg catalog and its warehouse live."""

    type: Literal["sql", "rest"] = Field("sql", description="Iceberg catalog kind: SQL (SQLite/PostgreSQL) or REST.")
    name: str = Field("aurum", description="Catalog name; SQL catalogs keep tables of several names apart.")
    uri: str | None = Field(
        None,
        description="SQLAlchemy URL of a SQL catalog or the base URL of a REST catalog; "
        "default: SQLite under the home folder (local) or AURUM_POSTGRES_URL (prod).",
    )
    warehouse: str | None = Field(
        None, description="Warehouse URI for data files (file://, s3://, gs://, abfs://); default: home/warehouse locally."
    )
    properties: dict[str, str] = Field(
        default_factory=dict,
        description="Extra catalog properties passed through (REST credential/token, s3.endpoint, s3.region …).",
    )


class ValidationSettings(BaseModel):
    """Rules that decide which ingested values are accepted and which go to quarantine."""

    bounds: dict[str, tuple[float | None, float | None]] = Field(
        default_factory=lambda: dict(DEFAULT_BOUNDS),
        description="Plausible [min, max] per canonical column; values outside go to quarantine.",
    )
    zero_is_missing: tuple[str, ...] = Field(
        DEFAULT_ZERO_IS_MISSING, description="Columns where an exact 0 means 'no data' and is quarantined."
    )


class MlflowSettings(BaseModel):
    """Where runs, models and the registry live, and how experiments are named."""

    tracking_uri: str | None = Field(
        None, description="MLflow tracking/registry store; default: SQLite under home (local) or the "
        "PostgreSQL of the prod profile, schema 'mlflow'.")
    artifact_root: str | None = Field(
        None, description="Where run artifacts go (a folder or object-store URI); default home/mlartifacts.")
    experiment: str = Field("aurum-day-ahead", description="Experiment of training, backtest and tuning runs.")
    model_prefix: str = Field("day_ahead_", description="Registered model name = prefix + market code.")


class ApprovalSettings(BaseModel):
    """The approval gate: when a candidate replaces the champion."""

    margin: float = Field(0.01, ge=0, lt=1, description="Relative MAE improvement over the champion needed to promote.")
    coverage_band: tuple[float, float] = Field(
        (0.74, 0.86), description="The 80 % interval's backtest coverage must fall inside this band.")
    hour_tolerance: float = Field(
        0.25, ge=0, description="No local hour's MAE may exceed the champion's by more than this fraction.")
    max_rmae: float = Field(1.0, gt=0, description="A first champion must beat the weekly naive forecast (rMAE below this).")


class ServingSettings(BaseModel):
    """The forecast service: what it serves, how often it re-reads the registry, request limits."""

    host: str = Field("127.0.0.1", description="Address `aurum serve` binds; loopback unless deliberately exposed.")
    port: int = Field(3000, ge=1, le=65535, description="HTTP port of `aurum serve`.")
    workers: int = Field(1, ge=1, description="Service worker processes (each loads the models once).")
    markets: tuple[str, ...] = Field((), description="Markets served (their champions are loaded); empty = every market with a champion.")
    reload_interval_s: float = Field(30.0, gt=0, description="Seconds between checks of the registry's champion alias.")
    shadow: bool = Field(False, description="Score every request with the challenger too, off the request path (archived as shadow).")
    auth: bool = Field(True, description="Require an API key on the forecast endpoints (health and metrics stay open).")
    max_days_ahead: int = Field(2, ge=1, description="Latest delivery day accepted: today (market time) plus this many days.")
    max_days_back: int = Field(3660, ge=0, description="Earliest delivery day accepted: today minus this many days.")
    max_batch_items: int = Field(64, ge=1, description="Most (market, day) forecasts in one batch call.")
    max_scenarios: int = Field(8, ge=1, description="Most scenarios in one scenario call.")
    max_request_bytes: int = Field(65536, ge=1024, description="Largest request body accepted.")
    stale_after_s: float | None = Field(
        None, gt=0, description="Features older than this at the issue time are stale (default: the feature views' TTL).")
    archive: bool = Field(True, description="Append every served forecast to the Iceberg table `forecasts`.")
    archiver_nice: int = Field(
        5, ge=0, le=19, description="Niceness added to the archiver child process: its Iceberg commits and merges "
                                    "yield the CPU to the requests (0 = the worker's priority).")
    archive_compact_every: int = Field(
        16, ge=0, description="Merge a partition's small archive files after this many flushes into it "
                              "(0 = never; 1 is not allowed: at least 2).")
    max_missing_hours: int = Field(
        1, ge=0, description="Hours of a day a model input may be missing (a lag of the hour a DST change removed) "
                             "before the baseline answers instead of the model.")
    cache_size: int = Field(4096, ge=0, description="Forecasts kept per model, keyed by the exact feature values (0 = off).")
    online_plan: bool = Field(
        True, description="Start from the saved online plan (no Feast import) while it matches the registry.")
    online_cache: int = Field(
        64, ge=0, description="Online-store lookups (days) kept per thread while the SQLite online store is unchanged "
                              "(0 = off; Redis is read on every request).")
    # The serving database (API keys, saved scenarios) and the key cache of serving.keys.
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the serving database; default: SQLite home/serving.db (local) or "
        "AURUM_POSTGRES_URL (prod), in schema db_schema.")
    db_schema: str = Field(
        "serving", pattern=r"^[a-z_][a-z0-9_]*$",
        description="PostgreSQL schema of the serving tables, created if missing (ignored on SQLite).")
    key_cache_seconds: float = Field(
        30.0, ge=0, description="How long a verified API key is trusted without a database read; a revocation "
        "takes effect in other processes within this time (0: read the database on every request).")

    @field_validator("archive_compact_every")
    @classmethod
    def _compact_every(cls, v: int) -> int:
        if v == 1:
            raise ValueError("archive_compact_every 1 would merge after every flush; use 0 (never) or at least 2")
        return v


class AlertRules(BaseModel):
    """Warn and alert levels of the monitoring rules (``monitoring.alerts``); a state is ok below the warn level.

    Drift rules are judged on every ``aurum monitor drift``; the performance rules (error ratio,
    coverage) on forecast-quality checks. ``coverage`` is a band: warn outside the first band, alert
    outside the second.
    """

    drift_share_warn: float = Field(0.2, ge=0, le=1, description="Share of monitored features drifting that warns.")
    drift_share_alert: float = Field(0.35, ge=0, le=1, description="Share of monitored features drifting that alerts.")
    feature_drift_warn: float = Field(
        1.5, gt=0, description="Largest drift of one feature, as a multiple of its calibrated threshold, that warns.")
    feature_drift_alert: float = Field(
        2.0, gt=0, description="Largest drift of one feature, as a multiple of its calibrated threshold, that alerts.")
    prediction_drift_warn: float = Field(
        1.0, gt=0, description="Prediction drift as a multiple of its calibrated threshold that warns.")
    prediction_drift_alert: float = Field(
        2.0, gt=0, description="Prediction drift as a multiple of its calibrated threshold that alerts.")
    missing_share_warn: float = Field(0.02, ge=0, le=1, description="Share of missing feature values in the window that warns.")
    missing_share_alert: float = Field(0.10, ge=0, le=1, description="Share of missing feature values in the window that alerts.")
    data_lag_hours_warn: float = Field(
        24.0, ge=0, description="Stale data: hours between the window's end and its last delivery hour with features that warn.")
    data_lag_hours_alert: float = Field(48.0, ge=0, description="Stale data: the same lag that alerts.")
    error_ratio_warn: float = Field(1.25, gt=0, description="Live MAE over the champion's backtest MAE that warns.")
    error_ratio_alert: float = Field(1.5, gt=0, description="Live MAE over the champion's backtest MAE that alerts.")
    coverage_warn_band: tuple[float, float] = Field(
        (0.74, 0.86), description="Coverage of the 80 % interval outside this band warns.")
    coverage_alert_band: tuple[float, float] = Field(
        (0.65, 0.95), description="Coverage of the 80 % interval outside this band alerts.")


class MonitoringSettings(BaseModel):
    """Drift monitoring of the serving champions: how windows are compared, report sizes, alert rules."""

    experiment: str = Field("aurum-monitoring", description="MLflow experiment of monitoring runs (one run per check).")
    season_half_width_days: int = Field(
        14, ge=1, le=182, description="A window is compared with the reference days within this many days of its "
        "own days in the calendar year (like seasons; whole days, so like hours).")
    calibration_guard_days: int = Field(
        28, ge=0, description="Calibration compares each reference week with reference days of its season at least "
        "this many days away from it (weather persists for days, fuel prices for weeks: nearer days would hide "
        "the variation a window a year later shows).")
    threshold_margin: float = Field(
        1.5, ge=1.0, description="A feature drifts when its distance exceeds the largest distance of any reference "
        "week from its season, times this margin.")
    min_threshold: float = Field(0.05, gt=0, description="Floor of every calibrated threshold (distance in reference standard deviations).")
    min_calibration_weeks: int = Field(4, ge=2, description="Reference weeks needed to calibrate thresholds.")
    calibration_max_rows: int = Field(
        5_000, ge=500, description="Rows per side of a calibration comparison beyond which it is sampled (large "
        "references: the distances barely move, the time stays flat).")
    max_rows: int = Field(
        50_000, ge=1_000, description="Rows per side beyond which a window and its matched reference are sampled "
        "(stratified by day and hour) before distances and the Evidently report.")
    reference_max_rows: int = Field(
        200_000, ge=1_000, description="Rows of the cached reference beyond which it is sampled (stratified by day and "
        "hour); scales are computed on every row first.")
    webhook_url: str | None = Field(None, description="URL that receives one JSON POST per alert state change.")
    webhook_timeout_s: float = Field(10.0, gt=0, description="Seconds a webhook POST may take.")
    rules: AlertRules = Field(default_factory=AlertRules, description="Warn and alert levels of every market.")
    market_rules: dict[str, dict[str, float | tuple[float, float]]] = Field(
        default_factory=dict, description="Per market, the levels that differ from `rules`, such as "
        '{"SYN_NORTH": {"drift_share_alert": 0.3}}.')
    coverage_warn_z: float = Field(
        1.645, ge=0, description="The coverage rule's warn band is widened to at least 0.8 ± this many standard errors "
        "of a calibrated interval's coverage over the window's days (hours of a day miss together: a week is 7 "
        "samples, not 168).")
    coverage_alert_z: float = Field(
        2.576, ge=0, description="The same widening of the coverage rule's alert band, in standard errors.")
    retrain_cooldown_hours: float = Field(
        24.0, ge=0, description="`aurum monitor run --retrain-on-alert` retrains a market at most once in this many "
        "hours (the retrain rows of monitoring_metrics), so a persisting alert does not retrain on every run.")
    retrain_timeout_s: float = Field(
        7200.0, gt=0, description="Seconds the retraining subprocess (`aurum train`) may take before it is stopped.")


class AurumSettings(BaseSettings):
    """Settings of the whole platform; build one in an entry point and pass it down."""

    model_config = SettingsConfigDict(env_prefix="AURUM_", env_nested_delimiter="__", extra="ignore")

    profile: Literal["local", "prod"] = Field("local", description="Embedded 'local' or server-backed 'prod'.")
    home: Path = Field(Path(".aurum"), description="Home folder of everything the local profile keeps, and reports.")
    namespace: str = Field("market", description="Iceberg namespace of the market-data tables.")
    catalog: CatalogSettings = Field(default_factory=CatalogSettings, description="Iceberg catalog and warehouse.")
    postgres_url: str = Field(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/test",
        description="PostgreSQL of the prod profile (Iceberg catalog; later MLflow, Feast registry, Optuna).",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis of the prod profile (Feast online store).")
    feast_project: str = Field(
        "aurum", pattern=r"^[A-Za-z0-9][A-Za-z0-9_]*$",
        description="Feast project name; keeps registries and online keys of several deployments apart.",
    )
    data_dir: Path | None = Field(
        None, description="Folder of real market files (epf/, entsoe/); default ../shared/data when it exists."
    )
    validation: ValidationSettings = Field(default_factory=ValidationSettings, description="Ingest validation rules.")
    commit_retries: int = Field(8, ge=0, description="Retries of an Iceberg commit that conflicts with another writer.")
    snapshot_keep_last: int = Field(
        16, ge=2, description="Snapshots kept per table for time travel; older untagged ones are expired after commits."
    )
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings, description="MLflow tracking and registry.")
    approval: ApprovalSettings = Field(default_factory=ApprovalSettings, description="The champion approval gate.")
    serving: ServingSettings = Field(default_factory=ServingSettings, description="The forecast service.")
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings,
                                           description="Drift monitoring and alert rules.")

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    def catalog_properties(self) -> dict[str, str]:
        """Properties for ``pyiceberg.catalog.load_catalog`` under the active profile."""
        c = self.catalog
        if c.type == "rest":
            if not c.uri:
                raise ConfigurationError("a REST catalog needs AURUM_CATALOG__URI, the catalog's base URL")
            props = {"type": "rest", "uri": c.uri}
            if c.warehouse:
                props["warehouse"] = c.warehouse
            return props | c.properties
        if self.profile == "local":
            uri = c.uri or f"sqlite:///{self.home_dir / 'catalog.db'}"
            warehouse = c.warehouse or (self.home_dir / "warehouse").as_uri()
        else:
            uri = c.uri or self.postgres_url
            if not c.warehouse:
                raise ConfigurationError(
                    "the prod profile needs AURUM_CATALOG__WAREHOUSE (for example s3://bucket/aurum); got none"
                )
            warehouse = c.warehouse
        return {"type": "sql", "uri": uri, "warehouse": warehouse} | c.properties

    def mlflow_tracking_uri(self) -> str:
        """The MLflow store of the active profile (prod: PostgreSQL, in its own schema ``mlflow``)."""
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        if self.profile == "local":
            return f"sqlite:///{self.home_dir / 'mlflow.db'}"
        sep = "&" if "?" in self.postgres_url else "?"
        return f"{self.postgres_url}{sep}options=-csearch_path%3Dmlflow"

    def mlflow_artifact_root(self) -> str:
        return self.mlflow.artifact_root or (self.home_dir / "mlartifacts").as_uri()

    def resolved_data_dir(self) -> Path | None:
        """The real-data folder, or None when there is none."""
        if self.data_dir is not None:
            return self.data_dir
        candidate = Path("..") / "shared" / "data"
        return candidate.resolve() if candidate.is_dir() else None
