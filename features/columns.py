"""Canonical column names of the market-data lake, shared by sources, validation and tables.

Names carry their unit (``_mw``, ``_eur_mwh``); the price is in the market's currency per MWh.
"""

from __future__ import annotations

PRICE = "price"
FORECAST_COLUMNS: tuple[str, ...] = (
    "load_forecast_mw",
    "generation_forecast_mw",
    "wind_forecast_mw",
    "wind_onshore_forecast_mw",
    "wind_offshore_forecast_mw",
    "solar_forecast_mw",
    "fuel_price_eur_mwh",
)
ACTUAL_COLUMNS: tuple[str, ...] = ("load_actual_mw",)
FUNDAMENTAL_COLUMNS: tuple[str, ...] = FORECAST_COLUMNS + ACTUAL_COLUMNS
VALUE_COLUMNS: tuple[str, ...] = (PRICE,) + FUNDAMENTAL_COLUMNS
# Optional source columns that say when values became known; derived from the market's clock when absent.
KNOWN_AT_COLUMNS: tuple[str, ...] = ("published_at", "issued_at")
