"""The common interface of every Aurum forecaster, and the checks every one of them applies.

Contract (all forecasters):

- ``fit(features, target)`` takes a feature frame (see :mod:`models.featureframe`) and the actual
  prices aligned to it (same index, or same length); rows whose target is NaN are dropped and counted
  in ``dropped_target_rows_``. Returns ``self``.
- ``predict(features, quantiles)`` returns one row per input row, with the input's index, one column
  per quantile named by :func:`quantile_column` (``q10``, ``q50``, ``q90``; the point forecast is the
  median ``q50``), in increasing quantile order and never crossing (values are sorted across
  columns), plus ``missing_inputs``: how many of the model's input features were NaN in that row and
  were imputed (how is model specific and documented on each model). Nothing is imputed silently.
- A model's ``input_columns_`` are the features it uses. A feature that is NaN in every training row
  is not used (listed in ``unused_columns_``); a used feature that is NaN in every row of a prediction
  frame is an error, as are quantiles outside (0, 1), missing columns and unknown columns.

Recalibration: a forecaster whose ``recalibrates`` is true can ``recalibrate(features, target)`` on
newer rows between two full fits, keeping what the fit chose (LEAR keeps each hour's penalty and
refits its coefficients); a rolling backtest does so each day of a refit block.

Shared fits: inside ``with shared_fits():`` a forecaster that states a ``fit_key()`` (its class and
every parameter that changes a fit) and is fitted on a training frame and target equal, value for
value, to an earlier fit in the block takes that fit's state instead of fitting again (a backtest's
baseline LEAR and the LEAR member of its ensemble, fitted at the same refit on the same rows); a
recalibration of such a state on equal rows is shared the same way. The key holds the whole
validated training data, so a shared fit equals a fresh one for any deterministic forecaster, and
nothing outlives the block.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Iterator

import numpy as np
import pandas as pd

from features.errors import FeatureFrameError, NotFittedError, QuantileError
from models.featureframe import check_feature_frame

DEFAULT_QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9)
MISSING_INPUTS = "missing_inputs"

_SHARED_FITS: contextvars.ContextVar[SharedFits | None] = contextvars.ContextVar("shared_fits", default=None)


class SharedFits:
    """The states of one ``shared_fits()`` block: what each fit or recalibration produced, by its key
    (class, fit key or the key of the state before, step, training-data digest)."""

    def __init__(self) -> None:
        self.states: dict[tuple, dict] = {}
        self.hits = 0
        self.misses = 0


@contextlib.contextmanager
def shared_fits() -> Iterator[SharedFits]:
    """Share the fits of equal forecasters on equal training data inside the block (see the module docstring)."""
    fits = SharedFits()
    token = _SHARED_FITS.set(fits)
    try:
        yield fits
    finally:
        _SHARED_FITS.reset(token)


def training_digest(frame: pd.DataFrame, y: np.ndarray) -> str:
    """A digest of a validated training frame (column names, every value, row order) and its target."""
    h = hashlib.blake2b(digest_size=20)
    h.update(repr([(str(c), str(frame[c].dtype)) for c in frame.columns]).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    h.update(np.ascontiguousarray(y, dtype=float).tobytes())
    return h.hexdigest()


def quantile_column(q: float) -> str:
    """Column name of quantile level ``q``: 0.1 -> ``q10``, 0.5 -> ``q50``, 0.025 -> ``q2.5``."""
    return f"q{round(q * 100, 6):g}"


def check_quantiles(quantiles: Iterable[float] | float) -> tuple[float, ...]:
    """Distinct levels strictly inside (0, 1), sorted; otherwise :class:`QuantileError`."""
    if isinstance(quantiles, (int, float)):
        quantiles = (quantiles,)
    try:
        qs = [float(q) for q in quantiles]
    except (TypeError, ValueError):
        raise QuantileError(f"quantiles {quantiles!r} must be numbers strictly between 0 and 1") from None
    if not qs:
        raise QuantileError("at least one quantile level is needed, such as (0.1, 0.5, 0.9)")
    for q in qs:
        if not 0.0 < q < 1.0 or np.isnan(q):
            raise QuantileError(f"quantile {q!r} is outside (0, 1); expected levels such as 0.1, 0.5, 0.9")
    if len(set(qs)) != len(qs):
        raise QuantileError(f"quantiles {qs!r} repeat a level")
    return tuple(sorted(qs))


def align_target(frame: pd.DataFrame, target: object) -> np.ndarray:
    """Target values in the row order of ``frame`` (same index, or same length as a plain sequence)."""
    if isinstance(target, pd.Series):
        if target.index.equals(frame.index):
            y = target
        elif target.index.is_unique and frame.index.isin(target.index).all():
            y = target.reindex(frame.index)
        elif len(target) == len(frame):
            y = pd.Series(target.to_numpy(), index=frame.index)
        else:
            raise FeatureFrameError(f"target ({len(target)} rows) does not align with the features "
                                    f"({len(frame)} rows) by index or length", column="target")
    else:
        arr = np.asarray(target)
        if arr.ndim != 1 or len(arr) != len(frame):
            raise FeatureFrameError(f"target has shape {arr.shape}; expected ({len(frame)},) like the features")
        y = pd.Series(arr, index=frame.index)
    try:
        return y.to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise FeatureFrameError("target holds a non-numeric value", column="target") from None


class Forecaster(ABC):
    """Base of every forecaster; subclasses implement ``_fit`` and ``_predict`` on validated frames."""

    #: Columns every fit and prediction frame must have besides market and delivery_start.
    required_columns: tuple[str, ...] = ("hour",)

    #: Whether ``recalibrate`` refits on newer rows cheaply, keeping what the last fit chose.
    recalibrates: bool = False

    def fit(self, features: pd.DataFrame, target: pd.Series) -> Forecaster:
        frame, y = self._training_rows(features, target)
        self.markets_ = sorted(frame["market"].astype(str).unique())
        self._shared_step(self.fit_key(), "fit", frame, y, self._fit)
        self.is_fitted_ = True
        return self

    def recalibrate(self, features: pd.DataFrame, target: pd.Series) -> Forecaster:
        """Refit on newer training rows, keeping what the last ``fit`` chose (LEAR: each hour's penalty).

        For a forecaster whose ``recalibrates`` is true; the markets must be those it was fitted on.
        A rolling backtest calls it on the days between two full refits (``training.backtest``).
        """
        if not getattr(self, "is_fitted_", False):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(features, target) first")
        if not self.recalibrates:
            raise NotImplementedError(f"{type(self).__name__} does not recalibrate (recalibrates is False); fit it again")
        frame, y = self._training_rows(features, target)
        markets = sorted(frame["market"].astype(str).unique())
        if markets != self.markets_:
            raise FeatureFrameError(f"recalibration rows hold markets {markets}; the model was fitted on {self.markets_}",
                                    column="market")
        self._shared_step(getattr(self, "_shared_key_", None), "recalibrate", frame, y, self._recalibrate)
        return self

    def _training_rows(self, features: pd.DataFrame, target: pd.Series) -> tuple[pd.DataFrame, np.ndarray]:
        """The validated frame and finite target of a fit (NaN targets dropped and counted)."""
        frame = check_feature_frame(features, self.required_columns)
        y = align_target(frame, target)
        keep = ~np.isnan(y)
        if not keep.any():
            raise FeatureFrameError("target is NaN in every row; nothing to fit", column="target")
        self.dropped_target_rows_ = int((~keep).sum())
        return frame[keep], y[keep]

    def _shared_step(self, prior: Hashable | None, step: str, frame: pd.DataFrame, y: np.ndarray,
                     work: Callable[[pd.DataFrame, np.ndarray], None]) -> None:
        """Run ``work`` (a fit or a recalibration), or take its result from the ``shared_fits`` block.

        The key chains what determined the state: the parameters that change a fit (``fit_key``) or
        the state before (a recalibration), the step and the digest of its data. ``work`` must assign
        what it produces (never change an existing attribute's object in place).
        """
        shared = _SHARED_FITS.get()
        if shared is None or prior is None:
            work(frame, y)
            self._shared_key_ = None  # not reproducible from a key: later steps are not shared either
            return
        key = (type(self).__qualname__, prior, step, training_digest(frame, y))
        state = shared.states.get(key)
        if state is not None:
            shared.hits += 1
            self.__dict__.update(state)  # states are never changed in place after a step: shared read-only
            return
        shared.misses += 1
        before = dict(self.__dict__)
        work(frame, y)
        self.is_fitted_ = True
        self._shared_key_ = key
        # what the step produced (new or reassigned attributes), not the parameters it left alone: a
        # forecaster taking the state keeps its own settings that the key leaves out (LEAR's recalibrate)
        shared.states[key] = {k: v for k, v in self.__dict__.items() if k not in before or before[k] is not v}

    def _recalibrate(self, frame: pd.DataFrame, y: np.ndarray) -> None:
        """Refit on a validated frame keeping the last fit's choices; must replace, never mutate, fitted state."""
        raise NotImplementedError

    def fit_key(self) -> Hashable | None:
        """What besides the training data determines a fit (every parameter), or None: never shared.

        Only deterministic forecasters may state one (see ``shared_fits``).
        """
        return None

    def predict(self, features: pd.DataFrame, quantiles: Iterable[float] = DEFAULT_QUANTILES) -> pd.DataFrame:
        if not getattr(self, "is_fitted_", False):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(features, target) first")
        qs = check_quantiles(quantiles)
        frame = check_feature_frame(features, (*self.required_columns, *self.input_columns_))
        self._check_not_all_missing(frame)
        values = np.sort(np.asarray(self._predict(frame, qs), dtype=float), axis=1)
        out = pd.DataFrame(values, index=features.index, columns=[quantile_column(q) for q in qs])
        out[MISSING_INPUTS] = frame[list(self.input_columns_)].isna().sum(axis=1).astype("int64").to_numpy()
        return out

    def _check_not_all_missing(self, frame: pd.DataFrame) -> None:
        for c in self.input_columns_:
            if frame[c].isna().all():
                raise FeatureFrameError(f"feature {c!r} is NaN in every row of the prediction frame; "
                                        f"{type(self).__name__} was fitted with it", column=c)

    @property
    def input_columns_(self) -> tuple[str, ...]:
        return tuple(getattr(self, "_inputs", ()))

    def feature_importance(self) -> pd.DataFrame:
        """How much each input counts in the fitted model, one row per market, member, quantile and input.

        Columns (``IMPORTANCE_COLUMNS``): ``market``; ``member`` (the ensemble member, "" for a single
        model); ``model`` (the class); ``quantile`` (the fitted level: LightGBM has one booster per level,
        LEAR is a point model, 0.5); ``input`` (a feature column, or ``weekday`` / ``lear_forecast`` for
        what a model derives itself); ``importance`` in the model's own ``measure``; ``share``, its
        fraction of the total of that market, member and quantile (comparable across models). A model
        with nothing to weigh (the weekly naive) has no rows.
        """
        if not getattr(self, "is_fitted_", False):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(features, target) first")
        return importance_frame([])

    @abstractmethod
    def _fit(self, frame: pd.DataFrame, y: np.ndarray) -> None:
        """Fit on a validated frame with finite target ``y``; set ``self._inputs`` and ``self.unused_columns_``."""

    @abstractmethod
    def _predict(self, frame: pd.DataFrame, quantiles: tuple[float, ...]) -> np.ndarray:
        """An (n_rows, n_quantiles) array for sorted ``quantiles``."""


IMPORTANCE_COLUMNS = ("market", "member", "model", "quantile", "input", "importance", "share", "measure")


def importance_frame(rows: list[dict]) -> pd.DataFrame:
    """``rows`` (dicts of market, model, quantile, input, importance, measure) summed per input, with shares."""
    frame = pd.DataFrame(rows, columns=[c for c in IMPORTANCE_COLUMNS if c != "share"])
    frame["member"] = ""  # an ensemble names its members after
    keys = ["market", "member", "model", "quantile", "measure"]
    frame = frame.groupby([*keys, "input"], sort=False, as_index=False)["importance"].sum()
    total = frame.groupby(keys, sort=False)["importance"].transform("sum")
    frame["share"] = (frame["importance"] / total.where(total > 0)).fillna(0.0)
    frame = frame.sort_values(["market", "member", "quantile", "importance"], ascending=[True, True, True, False],
                              kind="stable")
    return frame[list(IMPORTANCE_COLUMNS)].reset_index(drop=True)


class MarketwiseForecaster(Forecaster):
    """A forecaster that fits one independent model per market in the training frame.

    Predicting a market that was not in the training frame is a :class:`FeatureFrameError`.
    """

    def _fit(self, frame: pd.DataFrame, y: np.ndarray) -> None:
        self.models_: dict[str, object] = {}
        markets = frame["market"].astype(str).to_numpy()
        inputs: list[str] = []
        unused: set[str] = set()
        for m in self.markets_:
            mask = markets == m
            state, used, dropped = self._fit_market(frame[mask], y[mask])
            self.models_[m] = state
            inputs += [c for c in used if c not in inputs]
            unused |= set(dropped)
        self._inputs = tuple(inputs)
        self.unused_columns_ = tuple(sorted(unused - set(inputs)))

    def _recalibrate(self, frame: pd.DataFrame, y: np.ndarray) -> None:
        markets = frame["market"].astype(str).to_numpy()
        self.models_ = {m: self._recalibrate_market(self.models_[m], frame[markets == m], y[markets == m])
                        for m in self.markets_}  # a new dict: a shared fit's states stay as they were

    def _recalibrate_market(self, state: object, frame: pd.DataFrame, y: np.ndarray) -> object:
        """A new state of one market from newer rows, keeping the fit's choices (see ``recalibrate``)."""
        raise NotImplementedError

    def _predict(self, frame: pd.DataFrame, quantiles: tuple[float, ...]) -> np.ndarray:
        out = np.full((len(frame), len(quantiles)), np.nan)
        markets = frame["market"].astype(str).to_numpy()
        for m in pd.unique(markets):
            if m not in self.models_:
                raise FeatureFrameError(f"market {m!r} was not in the training data; fitted markets: "
                                        f"{', '.join(self.models_)}", column="market")
            mask = markets == m
            out[mask] = self._predict_market(self.models_[m], frame[mask], quantiles)
        return out

    @staticmethod
    def usable(frame: pd.DataFrame, candidates: Iterable[str]) -> tuple[list[str], list[str]]:
        """Candidates present with at least one value in ``frame``, and the rest (NaN-only or absent)."""
        used = [c for c in candidates if c in frame.columns and frame[c].notna().any()]
        return used, [c for c in candidates if c not in used]

    @abstractmethod
    def _fit_market(self, frame: pd.DataFrame, y: np.ndarray) -> tuple[object, list[str], list[str]]:
        """Fit one market; return (state, used columns, unused columns)."""

    @abstractmethod
    def _predict_market(self, state: object, frame: pd.DataFrame, quantiles: tuple[float, ...]) -> np.ndarray:
        """(n_rows, n_quantiles) for one market's rows."""


class ResidualQuantiles:
    """Empirical quantiles of residuals (actual - point) per local hour, centred so the median shift is 0.

    Adding ``shift(hour, q)`` to a point forecast gives quantile ``q``; the point itself stays the median.
    """

    def __init__(self, hour: np.ndarray, residual: np.ndarray):
        ok = ~np.isnan(residual)
        hour, residual = hour[ok], residual[ok]
        self.pooled = np.sort(residual)
        self.by_hour = {int(h): np.sort(residual[hour == h]) for h in np.unique(hour)}

    def shift(self, hour: np.ndarray, quantiles: tuple[float, ...]) -> np.ndarray:
        out = np.empty((len(hour), len(quantiles)))
        for h in np.unique(hour):
            r = self.by_hour.get(int(h))
            r = r if r is not None and len(r) >= 10 else self.pooled  # too few to trust an hour alone
            qv = np.quantile(r, quantiles) - np.quantile(r, 0.5)
            out[hour == h] = qv
        return out
