"""A seeded synthetic day-ahead electricity market, for training forecasters and testing drift monitors.

Each synthetic market (``SYN_NORTH`` wind-heavy, ``SYN_SOUTH`` solar-heavy, ``SYN_EAST`` thermal)
is a small physical story told in vectorised numpy:

- **load** follows daily, weekly and yearly shapes, a persistent weather anomaly and noise (no
  public holidays); the actual load is the forecast plus an autocorrelated error of a few percent;
- **wind** is an hourly AR(1) weather process (multi-day persistence) turned into wind speed and
  passed through a fleet power curve, windier in winter;
- **solar** follows the sun's elevation at the market's latitude and longitude (so day length and
  height change with the season and solar noon moves with DST), dimmed by persistent cloudiness;
- **fuel** is a daily mean-reverting walk of a shared European gas hub times a market basis,
  constant within a local day;
- **price** clears on a merit order of the residual load (load - wind - solar) over the thermal
  fleet: fuel price x heat-rate-like factor with a convex top, linear down to zero through the
  must-run band, saturating negative prices below zero, noise, and rare spikes in tight hours.

Invariants of every frame returned by ``generate_market``:

- one row per hourly delivery period of the market's local days ``[start, end)``: 23 rows on the
  spring DST day, 25 on the autumn day; ``delivery_start`` is ``datetime64[us, UTC]``, strictly
  increasing, hourly, gapless;
- exactly the columns of ``COLUMNS``, all float64 but ``delivery_start``, no NaN;
- ``wind_forecast_mw`` is never exactly 0 (exact zeros mean "missing" in Aurum); ``solar_forecast_mw``
  is exactly 0 at night; ``price`` lies in ``[PRICE_FLOOR, PRICE_CAP]``; load, generation and fuel
  are positive;
- deterministic: the same arguments give an identical frame. Each market draws from its own
  random streams derived from ``seed`` and the market code; the gas hub from ``seed`` alone;
- prefix-stable: extending ``end`` appends rows and leaves the earlier ones bit-identical (every
  random stream is drawn in time order and nothing is normalised by sample statistics);
- a ``RegimeShift`` changes only the rows from its local ``start`` day on; earlier rows are
  identical to the unshifted run with the same seed.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import zlib
from collections.abc import Iterable

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from features.errors import UnknownMarketError

__all__ = [
    "COLUMNS",
    "PRICE_CAP",
    "PRICE_FLOOR",
    "SYNTHETIC_MARKETS",
    "RegimeShift",
    "SyntheticMarketSpec",
    "generate",
    "generate_market",
]

COLUMNS: tuple[str, ...] = (
    "delivery_start",
    "price",
    "load_forecast_mw",
    "load_actual_mw",
    "wind_forecast_mw",
    "solar_forecast_mw",
    "generation_forecast_mw",
    "fuel_price_eur_mwh",
)
PRICE_FLOOR = -500.0  # EUR/MWh, the harmonised day-ahead minimum clearing price
PRICE_CAP = 4000.0  # EUR/MWh, the harmonised day-ahead maximum clearing price (2022 level)

_FloatArray = NDArray[np.float64]
_HOURS_PER_YEAR = 8766.0  # 365.25 days; keeps the seasonal phase from drifting over the years
_EPOCH_2000_US = 946_684_800_000_000  # 2000-01-01T00:00Z in microseconds since 1970
_WIND_FLOOR_CF = 0.005  # exact zeros mean "missing" in Aurum, so wind never drops below 0.5 % of capacity


class RegimeShift(BaseModel):
    """A configurable structural break, for drift monitoring tests.

    From the local delivery day ``start`` on, fuel prices, load and price volatility are scaled;
    everything before is untouched, so a shifted run equals the unshifted one until ``start``.
    """

    model_config = ConfigDict(frozen=True)

    start: dt.date = Field(description="First local delivery day of the new regime.")
    fuel_price_factor: float = Field(3.0, gt=0, description="Fuel price multiplied from `start` on (gas crisis-like).")
    load_factor: float = Field(1.0, gt=0, description="Load forecast and actual multiplied from `start` on.")
    price_volatility_factor: float = Field(
        2.0, ge=0, description="Multiplies the price noise and the spike probability and size from `start` on."
    )


class SyntheticMarketSpec(BaseModel):
    """The physical parameters of one synthetic market."""

    model_config = ConfigDict(frozen=True)

    code: str = Field(description="Market code, as in the market registry.")
    timezone: str = Field(description="IANA zone of local delivery time.")
    latitude_deg: float = Field(ge=-66, le=66, description="Latitude of the solar fleet (sets day length and sun height).")
    longitude_deg: float = Field(ge=-180, le=180, description="Longitude of the solar fleet (sets solar noon).")
    mean_load_mw: float = Field(gt=0, description="Average load over a year, MW.")
    load_winter_amplitude: float = Field(
        ge=0, lt=0.5, description="Relative yearly load swing, highest in mid-January, lowest in mid-July."
    )
    wind_capacity_mw: float = Field(gt=0, description="Installed wind capacity, MW.")
    wind_mean_speed_ms: float = Field(gt=0, description="Fleet-average hub-height wind speed, m/s.")
    solar_capacity_mw: float = Field(gt=0, description="Installed solar capacity, MW.")
    cloudiness: float = Field(description="Mean cloudiness in logit space; higher means dimmer, 0 is middling.")
    thermal_capacity_mw: float = Field(gt=0, description="Dispatchable (thermal) capacity that sets the price, MW.")
    heat_rate_min: float = Field(gt=0, description="Heat-rate factor of the cheapest thermal plant, MWh_th/MWh.")
    heat_rate_slope: float = Field(ge=0, description="Heat-rate factor added across the thermal merit order.")
    scarcity_knee: float = Field(gt=0, lt=1, description="Thermal utilisation above which the merit order turns convex.")
    scarcity_convexity: float = Field(ge=0, description="Heat-rate factor added per squared utilisation above the knee.")
    must_run_share: float = Field(gt=0, lt=1, description="Utilisation below which must-run plants push prices to 0.")
    negative_price_depth: float = Field(gt=0, description="How far below zero prices go when renewables exceed load.")
    spike_probability: float = Field(ge=0, le=1, description="Hourly spike probability when the thermal fleet is full.")
    fuel_basis: float = Field(gt=0, description="Market fuel price relative to the shared gas hub.")
    export_share: float = Field(ge=0, le=1, description="Share of above-normal renewables that is exported.")


SYNTHETIC_MARKETS: dict[str, SyntheticMarketSpec] = {
    spec.code: spec
    for spec in (
        # Germany-like: lots of wind and sun, so negative hours on windy sunny weekends.
        SyntheticMarketSpec(
            code="SYN_NORTH", timezone="Europe/Berlin", latitude_deg=51.0, longitude_deg=10.0,
            mean_load_mw=55_000, load_winter_amplitude=0.10, wind_capacity_mw=55_000, wind_mean_speed_ms=7.2,
            solar_capacity_mw=40_000, cloudiness=0.2, thermal_capacity_mw=72_000, heat_rate_min=1.15,
            heat_rate_slope=1.30, scarcity_knee=0.72, scarcity_convexity=30.0, must_run_share=0.20,
            negative_price_depth=110.0, spike_probability=0.08, fuel_basis=1.00, export_share=0.25,
        ),
        # Spain-like: sunny, a summer cooling bump is absent here on purpose (winter stays higher).
        SyntheticMarketSpec(
            code="SYN_SOUTH", timezone="Europe/Madrid", latitude_deg=40.0, longitude_deg=-3.7,
            mean_load_mw=28_000, load_winter_amplitude=0.06, wind_capacity_mw=22_000, wind_mean_speed_ms=6.6,
            solar_capacity_mw=28_000, cloudiness=-0.8, thermal_capacity_mw=34_000, heat_rate_min=1.20,
            heat_rate_slope=1.20, scarcity_knee=0.75, scarcity_convexity=25.0, must_run_share=0.25,
            negative_price_depth=40.0, spike_probability=0.05, fuel_basis=1.05, export_share=0.15,
        ),
        # Poland-like: coal and gas heavy, little renewables, rarely negative.
        SyntheticMarketSpec(
            code="SYN_EAST", timezone="Europe/Warsaw", latitude_deg=52.0, longitude_deg=19.0,
            mean_load_mw=19_000, load_winter_amplitude=0.12, wind_capacity_mw=7_000, wind_mean_speed_ms=7.0,
            solar_capacity_mw=6_000, cloudiness=0.7, thermal_capacity_mw=26_000, heat_rate_min=1.45,
            heat_rate_slope=1.10, scarcity_knee=0.70, scarcity_convexity=20.0, must_run_share=0.30,
            negative_price_depth=30.0, spike_probability=0.06, fuel_basis=0.95, export_share=0.10,
        ),
    )
}

# Independent random streams per market, in a fixed order. Appending a stream keeps the others
# unchanged; reordering them changes every generated market. Each stream fills exactly one array,
# in time order, which is what makes the output prefix-stable.
_STREAMS = (
    "weather", "load_noise", "load_error", "wind", "cloud", "fuel_basis",
    "price_noise", "price_jitter", "spike_draw", "spike_size", "exports",
)
_HUB_TAG = zlib.crc32(b"GAS_HUB")


def generate_market(
    code: str,
    start: dt.date,
    end: dt.date,
    *,
    seed: int = 0,
    shift: RegimeShift | None = None,
) -> pd.DataFrame:
    """Hourly synthetic day-ahead data of one market for its local delivery days ``[start, end)``.

    Args:
        code: a key of ``SYNTHETIC_MARKETS``.
        start: first local delivery day.
        end: local delivery day after the last one (exclusive).
        seed: non-negative seed; with the other arguments it fixes the output.
        shift: an optional structural break applied from its local ``start`` day on.

    Returns:
        A frame with the columns of ``COLUMNS`` and a default RangeIndex (see the module docstring
        for its invariants).

    Raises:
        UnknownMarketError: ``code`` is not a synthetic market.
        ValueError: ``end`` is not after ``start``, or ``seed`` is negative.
    """
    try:
        spec = SYNTHETIC_MARKETS[code]
    except KeyError:
        raise UnknownMarketError(code, list(SYNTHETIC_MARKETS)) from None
    start, end = _as_day(start, "start"), _as_day(end, "end")
    if end <= start:
        raise ValueError(f"end {end.isoformat()!r} must be after start {start.isoformat()!r} (end is exclusive)")
    if seed < 0:
        raise ValueError(f"seed {seed!r} must be a non-negative integer")

    local = pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq="h", tz=spec.timezone, inclusive="left")
    utc = local.tz_convert("UTC").as_unit("us")
    n = len(local)
    wall = local.tz_localize(None)  # local wall-clock time: people follow the clock, not the sun
    hour = wall.hour.to_numpy() + 0.5  # middle of the period
    weekday = wall.dayofweek.to_numpy()
    day = (wall.to_numpy().astype("datetime64[D]") - np.datetime64(start, "D")).astype(np.int64)
    n_days = (end - start).days
    # Hours since 2000-01-01 UTC (middle of the period) drive the seasons and the sun.
    t_hours = (utc.asi8 - _EPOCH_2000_US) / 3.6e9 + 0.5
    # Seasonal phase: 1 in mid-January (coldest, windiest), -1 in mid-July.
    winter = np.cos(2 * np.pi * (t_hours / _HOURS_PER_YEAR - 15.0 / 365.25))

    rng = {name: np.random.default_rng(s) for name, s in zip(_STREAMS, _market_seeds(seed, code))}

    load_fc = _load_forecast(spec, hour, weekday, winter, day, n_days, rng)
    load_err = 0.025 * _ar1(rng["load_error"].standard_normal(n) * math.sqrt(1 - 0.9**2), 0.9)
    wind = _wind(spec, winter, rng["wind"], n)
    solar = _solar(spec, t_hours, winter, rng["cloud"], n)
    fuel = _fuel(spec, seed, n_days, rng["fuel_basis"])[day]

    # The regime shift scales values per row, after every random draw, so earlier rows stay identical.
    volatility = np.ones(n)
    if shift is not None:
        after = day >= (shift.start - start).days
        fuel = np.where(after, fuel * shift.fuel_price_factor, fuel)
        load_fc = np.where(after, load_fc * shift.load_factor, load_fc)
        volatility = np.where(after, shift.price_volatility_factor, volatility)
    load_act = load_fc * (1.0 + load_err)

    price = _price(spec, load_fc - wind - solar, fuel, volatility, rng, n)
    # Generation = load + net exports: surplus renewables are partly exported, plus slow trade noise.
    typical_renewables = 0.22 * spec.wind_capacity_mw + 0.11 * spec.solar_capacity_mw
    trade = 0.03 * spec.mean_load_mw * _ar1(rng["exports"].standard_normal(n) * math.sqrt(1 - 0.95**2), 0.95)
    exports = spec.export_share * (wind + solar - typical_renewables) + trade
    generation = np.maximum(load_fc + exports, 0.3 * load_fc)  # a zone never imports more than 70 %

    return pd.DataFrame(
        {
            "delivery_start": pd.Series(utc, dtype="datetime64[us, UTC]"),
            "price": price,
            "load_forecast_mw": load_fc,
            "load_actual_mw": load_act,
            "wind_forecast_mw": wind,
            "solar_forecast_mw": solar,
            "generation_forecast_mw": generation,
            "fuel_price_eur_mwh": fuel,
        }
    )


def generate(
    markets: Iterable[str],
    start: dt.date,
    end: dt.date,
    *,
    seed: int = 0,
    shift: RegimeShift | None = None,
) -> dict[str, pd.DataFrame]:
    """``generate_market`` for each market code, keyed by code; markets share the gas hub's fuel walk."""
    return {code: generate_market(code, start, end, seed=seed, shift=shift) for code in markets}


# --- building blocks ---------------------------------------------------------------------------


def _as_day(value: dt.date, name: str) -> dt.date:
    """A plain date; a datetime is accepted only at naive midnight, so no time part is silently dropped."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None or value.time() != dt.time(0):
            raise ValueError(f"{name} {value!r} must be a local day (a date), not a time of day")
        return value.date()
    if not isinstance(value, dt.date):
        raise TypeError(f"{name} {value!r} must be a datetime.date")
    return value


def _market_seeds(seed: int, code: str) -> list[np.random.SeedSequence]:
    """One independent seed per stream of ``_STREAMS``, from the seed and the market code."""
    return np.random.SeedSequence([seed, zlib.crc32(code.encode())]).spawn(len(_STREAMS))


def _ar1(innovations: _FloatArray, phi: float) -> _FloatArray:
    """The AR(1) path x[t] = phi * x[t-1] + e[t], started in its stationary distribution.

    Vectorised in blocks: within a block the path is a scaled cumulative sum, and one carry per
    block links them. The block is short enough that phi**-block stays below ~1e8, which keeps the
    result within ~1e-14 of the sequential recursion. Blocks always start at index 0 and each value
    depends only on earlier innovations, so the path is prefix-stable.
    """
    n = len(innovations)
    if n == 0:
        return innovations.astype(np.float64)
    e = innovations.astype(np.float64)
    e[0] /= math.sqrt(1.0 - phi * phi)  # stationary start: no burn-in transient
    block = max(1, min(n, int(18.0 / -math.log(phi))))
    n_blocks = -(-n // block)
    padded = np.zeros(n_blocks * block)
    padded[:n] = e
    j = np.arange(block)
    x = np.cumsum(padded.reshape(n_blocks, block) * phi**-j, axis=1) * phi**j
    carry = phi ** (j + 1)
    for b in range(1, n_blocks):  # a few dozen iterations for 5 years of hours
        x[b] += carry * x[b - 1, -1]
    return x.ravel()[:n]


def _bump(hour: _FloatArray, centre: float | _FloatArray, width: float) -> _FloatArray:
    """A Gaussian bump on the 24-hour circle."""
    d = (hour - centre + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (d / width) ** 2)


def _load_shape(hour: _FloatArray, weekday: NDArray[np.int64], winter: _FloatArray) -> _FloatArray:
    """Relative load by local clock hour, weekday and season (yearly swing excluded)."""
    weekend = weekday >= 5
    winter01 = (1.0 + winter) / 2.0
    # Morning ramp to a late-morning peak (weaker when people sleep in), a winter-strong evening
    # peak that comes later in summer with the later dusk, and a night trough.
    daily = (
        0.80
        + 0.20 * _bump(hour, 10.5, 3.0) * np.where(weekend, 0.55, 1.0)
        + 0.16 * _bump(hour, 20.0 - 1.5 * winter01, 2.0) * (0.7 + 0.6 * winter01)
        - 0.07 * _bump(hour, 3.5, 2.0)
    )
    weekly = np.array([0.99, 1.0, 1.0, 1.0, 0.98, 0.88, 0.82])[weekday]
    return daily * weekly


@functools.cache
def _load_shape_mean() -> float:
    """Long-run mean of ``_load_shape``: every hour of every weekday across the seasonal cycle."""
    hour, weekday, phase = np.meshgrid(np.arange(24) + 0.5, np.arange(7), np.linspace(0, 2 * np.pi, 48, endpoint=False))
    return float(_load_shape(hour, weekday, np.cos(phase)).mean())


def _load_forecast(
    spec: SyntheticMarketSpec,
    hour: _FloatArray,
    weekday: NDArray[np.int64],
    winter: _FloatArray,
    day: NDArray[np.int64],
    n_days: int,
    rng: dict[str, np.random.Generator],
) -> _FloatArray:
    """Day-ahead load forecast: daily x weekly x yearly shape x weather anomaly x noise."""
    yearly = 1.0 + spec.load_winter_amplitude * winter
    # Temperature anomaly: a persistent daily AR(1) (fronts last days), moving load by ~3 %.
    anomaly = 0.03 * _ar1(rng["weather"].standard_normal(n_days) * math.sqrt(1 - 0.8**2), 0.8)[day]
    noise = 0.01 * rng["load_noise"].standard_normal(len(hour))
    # Dividing by the shape's long-run mean makes mean_load_mw the long-run mean load.
    scale = spec.mean_load_mw / _load_shape_mean()
    return scale * _load_shape(hour, weekday, winter) * yearly * (1.0 + anomaly + noise)


def _wind(spec: SyntheticMarketSpec, winter: _FloatArray, rng: np.random.Generator, n: int) -> _FloatArray:
    """Wind forecast from a persistent weather process through a fleet power curve."""
    # Hourly AR(1) with phi 0.985 decorrelates over ~3 days: weather systems, not hourly noise.
    z = _ar1(rng.standard_normal(n) * math.sqrt(1 - 0.985**2), 0.985)
    # Lognormal speed (right-skewed like a Weibull), ~20 % windier in January than in July.
    sigma = 0.45
    speed = spec.wind_mean_speed_ms * (1.0 + 0.2 * winter) * np.exp(sigma * z - 0.5 * sigma**2)
    # Fleet power curve: cut-in 3 m/s, rated at 13 m/s, cubic in between.
    cut_in, rated = 3.0, 13.0
    cf = (np.clip(speed, cut_in, rated) ** 3 - cut_in**3) / (rated**3 - cut_in**3)
    return spec.wind_capacity_mw * np.clip(cf, _WIND_FLOOR_CF, 1.0)


def _solar(
    spec: SyntheticMarketSpec, t_hours: _FloatArray, winter: _FloatArray, rng: np.random.Generator, n: int
) -> _FloatArray:
    """Solar forecast from the sun's elevation at the market's site, dimmed by cloudiness."""
    day_of_year = (t_hours / 24.0) % 365.25
    declination = np.deg2rad(23.44) * np.sin(2 * np.pi * (day_of_year + 284.0) / 365.25)
    solar_time = (t_hours + spec.longitude_deg / 15.0) % 24.0  # UTC shifted to local sun time
    hour_angle = np.deg2rad(15.0 * (solar_time - 12.0))
    lat = math.radians(spec.latitude_deg)
    sin_elevation = math.sin(lat) * np.sin(declination) + math.cos(lat) * np.cos(declination) * np.cos(hour_angle)
    # Cloudiness: persistent over about a day, more overcast in winter; clear-sky index in [0.15, 1].
    z = _ar1(rng.standard_normal(n) * math.sqrt(1 - 0.96**2), 0.96)
    cloud = 1.0 / (1.0 + np.exp(-(1.3 * z + spec.cloudiness + 0.8 * winter)))
    clear_index = 1.0 - 0.85 * cloud
    # Exponent > 1: low sun loses more to air mass; 0.8 is the fleet's performance ratio.
    return spec.solar_capacity_mw * 0.8 * np.maximum(sin_elevation, 0.0) ** 1.2 * clear_index


def _fuel(spec: SyntheticMarketSpec, seed: int, n_days: int, rng: np.random.Generator) -> _FloatArray:
    """Daily fuel price: a shared mean-reverting gas hub walk times a small market basis."""
    # The hub stream depends on the seed only, so all markets see the same gas price moves.
    hub_rng = np.random.default_rng(np.random.SeedSequence([seed, _HUB_TAG]))
    # Log-price OU with ~50-day mean reversion; stationary spread ~ +/-15 % around 32 EUR/MWh_th.
    log_hub = math.log(32.0) + 0.15 * _ar1(hub_rng.standard_normal(n_days) * math.sqrt(1 - 0.98**2), 0.98)
    basis = spec.fuel_basis * (1.0 + 0.02 * _ar1(rng.standard_normal(n_days) * math.sqrt(1 - 0.9**2), 0.9))
    return np.exp(log_hub) * basis


def _price(
    spec: SyntheticMarketSpec,
    residual: _FloatArray,
    fuel: _FloatArray,
    volatility: _FloatArray,
    rng: dict[str, np.random.Generator],
    n: int,
) -> _FloatArray:
    """Day-ahead price from the merit order of the residual load over the thermal fleet."""
    u = residual / spec.thermal_capacity_mw  # thermal utilisation; > 1 means shortage
    heat_rate = (
        spec.heat_rate_min
        + spec.heat_rate_slope * u
        + spec.scarcity_convexity * np.maximum(u - spec.scarcity_knee, 0.0) ** 2
    )
    thermal = fuel * heat_rate
    # Below the must-run band inflexible plants bid down to zero; below zero residual load
    # renewables bid negative (subsidies), saturating at negative_price_depth.
    at_must_run = fuel * (spec.heat_rate_min + spec.heat_rate_slope * spec.must_run_share)
    slope = at_must_run / spec.must_run_share
    low = np.where(
        u >= 0.0,
        slope * u,
        -spec.negative_price_depth * np.tanh(-u * slope / spec.negative_price_depth),
    )
    core = np.where(u >= spec.must_run_share, thermal, low)

    # Noise: autocorrelated relative noise (bidding behaviour) plus a small absolute part.
    relative = _ar1(rng["price_noise"].standard_normal(n) * math.sqrt(1 - 0.7**2), 0.7)
    absolute = rng["price_jitter"].standard_normal(n)
    price = core * (1.0 + 0.07 * volatility * relative) + 2.0 * volatility * absolute

    # Spikes: only when the thermal fleet is nearly full, rarer the more slack there is.
    tightness = np.clip((u - spec.scarcity_knee) / (1.0 - spec.scarcity_knee), 0.0, 1.0)
    draw = rng["spike_draw"].random(n)
    size = rng["spike_size"].exponential(1.5, n)
    spike = draw < spec.spike_probability * volatility * tightness**2
    price = np.where(spike, np.abs(price) * (1.0 + volatility * (1.5 + size)), price)
    return np.clip(price, PRICE_FLOOR, PRICE_CAP)
