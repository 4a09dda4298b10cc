"""Readers of source files into one parsed form: timestamps as read, canonical value columns.

A :class:`SourceMapping` says how a file maps onto the lake: which column holds the timestamp,
in which format, time zone and DST convention (see :mod:`features.timeutil`), and which source
columns feed which canonical columns. The EPF benchmark files and the ENTSO-E zone files have
built-in mappings; any other hourly or 15-minute CSV or Parquet file brings its own (TOML or JSON).

Reading never drops anything silently: a cell that is present but not a number is recorded as an
``unparseable_value`` problem with its line; the caller quarantines it.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, ValidationError, field_validator

from features.columns import KNOWN_AT_COLUMNS, VALUE_COLUMNS
from features.errors import MappingError, SourceFormatError


class SourceMapping(BaseModel):
    """How one source file maps onto the lake's canonical columns."""

    source: str = Field("csv", description="Source kind recorded with every row (epf, entsoe, csv, …).")
    market: str | None = Field(None, description="Market code of the file; the CLI's --market overrides it.")
    timestamp: str = Field(description="Column holding the start of each delivery period.")
    timestamp_format: str | None = Field(
        None, description="strptime format of the timestamp column; None: ISO 8601 (offsets honoured)."
    )
    timezone: str | None = Field(None, description="IANA zone of local timestamps; None: the market's zone.")
    convention: Literal["utc", "wallclock", "padded24"] = Field(
        "wallclock", description="DST convention of the timestamps (see features.timeutil)."
    )
    resolution: Literal["PT60M", "PT15M"] = Field("PT60M", description="Length of each delivery period.")
    columns: dict[str, str] = Field(description="Source column -> canonical column (price, load_forecast_mw, …).")
    optional_columns: tuple[str, ...] = Field((), description="Source columns of `columns` that may be absent.")
    delimiter: str = Field(",", description="CSV field delimiter.")
    decimal: str = Field(".", description="CSV decimal separator.")

    @field_validator("columns")
    @classmethod
    def _known_targets(cls, v: dict[str, str]) -> dict[str, str]:
        allowed = VALUE_COLUMNS + KNOWN_AT_COLUMNS
        bad = {src: dst for src, dst in v.items() if dst not in allowed}
        if bad:
            raise ValueError(f"unknown target columns {bad!r}; expected targets among {', '.join(allowed)}")
        targets = list(v.values())
        dupes = sorted({t for t in targets if targets.count(t) > 1})
        if dupes:
            raise ValueError(f"several source columns map to {dupes!r}; map each target once")
        if not set(targets) & set(VALUE_COLUMNS):
            raise ValueError(f"the mapping {v!r} maps no value column; expected at least one of {VALUE_COLUMNS}")
        return v

    @classmethod
    def load(cls, path: Path) -> SourceMapping:
        """Read a mapping from a ``.toml`` or ``.json`` file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise MappingError(f"mapping file {str(path)!r} cannot be read: {exc.strerror}") from exc
        try:
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise MappingError(f"mapping file {str(path)!r} is not valid {path.suffix[1:] or 'JSON'}: {exc}") from exc
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise MappingError(f"mapping file {str(path)!r} is invalid: {problems}") from exc


@dataclass
class Problem:
    """A value or row the reader could not take, to be quarantined."""

    line: int | None
    column: str | None
    reason: str
    detail: str


@dataclass
class ParsedSource:
    """A source file read into canonical form, before time placement and validation.

    ``frame`` has ``source_line`` (1-based line, header = 1), ``timestamp`` (parsed; NaT where it
    could not be parsed; naive local or tz-aware) and the mapped canonical columns as float64.
    ``raw`` holds the row as read (strings), indexed like ``frame``, for quarantine records.
    """

    path: str
    sha256: str
    mapping: SourceMapping
    frame: pd.DataFrame
    raw: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_table(path: Path, mapping: SourceMapping) -> pd.DataFrame:
    if not path.is_file():
        raise SourceFormatError(path, "no such file")
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a corrupt file
            raise SourceFormatError(path, f"not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
        return df.astype(str).replace({"nan": "", "NaT": "", "None": ""})
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, sep=mapping.delimiter, skip_blank_lines=False)
    except UnicodeDecodeError as exc:
        raise SourceFormatError(path, f"not a UTF-8 text file (byte {exc.start}: {exc.reason})") from exc
    except pd.errors.EmptyDataError as exc:
        raise SourceFormatError(path, "the file is empty; expected a header row and data rows", line=1) from exc
    except pd.errors.ParserError as exc:
        # pandas names a 1-based "line N", or a 0-based "row N" counting the header as row 0.
        m = re.search(r"\b(line|row) (\d+)", str(exc))
        line = None if m is None else int(m.group(2)) + (m.group(1) == "row")
        raise SourceFormatError(path, f"cannot be parsed as CSV: {exc}", line=line) from exc
    df.columns = [str(c).strip() for c in df.columns]
    return df


def read_source(path: Path, mapping: SourceMapping, *, first_column_name: str | None = None) -> ParsedSource:
    """Read ``path`` with ``mapping``; raises :class:`SourceFormatError` or :class:`MappingError`.

    ``first_column_name`` names a first column that has no header of its own.
    """
    path = Path(path)
    raw = _read_table(path, mapping)
    if first_column_name is not None:
        raw.columns = [first_column_name, *raw.columns[1:]]
    needed = [mapping.timestamp] + [c for c in mapping.columns if c not in mapping.optional_columns]
    missing = [c for c in needed if c not in raw.columns]
    if missing:
        raise MappingError(
            f"{path}: columns {missing!r} named by the mapping are not in the file; "
            f"the file has {list(raw.columns)!r}"
        )
    raw.index = pd.RangeIndex(len(raw))
    frame = pd.DataFrame({"source_line": np.arange(2, len(raw) + 2, dtype=np.int64)}, index=raw.index)
    ts_text = raw[mapping.timestamp].str.strip()
    frame["timestamp"] = _parse_timestamps(ts_text, mapping)
    unparsed = frame["timestamp"].isna() & ts_text.ne("")
    if unparsed.any() and unparsed.sum() == ts_text.ne("").sum():
        first = unparsed.idxmax()
        raise SourceFormatError(
            path,
            f"no timestamp could be parsed; first value {ts_text[first]!r} does not match "
            f"{mapping.timestamp_format or 'ISO 8601'}",
            line=int(frame.at[first, "source_line"]),
            column=mapping.timestamp,
        )
    problems: list[Problem] = []
    for src, dst in mapping.columns.items():
        if src not in raw.columns:
            continue
        text = raw[src].str.strip()
        if dst in KNOWN_AT_COLUMNS:
            frame[dst] = pd.to_datetime(text.replace("", None), utc=True, errors="coerce", format="ISO8601")
            bad = frame[dst].isna() & text.ne("")
        else:
            if mapping.decimal != ".":
                text = text.str.replace(mapping.decimal, ".", regex=False)
            frame[dst] = pd.to_numeric(text.replace("", None), errors="coerce").astype("float64")
            bad = frame[dst].isna() & text.ne("")
        for i in np.flatnonzero(bad.to_numpy()):
            problems.append(
                Problem(int(frame["source_line"].iat[i]), dst, "unparseable_value",
                        f"{src}={raw[src].iat[i]!r} is not a number" if dst not in KNOWN_AT_COLUMNS
                        else f"{src}={raw[src].iat[i]!r} is not an ISO 8601 time")
            )
    return ParsedSource(str(path), file_sha256(path), mapping, frame, raw, problems)


def _parse_timestamps(text: pd.Series, mapping: SourceMapping) -> pd.Series:
    values = text.replace("", None)
    if mapping.timestamp_format:
        return pd.to_datetime(values, format=mapping.timestamp_format, errors="coerce")
    if mapping.convention == "utc":
        return pd.to_datetime(values, format="ISO8601", errors="coerce", utc=True)
    parsed = pd.to_datetime(values, format="ISO8601", errors="coerce", utc=True)
    has_offset = text.str.contains(r"(?:[+-]\d\d:?\d\d|Z)$", regex=True)
    if has_offset.any():
        return parsed  # explicit offsets place each instant exactly, whatever the convention
    return pd.to_datetime(values, format="ISO8601", errors="coerce")


# ---------------------------------------------------------------- built-in formats

EPF_COLUMNS = {
    "Price": "price",
    "Prices": "price",
    "Grid load forecast": "load_forecast_mw",
    "System load forecast": "load_forecast_mw",
    "Wind power forecast": "wind_forecast_mw",
    "Generation forecast": "generation_forecast_mw",
}


def epf_mapping(path: Path) -> SourceMapping:
    """Mapping of an EPF benchmark file (epftoolbox): local time, 24 values per day (padded24)."""
    header = _header(path)
    columns = {c: EPF_COLUMNS[c] for c in header[1:] if c in EPF_COLUMNS}
    unknown = [c for c in header[1:] if c not in EPF_COLUMNS]
    if header[:1] != ["Date"] or unknown or "price" not in columns.values():
        raise SourceFormatError(
            path,
            f"header {header!r} is not an EPF benchmark header; expected 'Date' then columns among "
            f"{sorted(EPF_COLUMNS)} including a price",
            line=1,
        )
    return SourceMapping(source="epf", timestamp="Date", timestamp_format="%Y-%m-%d %H:%M:%S",
                         convention="padded24", columns=columns)


ENTSOE_COLUMNS = {
    "Price_DA": "price",
    "Load_DA": "load_forecast_mw",
    "Load_AC": "load_actual_mw",
    "Gen_SC": "generation_forecast_mw",
    "Sol_DA": "solar_forecast_mw",
    "Won_DA": "wind_onshore_forecast_mw",
    "Woff_DA": "wind_offshore_forecast_mw",
}


def entsoe_mapping(path: Path) -> SourceMapping:
    """Mapping of an ENTSO-E zone file: unnamed local timestamp column, 24 values per day (padded24).

    Timestamps are either US-style (``1/5/2015 0:00``, month first) or ISO 8601, by file.
    """
    header = _header(path)
    unknown = [c for c in header[1:] if c not in ENTSOE_COLUMNS]
    if not header or header[0] != "" or unknown or "Price_DA" not in header:
        raise SourceFormatError(
            path,
            f"header {header!r} is not an ENTSO-E zone header; expected an unnamed timestamp column, "
            f"then columns among {sorted(ENTSOE_COLUMNS)} including Price_DA",
            line=1,
        )
    first = _first_value(path)
    fmt = "%m/%d/%Y %H:%M" if re.match(r"^\d{1,2}/\d{1,2}/\d{4} ", first) else None
    return SourceMapping(source="entsoe", timestamp="timestamp", timestamp_format=fmt, convention="padded24",
                         columns={c: ENTSOE_COLUMNS[c] for c in header[1:]})


def read_entsoe(path: Path) -> ParsedSource:
    """Read an ENTSO-E zone file (its first column has no name; it is read as ``timestamp``)."""
    return read_source(path, entsoe_mapping(path), first_column_name="timestamp")


def read_epf(path: Path) -> ParsedSource:
    """Read an EPF benchmark file."""
    return read_source(path, epf_mapping(path))


def _header(path: Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise SourceFormatError(path, "no such file")
    try:
        with open(path, encoding="utf-8") as fh:
            line = fh.readline()
    except UnicodeDecodeError as exc:
        raise SourceFormatError(path, f"not a UTF-8 text file (byte {exc.start}: {exc.reason})") from exc
    if not line.strip():
        raise SourceFormatError(path, "the file is empty; expected a header row and data rows", line=1)
    return [c.strip() for c in line.rstrip("\r\n").split(",")]


def _first_value(path: Path) -> str:
    with open(path, encoding="utf-8") as fh:
        fh.readline()
        return fh.readline().split(",", 1)[0].strip()
