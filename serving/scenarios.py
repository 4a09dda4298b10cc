"""What-if scenarios: change the known-in-advance inputs of a delivery day before the model predicts.

A :class:`Scenario` is a list of :class:`Override` s, each scaling, shifting or setting one exogenous
forecast of the feature service (:data:`OVERRIDABLE`: load, wind, solar, generation, fuel price) over
all local delivery hours or some of them. Invariants:

- Only inputs that are *forecasts published before the auction* can be overridden. Price lags are
  history and calendar features are facts; both are refused by name.
- ``residual_load_mw`` is derived, never overridden: wherever a scenario changes load, wind or solar
  it is recomputed with the feature tables' own function (:func:`features.transforms.exogenous.residual_load`),
  so a scenario gives exactly the feature the lake would hold had the forecasts been those values.
- A missing (NaN) input stays missing: a scenario does not invent data, and it is not reported as changed.
- Overrides apply in order, so ``scale`` then ``add`` on the same feature compose.
- An override that would make an input negative or non-finite is an error, not a clipped value.

:func:`apply` works on a day's feature frame (as :meth:`features.featurestore.OnlineFeatures.day`
returns it); :func:`apply_vectors` is the same on arrays, for the service's hot path. Both return the
changed inputs with their hours and means before and after.

:class:`ScenarioStore` keeps named scenario definitions per tenant in the serving database (see
:mod:`serving.keys`), so a scenario can be saved once and re-run by name.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from features.errors import ScenarioError, ScenarioNotFoundError
from features.settings import DEFAULT_BOUNDS, AurumSettings
from features.transforms.calendar import CALENDAR_FEATURES
from features.transforms.exogenous import EXOGENOUS_COLUMNS, RESIDUAL_LOAD_PARTS, ExogenousLagsAdder, residual_load
from features.transforms.price_lags import PriceLagsAdder
from serving.keys import now_utc, open_engine, utc

OVERRIDABLE: tuple[str, ...] = EXOGENOUS_COLUMNS
DERIVED: dict[str, tuple[str, ...]] = {"residual_load_mw": RESIDUAL_LOAD_PARTS}
PRICE_FEATURES: tuple[str, ...] = tuple(PriceLagsAdder().feature_names)
LAGGED_FORECASTS: tuple[str, ...] = tuple(ExogenousLagsAdder().feature_names)
LOCAL_HOURS = range(24)  # wall-clock hour of the local delivery day, as the calendar feature ``hour``
MAX_OVERRIDES = 20
SLUG = r"^[a-z0-9][a-z0-9_-]{0,63}$"  # the same slug as the service API's scenario names
# Every overridable input is a non-negative physical quantity or price (the lake's plausibility bounds).
LOWER_BOUNDS: dict[str, float] = {f: DEFAULT_BOUNDS[f][0] for f in OVERRIDABLE if DEFAULT_BOUNDS[f][0] is not None}


def _refusal(feature: str) -> str:
    allowed = ", ".join(OVERRIDABLE)
    if feature in DERIVED:
        return (f"feature {feature!r} is derived from {', '.join(DERIVED[feature])} and recomputed from them; "
                f"override those instead (overridable: {allowed})")
    if feature in PRICE_FEATURES:
        return f"feature {feature!r} is a price lag (past prices), not a forecast input; overridable: {allowed}"
    if feature in LAGGED_FORECASTS:
        return (f"feature {feature!r} is a forecast of an earlier day (D-1 or D-7), published before this one; "
                f"a scenario changes the delivery day's own forecasts: {allowed}")
    if feature in CALENDAR_FEATURES:
        return f"feature {feature!r} is a calendar feature, not a forecast input; overridable: {allowed}"
    return f"unknown feature {feature!r}; overridable: {allowed}"


class Override(BaseModel):
    """One change to one input: ``scale`` multiplies, ``add`` adds (MW or EUR/MWh), ``set`` replaces.

    ``hours``: local wall-clock delivery hours 0..23 (the ``hour`` calendar feature; on the autumn DST
    day both repeated hours 2 match), or None for every hour of the day.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature: str = Field(description=f"Input to change, one of {', '.join(OVERRIDABLE)}.")
    op: Literal["scale", "add", "set"] = Field(description="scale: multiply by value; add: add value; set: replace.")
    value: float = Field(description="Factor (scale, finite, >= 0), amount (add, finite) or new value (set, finite).")
    hours: list[int] | None = Field(None, description="Local delivery hours 0..23 to change; None: all hours.")

    @field_validator("feature")
    @classmethod
    def _overridable(cls, v: str) -> str:
        if v not in OVERRIDABLE:
            raise ValueError(_refusal(v))
        return v

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return None
        if not v:
            raise ValueError("hours is empty; expected local hours 0..23, or null for every hour")
        bad = [h for h in v if h not in LOCAL_HOURS]
        if bad:
            raise ValueError(f"hours {bad} out of range; expected local delivery hours 0..23")
        dup = sorted({h for h in v if v.count(h) > 1})
        if dup:
            raise ValueError(f"hours {dup} given more than once; expected each hour once")
        return sorted(v)

    @model_validator(mode="after")
    def _value(self) -> Override:
        v = self.value
        if self.op == "scale" and not (math.isfinite(v) and v >= 0):
            raise ValueError(f"scale factor of {self.feature!r} must be finite and >= 0, got {v!r}")
        if self.op == "add" and not math.isfinite(v):
            raise ValueError(f"add amount of {self.feature!r} must be finite, got {v!r}")
        if self.op == "set":
            low = LOWER_BOUNDS.get(self.feature)
            if not math.isfinite(v) or (low is not None and v < low):
                raise ValueError(f"set value of {self.feature!r} must be finite"
                                 + (f" and >= {low:g}" if low is not None else "") + f", got {v!r}")
        return self


class Scenario(BaseModel):
    """A named what-if: 1 to 20 overrides applied in order to each requested market and day."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Slug: 1-64 lower-case letters, digits, '-' or '_', starting with a letter or "
                      "digit.", json_schema_extra={"pattern": SLUG})
    description: str = Field("", max_length=2000, description="What the scenario represents.")
    overrides: list[Override] = Field(min_length=1, max_length=MAX_OVERRIDES,
                                      description=f"The changes, applied in order (1 to {MAX_OVERRIDES}).")

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not re.fullmatch(SLUG, v):
            raise ValueError(f"scenario name {v!r} is not a slug; expected 1-64 lower-case letters, digits, '-' or "
                             "'_', starting with a letter or digit")
        return v

    @property
    def features(self) -> list[str]:
        """The inputs this scenario overrides, in first-use order."""
        return list(dict.fromkeys(o.feature for o in self.overrides))


class ChangedInput(BaseModel):
    """One input a scenario changed: the local hours it changed in and its mean over those hours."""

    model_config = ConfigDict(frozen=True)

    feature: str = Field(description="Feature name.")
    derived: bool = Field(description="True for an input recomputed from changed parts (residual load).")
    hours: list[int] = Field(description="Local delivery hours whose value changed, ascending.")
    old_mean: float = Field(description="Mean over those hours before the scenario.")
    new_mean: float = Field(description="Mean over those hours after the scenario.")


# ----------------------------------------------------------------------------------------------------------------
# Applying


def apply_vectors(scenario: Scenario, names: Sequence[str], values: np.ndarray,
                  local_hours: np.ndarray) -> tuple[np.ndarray, list[ChangedInput]]:
    """Apply ``scenario`` to one day's feature vectors: ``values[i, j]`` is feature ``names[j]`` of hour i.

    ``local_hours[i]`` is the local wall-clock hour (0..23) of row i. Returns a new float array (the input
    is not modified) and the changed inputs, overridden ones in first-use order, then derived ones.

    Raises:
        ScenarioError: the shape does not match, an overridden input is not among ``names``, residual load
            is among them without all its parts, or an override makes an input negative or non-finite.
    """
    names = list(names)
    values = np.asarray(values, dtype=np.float64)
    hours = np.asarray(local_hours)
    if values.ndim != 2 or values.shape[1] != len(names):
        raise ScenarioError(f"values of shape {values.shape} do not match {len(names)} feature names; "
                            "expected hours x features")
    if hours.shape != (values.shape[0],):
        raise ScenarioError(f"local_hours of shape {hours.shape}; expected one local hour per row ({values.shape[0]})")
    column = {n: j for j, n in enumerate(names)}
    for feature in scenario.features:
        if feature not in column:
            raise ScenarioError(f"scenario {scenario.name!r} overrides {feature!r}, which is not among the "
                                f"inputs ({', '.join(names)}); the lookup must include every overridden input")
    out = values.copy()
    for o in scenario.overrides:
        j = column[o.feature]
        rows = np.ones(len(hours), dtype=bool) if o.hours is None else np.isin(hours, o.hours)
        rows &= ~np.isnan(out[:, j])  # missing stays missing
        old = out[rows, j]
        new = old * o.value if o.op == "scale" else old + o.value if o.op == "add" else np.full_like(old, o.value)
        _check(scenario, o, new, hours[rows])
        out[rows, j] = new
    changes = [c for f in scenario.features if (c := _changed(f, False, values, out, column[f], hours))]
    for feature, parts in DERIVED.items():
        if feature not in column or not any(p in scenario.features for p in parts):
            continue
        absent = [p for p in parts if p not in column]
        if absent:
            raise ScenarioError(f"{feature!r} is among the inputs but its parts {absent} are not, so it cannot be "
                                f"recomputed after scenario {scenario.name!r}; include {', '.join(parts)}")
        j = column[feature]
        touched = np.zeros(len(hours), dtype=bool)
        for p in parts:
            touched |= (values[:, column[p]] != out[:, column[p]]) & ~np.isnan(values[:, column[p]])
        touched &= ~np.isnan(values[:, j])  # a missing residual load stays missing, like any missing input
        out[touched, j] = residual_load(*(out[touched, column[p]] for p in parts))
        if (c := _changed(feature, True, values, out, j, hours)) is not None:
            changes.append(c)
    return out, changes


def _check(scenario: Scenario, o: Override, new: np.ndarray, hours: np.ndarray) -> None:
    bad = ~np.isfinite(new)
    low = LOWER_BOUNDS.get(o.feature)
    if low is not None:
        bad |= new < low
    if bad.any():
        i = int(np.argmax(bad))
        raise ScenarioError(f"scenario {scenario.name!r}: {o.op} {o.value:g} makes {o.feature!r} {float(new[i])!r} "
                            f"at local hour {int(hours[i])}; expected a finite value"
                            + (f" >= {low:g}" if low is not None else ""))


def _changed(feature: str, derived: bool, before: np.ndarray, after: np.ndarray, j: int,
             hours: np.ndarray) -> ChangedInput | None:
    # NaN != NaN, but a missing value is never changed (overrides skip it), so compare known values only.
    diff = (before[:, j] != after[:, j]) & ~np.isnan(before[:, j])
    if not diff.any():
        return None
    return ChangedInput(feature=feature, derived=derived, hours=sorted({int(h) for h in hours[diff]}),
                        old_mean=float(before[diff, j].mean()), new_mean=float(after[diff, j].mean()))


def apply(scenario: Scenario, frame: pd.DataFrame, *,
          timezone: str | None = None) -> tuple[pd.DataFrame, list[ChangedInput]]:
    """Apply ``scenario`` to one market-day's feature rows (a frame like ``OnlineFeatures.day()`` returns).

    Local hours come from the ``hour`` column, or from ``delivery_start`` in ``timezone`` when the frame has
    no ``hour``. Returns a modified copy (other columns untouched) and the changed inputs.

    Raises:
        ScenarioError: as :func:`apply_vectors`, or no way to tell the local hours.
    """
    if "hour" in frame.columns and not frame["hour"].isna().any():
        hours = frame["hour"].to_numpy(dtype=np.int64)
    elif timezone is not None:
        hours = pd.to_datetime(frame["delivery_start"], utc=True).dt.tz_convert(timezone).dt.hour.to_numpy()
    else:
        raise ScenarioError("the frame has no complete 'hour' column to place rows in their local hours; "
                            "include the calendar feature 'hour' or pass timezone=")
    names = [c for c in (*OVERRIDABLE, *DERIVED) if c in frame.columns]
    values = frame[names].to_numpy(dtype=np.float64, na_value=np.nan)
    new, changes = apply_vectors(scenario, names, values, hours)
    out = frame.copy()
    for change in changes:
        out[change.feature] = new[:, names.index(change.feature)]
    return out, changes


# ----------------------------------------------------------------------------------------------------------------
# Saved scenarios

scenario_metadata = sa.MetaData()
scenarios_table = sa.Table(
    "scenarios", scenario_metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("definition", sa.Text, nullable=False),  # the Scenario as JSON
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("saved_by", sa.String(200), nullable=True),
)


@dataclass(frozen=True)
class StoredScenario:
    """A saved scenario: ``version`` starts at 1 and grows by one each time the name is saved again."""

    tenant: str
    scenario: Scenario
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    saved_by: str | None

    @property
    def name(self) -> str:
        return self.scenario.name


class ScenarioStore:
    """Named scenario definitions per tenant, in the serving database (SQLite under home, PostgreSQL schema
    ``serving``). A tenant sees only its own scenarios."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    @classmethod
    def open(cls, settings: AurumSettings) -> ScenarioStore:
        """The profile's scenario store (table created if missing)."""
        return cls(open_engine(settings, [scenarios_table]))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ScenarioStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def save(self, tenant: str, scenario: Scenario, *, saved_by: str | None = None) -> StoredScenario:
        """Save ``scenario`` under its name; an existing one of that name is replaced and its version bumped."""
        t = scenarios_table
        definition = scenario.model_dump_json()
        for _ in range(3):  # two first saves of one name at once: the loser retries as an update
            now = now_utc()
            try:
                with self.engine.begin() as conn:
                    # An atomic increment: concurrent saves each get their own version.
                    updated = conn.execute(t.update().where(t.c.tenant == tenant, t.c.name == scenario.name)
                                           .values(version=t.c.version + 1, definition=definition, updated_at=now,
                                                   saved_by=saved_by))
                    if updated.rowcount == 0:
                        conn.execute(t.insert().values(tenant=tenant, name=scenario.name, version=1,
                                                       definition=definition, created_at=now, updated_at=now,
                                                       saved_by=saved_by))
                    row = conn.execute(t.select().where(t.c.tenant == tenant, t.c.name == scenario.name)
                                       ).mappings().one()
                return _stored(row)
            except sa.exc.IntegrityError:
                continue
        raise ScenarioError(f"could not save scenario {scenario.name!r} of tenant {tenant!r}: "
                            "concurrent saves kept colliding")

    def get(self, tenant: str, name: str) -> StoredScenario:
        """The saved scenario ``name`` of ``tenant``.

        Raises:
            ScenarioNotFoundError: the tenant has no scenario of that name.
        """
        t = scenarios_table
        with self.engine.connect() as conn:
            row = conn.execute(t.select().where(t.c.tenant == tenant, t.c.name == name)).mappings().first()
        if row is None:
            raise ScenarioNotFoundError(f"no saved scenario {name!r} for tenant {tenant!r}; "
                                        f"saved: {', '.join(self.names(tenant)) or 'none'}")
        return _stored(row)

    def names(self, tenant: str) -> list[str]:
        t = scenarios_table
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(t.c.name).where(t.c.tenant == tenant).order_by(t.c.name)).scalars())

    def list(self, tenant: str) -> list[StoredScenario]:
        """The tenant's saved scenarios, by name."""
        t = scenarios_table
        with self.engine.connect() as conn:
            rows = conn.execute(t.select().where(t.c.tenant == tenant).order_by(t.c.name)).mappings().all()
        return [_stored(r) for r in rows]

    def delete(self, tenant: str, name: str) -> None:
        """Delete a saved scenario.

        Raises:
            ScenarioNotFoundError: the tenant has no scenario of that name.
        """
        t = scenarios_table
        with self.engine.begin() as conn:
            deleted = conn.execute(t.delete().where(t.c.tenant == tenant, t.c.name == name)).rowcount
        if deleted == 0:
            raise ScenarioNotFoundError(f"no saved scenario {name!r} for tenant {tenant!r}; "
                                        f"saved: {', '.join(self.names(tenant)) or 'none'}")


def _stored(row) -> StoredScenario:
    return StoredScenario(tenant=row["tenant"], scenario=Scenario.model_validate(json.loads(row["definition"])),
                          version=int(row["version"]), created_at=utc(row["created_at"]),
                          updated_at=utc(row["updated_at"]), saved_by=row["saved_by"])
