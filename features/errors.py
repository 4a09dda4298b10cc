"""Every domain exception of Aurum, in one module.

Each subclasses the built-in that fits, so callers can catch either the domain type or the
built-in. Messages show the bad value with ``{value!r}`` and say what was expected.
"""

from __future__ import annotations


class AurumError(Exception):
    """Base of every Aurum error; the CLI prints its message and exits with status 2."""


class ConfigurationError(AurumError, ValueError):
    """A setting is missing or inconsistent (for example the prod profile without a warehouse)."""


class UnknownMarketError(AurumError, KeyError):
    """A market code that is not in the market registry."""

    def __init__(self, code: str, known: list[str]):
        self.code = code
        self.known = known
        super().__init__(code)

    def __str__(self) -> str:
        return f"unknown market {self.code!r}; expected one of {', '.join(sorted(self.known))}"


class SourceFormatError(AurumError, ValueError):
    """A source file that cannot be read as the expected format; names the file and where."""

    def __init__(self, path: object, problem: str, *, line: int | None = None, column: str | None = None):
        self.path = str(path)
        self.line = line
        self.column = column
        where = self.path
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {problem}")


class MappingError(AurumError, ValueError):
    """A column mapping that does not fit its file or names unknown target columns."""


class CatalogUnavailableError(AurumError, ConnectionError):
    """The Iceberg catalog (SQLite, PostgreSQL or REST) cannot be reached."""


class CommitConflictError(AurumError, RuntimeError):
    """A table commit kept conflicting with concurrent writers after every retry."""


class IngestAbortedError(AurumError, RuntimeError):
    """An ingest failed part-way; the tables it had touched were restored to their state before it."""


class InvalidWindowError(AurumError, ValueError):
    """A time window bound that is not a time, or a window that ends before it starts."""


class FeatureFrameError(AurumError, ValueError):
    """A feature frame given to a forecaster lacks a column, has an unknown one, or holds a bad value.

    ``column`` names the offending column (None when the problem is the frame as a whole).
    """

    def __init__(self, message: str, *, column: str | None = None):
        self.column = column
        super().__init__(message)


class FeatureStoreError(AurumError, ValueError):
    """A feature-store request that cannot be answered as asked."""


class QuantileError(AurumError, ValueError):
    """Requested quantile levels that are not distinct numbers strictly inside (0, 1), or not available."""


class NotFittedError(AurumError, RuntimeError):
    """A forecaster used for prediction before ``fit``."""


class TrainingDataError(AurumError, ValueError):
    """Training or backtest data that cannot support the request: too little history, an empty window."""


class RegistryError(AurumError, RuntimeError):
    """A model-registry request that cannot be done: unknown model or version, a failed approval step."""


class RegistryUnavailableError(AurumError, ConnectionError):
    """The MLflow tracking or registry store does not answer."""


class ServingStoreUnavailableError(AurumError, ConnectionError):
    """The serving database (API keys, saved scenarios: SQLite under home or PostgreSQL) does not answer."""


class OnlineStoreUnavailableError(AurumError, ConnectionError):
    """The online feature store (Redis, or the SQLite file) does not answer a lookup: the features are
    unknown to the caller, not missing or stale. The message names the store and the cause."""


class ApiKeyError(AurumError, ValueError):
    """An API-key request that cannot be done: a bad tenant or market list, an unknown key id."""


class ScenarioError(AurumError, ValueError):
    """A what-if scenario that cannot be applied to the given inputs: an input it overrides is absent,
    or an override would make an input impossible (a negative load, a non-finite value)."""


class ScenarioNotFoundError(AurumError, LookupError):
    """No saved scenario of that name for the tenant."""


class ForecastUnavailableError(AurumError, LookupError):
    """No forecast can be made for a market and day: no model serves the market, or neither the
    features nor the baseline's inputs (prices a week earlier) are known."""


class ForecastRequestError(AurumError, ValueError):
    """A forecast request the service refuses: a delivery day outside the accepted range, a quantile
    the serving model cannot give, more items than the limit. The message names the field."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class AccessDeniedError(AurumError, PermissionError):
    """An API key that may not do this: another tenant's market, or an admin endpoint without an admin key."""


class ForecastArchiveError(AurumError, ValueError):
    """Forecast rows that break the contract of the archive table ``serving.forecasts``: a missing,
    unknown, null or out-of-range column. ``column`` names it."""

    def __init__(self, message: str, *, column: str | None = None):
        super().__init__(message)
        self.column = column


class ArchiveBacklogError(AurumError, RuntimeError):
    """The forecast archive did not take rows: it is closed, or its unflushed backlog is full because
    the lake has refused flushes for a while. The rows offered were not queued."""


class NoChampionError(AurumError, LookupError):
    """A market with no model to monitor: no registered model, no ``champion`` alias, or no MLflow store yet."""


class LineageError(AurumError, ValueError):
    """A champion whose MLflow run does not record what its reference data needs (data window, feature
    service, snapshots), or a cached reference that does not belong to it. Names the run and what is missing."""


class MonitoringDataError(AurumError, ValueError):
    """A monitoring window that cannot be judged: no features known for its days, or a reference too short
    to calibrate drift thresholds on. Names the market, the window and the data that exists."""
