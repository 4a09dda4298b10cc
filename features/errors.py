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
