"""Drift of a monitoring window against a reference: like seasons with like seasons, in calibrated units.

Hourly market data is seasonal (solar in June is not solar in December), persistent (a windy week,
a fuel price that stays high for a month) and plentiful (thousands of rows a week), so the usual
tests mislead: a p-value test at these sample sizes flags every week, and a distance against the
whole reference flags every summer. The method here:

1. **Like seasons, like hours.** A window is compared with the reference days that lie within
   ``season_half_width_days`` of its own days in the calendar year (real calendar days, around the
   year end too), of every reference year. Both sides hold whole local days, so the hours of the day
   (and the days of the week) are matched too. A reference that does not cover the window's season
   (a champion trained on half a year) gives its nearest days instead, and the gap is reported
   (``season_gap_days``).
2. **One distance for every feature, in reference units.** Numerical columns: the Wasserstein
   (earth mover's) distance between the window's values and the matched reference values, divided
   by the standard deviation of the *whole* reference (a matched season's own spread would make a
   slowly moving feature such as the fuel price look drifted whenever its level differs from one
   year to the next). Categorical columns: the total variation distance of the category shares.
3. **Thresholds calibrated on the reference itself.** Every reference week is scored the same way
   against the reference days of its season (within ``season_half_width_days + 2 x
   calibration_guard_days`` calendar days), leaving out those within ``calibration_guard_days`` of
   it in time: weather persists for days and fuel prices for weeks, so near days would hide the
   variation a window one year later shows. A feature's threshold is the largest such score times
   ``threshold_margin``. A market that behaves as in the reference stays below it, and a week
   unlike anything the reference showed goes above.
4. **Large samples.** Windows and matched references above ``max_rows`` rows are sampled,
   stratified by local hour (proportional allocation, seeded), before distances are computed;
   scales are always computed on every row.

``drift_share`` is the share of monitored features whose score reaches their threshold and
``max_drift_ratio`` the largest score over its threshold; the champion's median forecast (column
``prediction``) is scored the same way but kept apart (``prediction_drift_*``). Invariants: scores
are non-negative; identical samples score 0; a window never contributes to its own threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.errors import MonitoringDataError
from features.settings import MonitoringSettings

PREDICTION = "prediction"  # the champion's median forecast (q50)
DAY = "day"  # local delivery day of a row, naive midnight
NUMERICAL, CATEGORICAL = "numerical", "categorical"


# ---------------------------------------------------------------- distances


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """First Wasserstein distance between two samples (NaN values dropped; NaN if a side is empty).

    The area between the two empirical distribution functions, computed as SciPy's
    ``wasserstein_distance`` does, so Evidently's report (which calls this function) and the
    engine agree to the last bit.
    """
    a = np.sort(np.asarray(a, dtype=float)[~np.isnan(np.asarray(a, dtype=float))])
    b = np.sort(np.asarray(b, dtype=float)[~np.isnan(np.asarray(b, dtype=float))])
    if not len(a) or not len(b):
        return math.nan
    values = np.concatenate([a, b])
    values.sort(kind="mergesort")
    deltas = np.diff(values)
    cdf_a = np.searchsorted(a, values[:-1], side="right") / len(a)
    cdf_b = np.searchsorted(b, values[:-1], side="right") / len(b)
    return float(np.sum(np.abs(cdf_a - cdf_b) * deltas))


def total_variation(a: np.ndarray, b: np.ndarray) -> float:
    """Total variation distance of the category shares of two samples (missing values dropped; in [0, 1])."""
    sa, sb = pd.Series(a).dropna(), pd.Series(b).dropna()
    if sa.empty or sb.empty:
        return math.nan
    pa, pb = sa.value_counts(normalize=True), sb.value_counts(normalize=True)
    shares = pd.concat([pa, pb], axis=1).fillna(0.0).to_numpy()
    return float(0.5 * np.abs(shares[:, 0] - shares[:, 1]).sum())


def score(role: str, reference: np.ndarray, current: np.ndarray, scale: float) -> float:
    """The drift score of one column: its distance in reference units (see the module docstring)."""
    if role == CATEGORICAL:
        return total_variation(reference, current)
    return wasserstein(reference, current) / scale


def scale_of(values: np.ndarray) -> float:
    """The unit of a numerical column's scores: the reference's standard deviation (1 when constant or empty)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    sd = float(np.std(v)) if len(v) else 0.0
    return sd if sd > 0 else 1.0


# ---------------------------------------------------------------- calendar and sampling


def anniversaries(days: np.ndarray, years: range) -> np.ndarray:
    """Sorted day numbers of the same month and day as ``days`` (day numbers) in each of ``years``
    (29 February falls on the 28th in other years)."""
    dates = pd.to_datetime(np.asarray(days), unit="D")
    month, day = dates.month.to_numpy(), dates.day.to_numpy()
    out = []
    for y in years:
        leap = (y % 4 == 0 and y % 100 != 0) or y % 400 == 0
        d = np.where((month == 2) & (day == 29) & (not leap), 28, day)
        out.append(pd.to_datetime(pd.DataFrame({"year": y, "month": month, "day": d})))
    return np.unique(day_numbers(pd.concat([pd.Series(o) for o in out]).to_numpy()))


def nearest_distance(targets: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Days from each of ``values`` to the nearest of ``targets`` (sorted day numbers)."""
    i = np.clip(np.searchsorted(targets, values), 1, len(targets) - 1)
    return np.minimum(np.abs(values - targets[i - 1]), np.abs(values - targets[i]))


def calendar_distance(days: np.ndarray, window_days: np.ndarray) -> np.ndarray:
    """Days in the calendar year from each of ``days`` to the nearest of ``window_days``, in any year:
    2022-06-20 is 10 days from a window day 2023-06-10 (real calendar days, around the year end too)."""
    years = pd.to_datetime(np.concatenate([days, window_days]), unit="D").year
    marks = anniversaries(window_days, range(int(years.min()) - 1, int(years.max()) + 2))
    return nearest_distance(marks, np.asarray(days))


def sample_positions(frame: pd.DataFrame, cap: int, seed: int = 0) -> np.ndarray | None:
    """Row positions of a stratified sample of at most ``cap`` rows, in row order; None when all rows fit.

    Strata are local hours (``delivery_start``) or else local days (``day``). Systematic sampling over
    rows ordered by stratum and, inside one, at random: every stratum keeps its share to within one
    row. Deterministic for a seed.
    """
    if len(frame) <= cap:
        return None
    if "delivery_start" in frame.columns:
        ds = pd.to_datetime(frame["delivery_start"], utc=True)
        strata = ((ds - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(hours=1)).to_numpy()
    else:
        strata = day_numbers(frame[DAY])
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(frame)), strata))
    step = len(frame) / cap
    return np.sort(order[(np.arange(cap) * step + rng.random() * step).astype(np.int64)])


def stratified_sample(frame: pd.DataFrame, cap: int, seed: int = 0) -> pd.DataFrame:
    """At most ``cap`` rows of ``frame``, each local hour (or day) keeping its share (see :func:`sample_positions`)."""
    positions = sample_positions(frame, cap, seed)
    return frame if positions is None else frame.iloc[positions]


def season_match(reference_days: np.ndarray, window_days: np.ndarray, half_width: float,
                 min_days: int) -> tuple[np.ndarray, float]:
    """Which reference days share the window's season, and how far the reference is from covering it.

    Both arguments are day numbers (:func:`day_numbers`). Returns a boolean mask over
    ``reference_days`` (days within ``half_width`` calendar days of any window day, in any year) and
    ``gap``: the largest distance in the calendar from a window day to its nearest reference day (0
    when every window day's date is in the reference, in some year). With fewer than ``min_days``
    matches, the ``min_days`` nearest reference days are taken instead.
    """
    nearest = calendar_distance(reference_days, window_days)
    gap = float(calendar_distance(window_days, reference_days).max())
    mask = nearest <= half_width
    if mask.sum() < min(min_days, len(reference_days)):
        mask = np.zeros(len(reference_days), dtype=bool)
        mask[np.argsort(nearest, kind="stable")[:min_days]] = True
    return mask, gap


# ---------------------------------------------------------------- reference statistics


@dataclass
class ReferenceStatistics:
    """What drift checks need of a reference: rows by local day, column roles, scales and thresholds.

    ``frame`` holds ``day`` and every column of ``roles`` (sampled to ``reference_max_rows``, scales
    computed before that); ``roles`` maps each monitored column, and ``prediction`` when present, to
    ``numerical`` or ``categorical``. ``thresholds`` come from :func:`calibrate`.
    """

    frame: pd.DataFrame
    roles: dict[str, str]
    scales: dict[str, float]
    thresholds: dict[str, float]
    calibration: dict[str, object]
    rows: int

    @classmethod
    def build(cls, frame: pd.DataFrame, roles: dict[str, str], settings: MonitoringSettings) -> ReferenceStatistics:
        """Scales on every row, the frame sampled to ``reference_max_rows``, thresholds calibrated on it.

        Raises:
            MonitoringDataError: a role names a column the frame lacks, or the reference has fewer than
                ``min_calibration_weeks`` weeks to calibrate on.
        """
        missing = [c for c in roles if c not in frame.columns]
        if missing or DAY not in frame.columns:
            raise MonitoringDataError(f"reference frame lacks columns {missing or [DAY]}; it has {list(frame.columns)}")
        scales = {c: (scale_of(frame[c].to_numpy()) if role == NUMERICAL else 1.0) for c, role in roles.items()}
        kept = [c for c in ("delivery_start", DAY, *roles) if c in frame.columns]
        positions = sample_positions(frame, settings.reference_max_rows)  # copy only the rows kept
        sample = (frame[kept] if positions is None else frame.iloc[positions][kept]).reset_index(drop=True)
        thresholds, calibration = calibrate(sample, roles, scales, settings)
        return cls(sample, dict(roles), scales, thresholds, calibration, len(frame))

    @property
    def features(self) -> list[str]:
        return [c for c in self.roles if c != PREDICTION]

    def matched(self, window_days: np.ndarray, settings: MonitoringSettings) -> tuple[pd.DataFrame, float]:
        """The reference rows of the window's season (``window_days``: day numbers) and the season gap."""
        numbers = day_numbers(self.frame[DAY])
        days = np.unique(numbers)
        mask, gap = season_match(days, window_days, settings.season_half_width_days,
                                 2 * settings.season_half_width_days + len(window_days))
        return self.frame[np.isin(numbers, days[mask])], gap


def day_numbers(days) -> np.ndarray:
    """Local days (naive midnights or dates) as integer day numbers since 1970-01-01."""
    return np.asarray(days).astype("datetime64[D]").astype(np.int64)


def _weeks(days: np.ndarray) -> list[np.ndarray]:
    """Consecutive 7-day blocks of day numbers from the first; blocks with fewer than 4 days are left out."""
    block = (days - days.min()) // 7
    return [days[block == b] for b in np.unique(block) if (block == b).sum() >= 4]


def calibrate(frame: pd.DataFrame, roles: dict[str, str], scales: dict[str, float],
              settings: MonitoringSettings) -> tuple[dict[str, float], dict[str, object]]:
    """Per-column thresholds from the reference's own week-to-season variation.

    Each reference week is scored against the reference days within ``half_width + 2 * guard``
    calendar days of it that are more than ``guard`` days away from it in time (the band is widened
    so that about as many days remain as a window is matched with). A column's threshold is
    ``threshold_margin`` times its largest week score, and at least ``min_threshold``. Either side of a
    comparison above ``calibration_max_rows`` rows is sampled uniformly (seeded) to that size.

    Raises:
        MonitoringDataError: fewer than ``min_calibration_weeks`` weeks could be scored.
    """
    numbers = day_numbers(frame[DAY])
    rows_of = pd.Series(np.arange(len(frame))).groupby(numbers).indices
    days = np.unique(numbers)
    band = settings.season_half_width_days + 2 * settings.calibration_guard_days
    guard = settings.calibration_guard_days
    columns = list(roles)
    values = {c: frame[c].to_numpy() for c in columns}
    scores: dict[str, list[float]] = {c: [] for c in columns}
    rng = np.random.default_rng(0)
    cap = settings.calibration_max_rows

    def capped(idx: np.ndarray) -> np.ndarray:  # a uniform sample of a large side: its distances barely move
        return np.sort(rng.choice(idx, cap, replace=False)) if len(idx) > cap else idx

    for week in _weeks(days):
        in_season = calendar_distance(days, week) <= band
        far = np.abs(days[:, None] - week[None, :]).min(axis=1) > guard
        others = days[in_season & far]
        if len(others) < 7:
            continue
        w_idx = capped(np.concatenate([rows_of[d] for d in week]))
        o_idx = capped(np.concatenate([rows_of[d] for d in others]))
        for c in columns:
            s = score(roles[c], values[c][o_idx], values[c][w_idx], scales[c])
            if not math.isnan(s):
                scores[c].append(s)
    weeks = max((len(v) for v in scores.values()), default=0)
    if weeks < settings.min_calibration_weeks:
        span = (f"{len(days)} days from {_day(days.min())} to {_day(days.max())}" if len(days) else "no days")
        raise MonitoringDataError(
            f"the reference has {weeks} weeks that can be scored against their season ({span}); at least "
            f"{settings.min_calibration_weeks} are needed to calibrate drift thresholds (train on a longer window)")
    thresholds = {c: max(settings.min_threshold, settings.threshold_margin * max(v)) if v else math.inf
                  for c, v in scores.items()}
    summary = {
        "method": "season-matched Wasserstein distance / reference std (numerical), total variation (categorical)",
        "weeks": weeks, "season_half_width_days": settings.season_half_width_days,
        "calibration_band_days": band, "calibration_guard_days": guard,
        "threshold_margin": settings.threshold_margin, "min_threshold": settings.min_threshold,
        "min_calibration_weeks": settings.min_calibration_weeks, "calibration_max_rows": cap,
        "week_score_max": {c: (max(v) if v else None) for c, v in scores.items()},
        "week_score_p90": {c: (float(np.quantile(v, 0.9)) if v else None) for c, v in scores.items()},
    }
    return thresholds, summary


def _day(number: int) -> str:
    return str(np.datetime64(int(number), "D"))


# ---------------------------------------------------------------- assessment


@dataclass
class ColumnDrift:
    """One column's score against its threshold; ``score`` is NaN when a side had no values."""

    column: str
    role: str
    score: float
    threshold: float
    scale: float

    @property
    def drifted(self) -> bool:
        return not math.isnan(self.score) and self.score >= self.threshold

    @property
    def ratio(self) -> float:
        return self.score / self.threshold if self.threshold > 0 else math.inf


@dataclass
class DriftAssessment:
    """The drift of one window: per-column scores, the drift share, prediction drift, data completeness.

    ``current`` and ``reference`` are the (sampled) rows the scores were computed on, which the
    Evidently report is run on too.
    """

    columns: list[ColumnDrift]
    prediction: ColumnDrift | None
    window_rows: int
    window_days: int
    reference_days: int
    season_gap_days: float
    missing_share: float
    data_lag_hours: float
    current: pd.DataFrame = field(repr=False)
    reference: pd.DataFrame = field(repr=False)

    @property
    def tested(self) -> list[ColumnDrift]:
        return [c for c in self.columns if not math.isnan(c.score)]

    @property
    def drifted(self) -> list[ColumnDrift]:
        return [c for c in self.columns if c.drifted]

    @property
    def drift_share(self) -> float:
        return len(self.drifted) / len(self.tested) if self.tested else math.nan

    def metrics(self) -> dict[str, float]:
        """Every number of the assessment by metric name (what rules, the table and MLflow receive)."""
        ratios = [c.ratio for c in self.tested]
        out = {"drift_share": self.drift_share, "max_drift_ratio": max(ratios) if ratios else math.nan,
               "drifted_features": float(len(self.drifted)),
               "tested_features": float(len(self.tested)), "missing_share": self.missing_share,
               "data_lag_hours": self.data_lag_hours, "season_gap_days": self.season_gap_days,
               "window_rows": float(self.window_rows), "reference_days": float(self.reference_days)}
        if self.prediction is not None:
            out |= {"prediction_drift_score": self.prediction.score,
                    "prediction_drift_threshold": self.prediction.threshold,
                    "prediction_drift": self.prediction.ratio}
        out |= {f"drift.{c.column}": c.score for c in self.columns}
        return out


def assess(stats: ReferenceStatistics, window: pd.DataFrame, settings: MonitoringSettings, *,
           window_end: pd.Timestamp | None = None) -> DriftAssessment:
    """Score a window's rows (``day``, the monitored columns, optionally ``delivery_start``) against the reference.

    ``missing_share`` is the share of missing values among the monitored features of every row of the
    window; ``data_lag_hours`` the hours from the last delivery hour with any feature known to
    ``window_end`` (0 without ``window_end``).

    Raises:
        MonitoringDataError: no row of the window has any monitored feature.
    """
    features = stats.features
    known, missing = np.zeros(len(window), dtype=bool), 0
    for c in features:  # column by column: no copy of a large window
        present = window[c].notna().to_numpy()
        known |= present
        missing += len(present) - int(present.sum())
    if not known.any():
        raise MonitoringDataError(f"the window has {len(window)} rows but no monitored feature is known in any of them")
    missing_share = missing / (len(window) * len(features))
    lag = 0.0
    if window_end is not None and "delivery_start" in window.columns:
        last = pd.to_datetime(window["delivery_start"], utc=True)[known].max() + pd.Timedelta(hours=1)
        lag = max(0.0, (pd.Timestamp(window_end) - last) / pd.Timedelta(hours=1))
    rows = window if known.all() else window[known]
    days = np.unique(day_numbers(rows[DAY]))
    matched, gap = stats.matched(days, settings)
    current = stratified_sample(rows, settings.max_rows, seed=1)
    reference = stratified_sample(matched, settings.max_rows, seed=2)
    results = []
    for c, role in stats.roles.items():
        if c not in current.columns:
            continue
        s = score(role, reference[c].to_numpy(), current[c].to_numpy(), stats.scales[c])
        results.append(ColumnDrift(c, role, s, stats.thresholds[c], stats.scales[c]))
    prediction = next((r for r in results if r.column == PREDICTION), None)
    return DriftAssessment([r for r in results if r.column != PREDICTION], prediction, len(rows), len(days),
                           len(np.unique(day_numbers(matched[DAY]))), gap, missing_share, lag, current, reference)
