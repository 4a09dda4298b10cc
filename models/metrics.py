"""Forecast accuracy metrics of the EPF literature, and the Diebold–Mariano test.

Conventions follow epftoolbox (Lago et al. 2021): sMAPE in percent with the mean of |actual| and
|forecast| in the denominator; rMAE divides by the MAE of the weekly naive forecast over the same
hours; the DM test compares per-day losses (multivariate: the mean of |error|^norm over the day's 24
hours, i.e. the norm of the day's error vector) or per-hour losses (univariate, one test per hour).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd


def _arrays(*xs) -> list[np.ndarray]:
    out = [np.asarray(x, dtype=float) for x in xs]
    if len({a.shape for a in out}) != 1:
        raise ValueError(f"inputs have different shapes {[a.shape for a in out]}")
    return out


def mae(actual, forecast) -> float:
    a, f = _arrays(actual, forecast)
    return float(np.nanmean(np.abs(a - f)))


def rmse(actual, forecast) -> float:
    a, f = _arrays(actual, forecast)
    return float(np.sqrt(np.nanmean((a - f) ** 2)))


def smape(actual, forecast) -> float:
    """Symmetric MAPE in percent: mean of |a - f| / ((|a| + |f|) / 2) * 100 (0/0 counts as 0)."""
    a, f = _arrays(actual, forecast)
    den = (np.abs(a) + np.abs(f)) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, np.abs(a - f) / den, 0.0)
    return float(np.nanmean(r) * 100)


def rmae(actual, forecast, naive) -> float:
    """MAE of ``forecast`` divided by the MAE of ``naive`` (the weekly naive forecast) on the same hours."""
    a, f, n = _arrays(actual, forecast, naive)
    ok = ~(np.isnan(a) | np.isnan(f) | np.isnan(n))
    return mae(a[ok], f[ok]) / mae(a[ok], n[ok])


def pinball(actual, forecast, q: float) -> float:
    """Mean pinball (quantile) loss of quantile forecast ``forecast`` at level ``q``."""
    a, f = _arrays(actual, forecast)
    d = a - f
    return float(np.nanmean(np.maximum(q * d, (q - 1) * d)))


def coverage(actual, lower, upper) -> float:
    """Share of hours with ``lower <= actual <= upper``."""
    a, lo, hi = _arrays(actual, lower, upper)
    ok = ~(np.isnan(a) | np.isnan(lo) | np.isnan(hi))
    return float(np.mean((a[ok] >= lo[ok]) & (a[ok] <= hi[ok])))


def quantile_level(column: str) -> float:
    """The level of a quantile column name: ``q10`` -> 0.1."""
    return float(column[1:]) / 100


def score(actual: pd.Series, forecast: pd.DataFrame, *, naive: pd.Series | None = None,
          hour: pd.Series | None = None, point: str = "q50") -> pd.DataFrame:
    """Tidy metrics of a quantile forecast: columns ``hour`` ("all" or the local hour), ``metric``, ``value``.

    Metrics: mae, rmse, smape, rmae (when ``naive`` is given), pinball_qNN for every quantile column,
    coverage_X for each symmetric pair of quantile columns (X = the nominal coverage, e.g. 0.8 for
    q10/q90). All inputs share one row order.
    """
    a = np.asarray(actual, dtype=float)
    qcols = sorted((c for c in forecast.columns if c.startswith("q")), key=quantile_level)
    groups: list[tuple[object, np.ndarray]] = [("all", np.ones(len(a), bool))]
    if hour is not None:
        h = np.asarray(hour)
        groups += [(int(v), h == v) for v in np.unique(h)]
    rows = []
    for key, m in groups:
        f = forecast[point].to_numpy()[m]
        values: dict[str, float] = {"mae": mae(a[m], f), "rmse": rmse(a[m], f), "smape": smape(a[m], f)}
        if naive is not None:
            values["rmae"] = rmae(a[m], f, np.asarray(naive, dtype=float)[m])
        for c in qcols:
            values[f"pinball_{c}"] = pinball(a[m], forecast[c].to_numpy()[m], quantile_level(c))
        for c in qcols:
            lo_q = quantile_level(c)
            if lo_q >= 0.5:
                continue
            twin = next((d for d in qcols if np.isclose(quantile_level(d), 1 - lo_q)), None)
            if twin is not None:
                values[f"coverage_{round(1 - 2 * lo_q, 6):g}"] = coverage(a[m], forecast[c].to_numpy()[m],
                                                                         forecast[twin].to_numpy()[m])
        rows += [{"hour": key, "metric": k, "value": v} for k, v in values.items()]
    return pd.DataFrame(rows)


def diebold_mariano(actual, forecast_a, forecast_b, *, norm: int = 1, version: str = "multivariate"):
    """One-sided DM test of H1: forecast A is more accurate than forecast B.

    Inputs are (n_days, 24) arrays (or flat arrays of whole days, reshaped). ``multivariate``: the
    loss of a day is the mean of |error|^norm over its 24 hours; returns one p-value. ``univariate``:
    one test per hour; returns an array of 24 p-values. A small p-value means A is significantly better.
    The statistic uses the plain sample variance of the loss differential (as epftoolbox: day-ahead
    errors of consecutive days are treated as uncorrelated).
    """
    from scipy import stats

    a, fa, fb = (np.asarray(x, dtype=float).reshape(-1, 24) for x in (actual, forecast_a, forecast_b))
    la, lb = np.abs(a - fa) ** norm, np.abs(a - fb) ** norm
    if version == "multivariate":
        d = lb.mean(axis=1) - la.mean(axis=1)
    elif version == "univariate":
        d = lb - la
    else:
        raise ValueError(f"version {version!r} must be 'multivariate' or 'univariate'")
    n = d.shape[0]
    stat = d.mean(axis=0) / np.sqrt(d.var(axis=0) / n)
    p = 1 - stats.norm.cdf(stat)
    return float(p) if version == "multivariate" else np.asarray(p)


def dm_matrix(actual, forecasts: Mapping[str, object], *, norm: int = 1) -> pd.DataFrame:
    """Multivariate DM p-values for every ordered pair: cell (A, B) is the p-value that A beats B."""
    names = list(forecasts)
    out = pd.DataFrame(np.nan, index=names, columns=names)
    for x in names:
        for y in names:
            if x != y:
                out.loc[x, y] = diebold_mariano(actual, forecasts[x], forecasts[y], norm=norm)
    return out
