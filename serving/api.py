"""The forecast API's typed requests and responses (pydantic), shared by the service and its clients.

Field constraints live here, so a bad request is rejected before any work with a message naming the
field and what was expected; the OpenAPI schema of the service is generated from these models.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MARKET_PATTERN = r"^[A-Z][A-Z0-9_]{1,31}$"
DEFAULT_QUANTILES = (0.1, 0.5, 0.9)

MarketCode = Annotated[str, Field(pattern=MARKET_PATTERN, description="Market code, such as SYN_NORTH or DE_LU.")]
# Bounds stated inclusively: the service's OpenAPI is version 3.0, where exclusive bounds are booleans;
# the validator below refuses 0 and 1 themselves.
Level = Annotated[float, Field(ge=0, le=1, description="A quantile level strictly between 0 and 1.")]
Quantiles = Annotated[list[Level], Field(min_length=1, max_length=9, description=(
    "Quantile levels to return, each strictly between 0 and 1 (at most 9). The model must have been "
    "fitted or calibrated for them."))]


def _unique_sorted(levels: list[float]) -> list[float]:
    if any(not 0 < q < 1 for q in levels):
        raise ValueError(f"quantiles {levels!r} must each lie strictly between 0 and 1")
    if len(set(levels)) != len(levels):
        raise ValueError(f"quantiles {levels!r} repeat a level; give each level once")
    return sorted(levels)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ForecastRequest(_Strict):
    """One market's day-ahead forecast."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "example": {"market": "SYN_NORTH", "delivery_day": "2024-06-01", "quantiles": [0.1, 0.5, 0.9]}})

    market: MarketCode
    delivery_day: dt.date | None = Field(None, description="Local delivery day D; default: the market's next day.")
    quantiles: Quantiles = Field(default_factory=lambda: list(DEFAULT_QUANTILES))

    _levels = field_validator("quantiles")(classmethod(lambda cls, v: _unique_sorted(v)))


class HourForecast(BaseModel):
    delivery_start: dt.datetime = Field(description="Start of the delivery hour, UTC.")
    local_hour: int = Field(description="Hour of the local delivery day (0-23; an autumn DST day repeats one).")
    values: dict[str, float] = Field(description="Forecast price per quantile column (q10, q50, q90, ...).")


class ModelInfo(BaseModel):
    name: str = Field(description="Registered model name, or the baseline's name.")
    version: str = Field(description="Registered version ('baseline' for the fallback).")
    alias: Literal["champion", "challenger", "baseline"]
    feature_service: str


class FeatureInfo(BaseModel):
    service: str = Field(description="Feast feature service the features came from.")
    snapshot_id: int | None = Field(description="Iceberg snapshot of the feature tables the online store was materialized from.")
    known_at: dt.datetime | None = Field(description="Latest time any feature of the day became known.")
    max_age_seconds: float | None = Field(description="Age of the oldest feature at the issue time.")
    stale_hours: int = Field(description="Delivery hours with a missing or too old feature.")
    missing_inputs: int = Field(description="Missing model inputs over all hours.")


class ForecastResponse(BaseModel):
    request_id: str
    market: str
    delivery_day: dt.date
    timezone: str
    issued_at: dt.datetime = Field(description="Gate closure on D-1 (UTC): the knowledge cut-off of this forecast.")
    quality: Literal["ok", "degraded"]
    quality_reason: str | None = Field(description="Why the forecast is degraded (fallback to the baseline).")
    model: ModelInfo
    features: FeatureInfo
    scenario: str | None = None
    hours: list[HourForecast]


class DayRef(_Strict):
    market: MarketCode
    delivery_day: dt.date | None = Field(None, description="Local delivery day; default: the market's next day.")


class BatchRequest(_Strict):
    """Many markets and days in one call (at most the service's batch limit)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {
        "items": [{"market": "SYN_NORTH", "delivery_day": "2024-06-01"},
                  {"market": "SYN_SOUTH", "delivery_day": "2024-06-01"}], "quantiles": [0.1, 0.5, 0.9]}})

    items: list[DayRef] = Field(min_length=1, max_length=512, description="The (market, day) pairs to forecast.")
    quantiles: Quantiles = Field(default_factory=lambda: list(DEFAULT_QUANTILES))

    _levels = field_validator("quantiles")(classmethod(lambda cls, v: _unique_sorted(v)))


class ItemError(BaseModel):
    market: str
    delivery_day: dt.date | None
    status: int = Field(description="The HTTP status this item alone would have had.")
    error: str


class BatchResponse(BaseModel):
    request_id: str
    forecasts: list[ForecastResponse]
    errors: list[ItemError] = Field(description="Items that could not be forecast, with the reason.")


class OverrideSpec(_Strict):
    feature: str = Field(description="A known-in-advance input, such as load_forecast_mw.")
    op: Literal["scale", "add", "set"]
    value: float
    hours: list[Annotated[int, Field(ge=0, le=23)]] | None = Field(
        None, description="Local delivery hours (clock hours 0-23) to change; default all.")


class ScenarioSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="Scenario name (lower-case slug).")
    description: str = Field("", max_length=500)
    overrides: list[OverrideSpec] = Field(min_length=1, max_length=20)


class ScenarioRequest(_Strict):
    """What-if forecasts: each scenario's overrides applied to the base case of every market and day."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {
        "markets": ["SYN_NORTH"], "delivery_days": ["2024-06-01"],
        "scenarios": [{"name": "high-load", "overrides": [{"feature": "load_forecast_mw", "op": "scale", "value": 1.05}]},
                      {"name": "calm", "overrides": [{"feature": "wind_forecast_mw", "op": "scale", "value": 0.5}]}],
        "saved": []}})

    markets: list[MarketCode] = Field(min_length=1, max_length=16)
    delivery_days: list[dt.date] = Field(default_factory=list, max_length=31,
                                         description="Local delivery days; default: each market's next day.")
    scenarios: list[ScenarioSpec] = Field(default_factory=list, max_length=64, description="Scenarios defined inline.")
    saved: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]] = Field(
        default_factory=list, max_length=64, description="Names of scenarios saved earlier by this tenant.")
    quantiles: Quantiles = Field(default_factory=lambda: list(DEFAULT_QUANTILES))

    _levels = field_validator("quantiles")(classmethod(lambda cls, v: _unique_sorted(v)))


class ChangedInputInfo(BaseModel):
    feature: str
    hours: list[int]
    mean_before: float | None
    mean_after: float | None


class ScenarioResult(BaseModel):
    scenario: str
    market: str
    delivery_day: dt.date
    changed_inputs: list[ChangedInputInfo] = Field(description="Exactly which inputs the scenario changed.")
    base: ForecastResponse
    forecast: ForecastResponse
    difference: list[dict[str, float]] = Field(description="Scenario minus base, per hour and quantile column.")


class ScenarioResponse(BaseModel):
    request_id: str
    results: list[ScenarioResult]
    errors: list[ItemError]


class SaveScenarioRequest(_Strict):
    scenario: ScenarioSpec


class SavedScenario(BaseModel):
    name: str
    version: int
    tenant: str


class ReloadRequest(_Strict):
    markets: list[MarketCode] = Field(default_factory=list, description="Markets to re-read; default all.")
