"""Rolling-origin backtests that mimic operations.

The test period is walked day by day. Day D is forecast with a model fitted at the issue time of
the first day of its refit block (gate closure on that day's D-1): the model learns only from rows
whose delivery day came before the block and whose target was public at that issue time, and it
forecasts D from D's own features, which the feature service returns as known at D's issue time.
Refitting every ``refit_days`` days (1 = daily, as operations would) bounds the cost.

Conformal models are calibrated as they would be in operations (rolling calibration, see
:mod:`models.conformal`): the backtest keeps the base model's uncorrected interval ends of every day
it forecast, and each refit takes its corrections from the last ``calibration_days`` of those whose
actual price was public at the refit's issue time. The first refit has no such past: it calibrates
on held-out days (a second fit), whose forecasts seed the record.

A model that recalibrates (``Forecaster.recalibrates``, e.g. LEAR with ``recalibrate=True``)
forecasts the days of a block one by one: before each day after the first it is recalibrated on the
rows known at that day's issue time, keeping what the block's fit chose.

Every forecast row records when it was issued, when its model was fitted and (if so) recalibrated,
so a reader can check that nothing was used before it was known (``tests/training/test_backtest.py``
does).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.errors import TrainingDataError
from models.conformal import ConformalForecaster
from models.dayblock import DayBlocks
from models.forecaster import DEFAULT_QUANTILES, Forecaster, quantile_column
from models.metrics import diebold_mariano, score
from models.naive import weekly_lag
from training.dataset import ISSUED_AT, TARGET, TARGET_KNOWN_AT, TrainingData, known_targets

NAIVE = "price_lag_P7D"


@dataclass(frozen=True)
class BacktestWindow:
    """The local delivery days ``[start, end)`` to forecast, the refit cadence and the training window."""

    start: dt.date
    end: dt.date
    refit_days: int = 7
    train_days: int | None = None  # None: all history before each refit; else the last N days

    def __post_init__(self):
        if self.end <= self.start:
            raise TrainingDataError(f"backtest window [{self.start}, {self.end}) is empty; expected end after start")
        if self.refit_days < 1:
            raise TrainingDataError(f"refit_days {self.refit_days!r} must be at least 1")
        if self.train_days is not None and self.train_days < 7:
            raise TrainingDataError(f"train_days {self.train_days!r} must be at least 7 (one week)")


@dataclass
class Backtest:
    """Forecasts of every hour of the window, and their scores."""

    name: str
    window: BacktestWindow
    forecasts: pd.DataFrame  # market, delivery_start, day, hour, issued_at, fitted_at, recalibrated_at, train_rows, ..., q.., missing_inputs
    quantiles: tuple[float, ...]
    fits: int = 0
    seconds: float = 0.0
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def quantile_columns(self) -> list[str]:
        return [quantile_column(q) for q in self.quantiles]

    def overall(self) -> dict[str, float]:
        m = self.metrics
        return dict(zip(m.loc[m["hour"] == "all", "metric"], m.loc[m["hour"] == "all", "value"]))

    def by_hour(self, metric: str = "mae") -> pd.Series:
        m = self.metrics
        m = m[(m["hour"] != "all") & (m["metric"] == metric)]
        return pd.Series(m["value"].to_numpy(), index=m["hour"].astype(int).to_numpy(), name=metric)


def model_inputs(frame: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """The columns a forecaster takes: keys, features and the feature store's missing count."""
    return frame[["market", "delivery_start", *features, "missing_features"]]


def run(data: TrainingData, make_model: Callable[[], Forecaster], window: BacktestWindow, *,
        name: str = "model", quantiles: tuple[float, ...] = DEFAULT_QUANTILES,
        progress: Callable[[int, int], None] | None = None) -> Backtest:
    """Forecast every day of ``window`` as operations would have; see the module docstring.

    Raises:
        TrainingDataError: the window lies outside the data, or a refit has no known targets.
    """
    t0 = time.perf_counter()
    frame = data.frame
    days = data.days
    test_days = sorted(d for d in days.unique() if window.start <= d.date() < window.end)
    if not test_days:
        raise TrainingDataError(
            f"backtest window [{window.start}, {window.end}) has no day in the data of market "
            f"{data.market.code!r}, which spans {data.first_day()} to {data.last_day()}")
    out, fits = [], 0
    issued_forecasts: pd.DataFrame | None = None  # a conformal model's base interval ends, by row label
    for b in range(0, len(test_days), window.refit_days):
        block = test_days[b:b + window.refit_days]
        issued, train = _training_rows(data, block[0], window)
        rows = frame[train]
        model = make_model()
        if isinstance(model, ConformalForecaster):
            past = scored_before(data, issued_forecasts, issued)
            if past["day"].nunique() >= model.calibration_days:
                model.fit_on_past(model_inputs(rows, data.features), rows[TARGET], past)
            else:  # nothing (or too little) forecast yet: held-out calibration, which seeds the record
                model.fit(model_inputs(rows, data.features), rows[TARGET])
                seed = model.held_out_.drop(columns=["day", "actual"])
                issued_forecasts = seed if issued_forecasts is None else pd.concat(
                    [seed[~seed.index.isin(issued_forecasts.index)], issued_forecasts])
        else:
            model.fit(model_inputs(rows, data.features), rows[TARGET])
        fits += 1
        recalibrated_at = pd.NaT
        # a model that recalibrates forecasts day by day, recalibrated on what each day's issue time knew
        for group in ([[d] for d in block] if model.recalibrates else [block]):
            if group[0] != block[0]:
                recalibrated_at, known = _training_rows(data, group[0], window)
                rows = frame[known]
                model.recalibrate(model_inputs(rows, data.features), rows[TARGET])
            test = frame[days.isin(group).to_numpy()]
            pred = model.predict(model_inputs(test, data.features), quantiles)
            if isinstance(model, ConformalForecaster):
                base = model.base_forecast(model_inputs(test, data.features))
                issued_forecasts = pd.concat([issued_forecasts, base]) if issued_forecasts is not None else base
            part = pd.DataFrame({
                "market": data.market.code, "delivery_start": test["delivery_start"].to_numpy(),
                "day": days[test.index].dt.date.to_numpy(), "hour": test["hour"].to_numpy() if "hour" in test else np.nan,
                "issued_at": test[ISSUED_AT].to_numpy(), "fitted_at": issued,
                "recalibrated_at": pd.array([recalibrated_at] * len(test), dtype="datetime64[ns, UTC]"),
                "train_rows": len(rows), "train_last_target_known_at": pd.to_datetime(rows[TARGET_KNOWN_AT], utc=True).max(),
                "actual": test[TARGET].to_numpy(),
                "naive": weekly_lag(test) if NAIVE in test else np.nan,  # the rMAE denominator
            })
            for c in pred.columns:
                part[c] = pred[c].to_numpy()
            out.append(part)
        if progress:
            progress(min(b + window.refit_days, len(test_days)), len(test_days))
    forecasts = pd.concat(out, ignore_index=True)
    bt = Backtest(name, window, forecasts, tuple(sorted(quantiles)), fits, time.perf_counter() - t0)
    bt.metrics = scores(bt)
    return bt


def frozen(data: TrainingData, predict: Callable[[pd.DataFrame, tuple[float, ...]], pd.DataFrame],
           window: BacktestWindow, *, name: str = "served", quantiles: tuple[float, ...] = DEFAULT_QUANTILES
           ) -> Backtest:
    """Forecasts of every day of ``window`` by a model that is never refitted: a served version as it is.

    ``predict(features, quantiles)`` takes the rows of :func:`model_inputs` (each day's features as
    known at its own issue time, the rows :func:`run` forecasts from) and returns the quantile columns.
    ``fitted_at`` and the training columns stay empty: the model was fitted before, elsewhere.

    Raises:
        TrainingDataError: the window has no day in the data.
    """
    t0 = time.perf_counter()
    frame, days = data.frame, data.days
    test = frame[((days >= pd.Timestamp(window.start)) & (days < pd.Timestamp(window.end))).to_numpy()]
    if test.empty:
        raise TrainingDataError(
            f"backtest window [{window.start}, {window.end}) has no day in the data of market "
            f"{data.market.code!r}, which spans {data.first_day()} to {data.last_day()}")
    pred = predict(model_inputs(test, data.features), tuple(sorted(quantiles)))
    forecasts = pd.DataFrame({
        "market": data.market.code, "delivery_start": test["delivery_start"].to_numpy(),
        "day": days[test.index].dt.date.to_numpy(), "hour": test["hour"].to_numpy() if "hour" in test else np.nan,
        "issued_at": test[ISSUED_AT].to_numpy(), "fitted_at": pd.array([pd.NaT] * len(test), dtype="datetime64[ns, UTC]"),
        "recalibrated_at": pd.array([pd.NaT] * len(test), dtype="datetime64[ns, UTC]"),
        "train_rows": np.nan, "train_last_target_known_at": pd.array([pd.NaT] * len(test), dtype="datetime64[ns, UTC]"),
        "actual": test[TARGET].to_numpy(), "naive": weekly_lag(test) if NAIVE in test else np.nan,
    })
    for c in pred.columns:
        forecasts[c] = pred[c].to_numpy()
    bt = Backtest(name, window, forecasts, tuple(sorted(quantiles)), 0, time.perf_counter() - t0)
    bt.metrics = scores(bt)
    return bt


def days_from(bt: Backtest, first: dt.date) -> Backtest:
    """The same backtest restricted to its days from ``first`` on, scored again on those days only."""
    keep = (bt.forecasts["day"] >= first).to_numpy()
    if not keep.any():
        raise TrainingDataError(f"backtest {bt.name!r} of [{bt.window.start}, {bt.window.end}) has no day from {first} on")
    out = Backtest(bt.name, BacktestWindow(max(first, bt.window.start), bt.window.end, bt.window.refit_days,
                                           bt.window.train_days),
                   bt.forecasts[keep].reset_index(drop=True), bt.quantiles, bt.fits, bt.seconds)
    out.metrics = scores(out)
    return out


def _training_rows(data: TrainingData, day: pd.Timestamp, window: BacktestWindow) -> tuple[pd.Timestamp, np.ndarray]:
    """The issue time of ``day`` and the rows a model issued then may learn from: delivery days before
    it whose target was public at that time (within the training window, if any)."""
    days = data.days
    issued = pd.to_datetime(data.frame.loc[days == day, ISSUED_AT], utc=True).min()
    train = known_targets(data, issued) & (days < day).to_numpy()
    if window.train_days is not None:
        train &= (days >= day - pd.Timedelta(days=window.train_days)).to_numpy()
    if not train.any():
        raise TrainingDataError(
            f"no target of market {data.market.code!r} was known at {issued.isoformat()} (issue time of "
            f"{day.date()}); the backtest needs history before {window.start}")
    return issued, train


def scored_before(data: TrainingData, forecasts: pd.DataFrame | None, issued: pd.Timestamp) -> pd.DataFrame:
    """Earlier forecasts (rows of ``data.frame`` by label) whose actual price was public at ``issued``,
    with their local ``day`` and ``actual``: what a model issued then may calibrate on."""
    if forecasts is None or forecasts.empty:
        return pd.DataFrame({"day": pd.Series(dtype="datetime64[ns]"), "actual": pd.Series(dtype=float)})
    rows = data.frame.loc[forecasts.index]
    known = (pd.to_datetime(rows[TARGET_KNOWN_AT], utc=True) <= issued).to_numpy() & rows[TARGET].notna().to_numpy()
    return forecasts[known].assign(day=data.days.loc[forecasts.index][known].to_numpy(),
                                   actual=rows.loc[known, TARGET].to_numpy())


def scores(bt: Backtest) -> pd.DataFrame:
    """Metrics overall and by local hour, on the hours whose actual price is known."""
    f = bt.forecasts[bt.forecasts["actual"].notna()]
    naive = f["naive"] if f["naive"].notna().all() else None
    return score(f["actual"], f[bt.quantile_columns], naive=naive, hour=f["hour"])


def daily(forecasts: pd.DataFrame, column: str) -> np.ndarray:
    """(days, 24) local-hour matrix of a column of a backtest's forecasts (DST days folded to 24 hours)."""
    blocks = DayBlocks.of(forecasts[["market", "delivery_start", "hour"]])
    return blocks.pivot(forecasts[column].to_numpy(dtype=float))


def compare(results: dict[str, Backtest], point: str = "q50") -> pd.DataFrame:
    """Side by side: overall metrics of each backtest and the DM p-value of beating each other one.

    Column ``dm_vs_<other>`` holds the one-sided multivariate Diebold-Mariano p-value that the row's
    model is more accurate than ``<other>`` (small = significantly better). All backtests must cover
    the same hours.
    """
    names = list(results)
    first = results[names[0]].forecasts["delivery_start"]
    for n in names[1:]:
        if not results[n].forecasts["delivery_start"].reset_index(drop=True).equals(first.reset_index(drop=True)):
            raise TrainingDataError(f"backtests {names[0]!r} and {n!r} cover different hours; compare like with like")
    actual = daily(results[names[0]].forecasts, "actual")
    ok = ~np.isnan(actual).any(axis=1)
    forecast = {n: daily(results[n].forecasts, point)[ok] for n in names}
    rows = []
    for n in names:
        row = {"model": n, **results[n].overall()}
        for other in names:
            if other != n:
                row[f"dm_vs_{other}"] = diebold_mariano(actual[ok], forecast[n], forecast[other])
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")
