"""The market registry: every market's code, time zone, currency, auction times and provenance.

A market's clock tells every later stage when each value becomes known. All times below are
local wall-clock times of the market on the day before delivery (D-1):

- ``forecasts_issued``: the TSO day-ahead forecasts of load, wind, solar and generation are
  published by then (ENTSO-E rules: no later than two hours before gate closure);
- ``gate_closure``: the day-ahead auction closes; a forecast for day D is issued before it;
- ``prices_published``: the auction results (the prices of day D) are public by then.

Actual values (such as actual load) become known ``actuals_delay`` after the end of their
delivery period (ENTSO-E: one hour).
"""

from __future__ import annotations

import datetime as dt
import re

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.errors import UnknownMarketError

MARKET_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,15}$")


class Market(BaseModel):
    """One bidding zone or market and its clock."""

    model_config = ConfigDict(frozen=True)

    code: str = Field(description="Market code, upper case, such as 'DE_LU' or 'NP'.")
    name: str = Field(description="Human name of the market.")
    timezone: str = Field(description="IANA time zone of local delivery time, such as 'Europe/Berlin'.")
    country: str = Field(description="ISO 3166-1 alpha-2 country for public holidays.")
    currency: str = Field("EUR", description="ISO 4217 currency of prices.")
    gate_closure: dt.time = Field(dt.time(12, 0), description="Day-ahead gate closure, local time on D-1.")
    prices_published: dt.time = Field(dt.time(13, 0), description="Day-ahead results public by, local time on D-1.")
    forecasts_issued: dt.time = Field(dt.time(10, 0), description="Day-ahead TSO forecasts public by, local on D-1.")
    actuals_delay: dt.timedelta = Field(dt.timedelta(hours=1), description="Actuals known this long after delivery.")
    provenance: str = Field("", description="Where the data of this market comes from, and its licence.")

    @field_validator("code")
    @classmethod
    def _code_shape(cls, v: str) -> str:
        if not MARKET_CODE.match(v):
            raise ValueError(f"market code {v!r} must match {MARKET_CODE.pattern}")
        return v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"time zone {v!r} is not an IANA zone such as 'Europe/Berlin'") from exc
        return v

    def on_day_before(self, delivery_start: pd.Series, at: dt.time) -> pd.Series:
        """UTC instant of local time ``at`` on the local day before each delivery's local day.

        ``delivery_start`` must be tz-aware; the result is ``datetime64[us, UTC]``.
        """
        local_day = delivery_start.dt.tz_convert(self.timezone).dt.tz_localize(None).dt.normalize()
        offset = pd.Timedelta(hours=at.hour, minutes=at.minute) - pd.Timedelta(days=1)
        # Auction times are never inside a DST transition (02:00-03:00), so localisation is exact.
        return (local_day + offset).dt.tz_localize(self.timezone).dt.tz_convert("UTC").astype("datetime64[us, UTC]")


_EPF = "Lago et al. 2021 EPF benchmark (epftoolbox), CC BY 4.0"
_ENTSOE = "ENTSO-E transparency platform, CC0 1.0"
_SYN = "Aurum synthetic market (features.synthetic), seeded"

BUILTIN_MARKETS: tuple[Market, ...] = (
    Market(code="NP", name="Nord Pool system", timezone="Europe/Oslo", country="NO", provenance=_EPF),
    Market(code="BE", name="Belgium", timezone="Europe/Brussels", country="BE", provenance=f"{_EPF}; {_ENTSOE}"),
    Market(code="FR", name="France", timezone="Europe/Paris", country="FR", provenance=f"{_EPF}; {_ENTSOE}"),
    Market(code="DE_LU", name="Germany-Luxembourg", timezone="Europe/Berlin", country="DE", provenance=_ENTSOE),
    Market(code="DK_1", name="Denmark West", timezone="Europe/Copenhagen", country="DK", provenance=_ENTSOE),
    Market(code="ES", name="Spain", timezone="Europe/Madrid", country="ES", provenance=_ENTSOE),
    Market(code="NL", name="Netherlands", timezone="Europe/Amsterdam", country="NL", provenance=_ENTSOE),
    Market(code="NO_2", name="Norway South-West", timezone="Europe/Oslo", country="NO", provenance=_ENTSOE),
    Market(code="PL", name="Poland", timezone="Europe/Warsaw", country="PL", provenance=_ENTSOE),
    Market(code="SE_3", name="Sweden Stockholm", timezone="Europe/Stockholm", country="SE", provenance=_ENTSOE),
    Market(code="SYN_NORTH", name="Synthetic north (wind-heavy)", timezone="Europe/Berlin", country="DE", provenance=_SYN),
    Market(code="SYN_SOUTH", name="Synthetic south (solar-heavy)", timezone="Europe/Madrid", country="ES", provenance=_SYN),
    Market(code="SYN_EAST", name="Synthetic east (thermal)", timezone="Europe/Warsaw", country="PL", provenance=_SYN),
)


class MarketRegistry:
    """Built-in markets plus the ones a user registered in the lake's ``markets`` table."""

    def __init__(self, markets: tuple[Market, ...] | list[Market] = BUILTIN_MARKETS):
        self._by_code = {m.code: m for m in markets}

    def get(self, code: str) -> Market:
        try:
            return self._by_code[code]
        except KeyError:
            raise UnknownMarketError(code, list(self._by_code)) from None

    def add(self, market: Market) -> None:
        self._by_code[market.code] = market

    def codes(self) -> list[str]:
        return sorted(self._by_code)

    def __iter__(self):
        return iter(self._by_code.values())

    def __contains__(self, code: object) -> bool:
        return code in self._by_code
