"""Which model serves each market: the registry's ``champion`` (and ``challenger`` for shadow scoring).

A ``ModelBook`` loads each market's champion once, re-reads the alias on an interval (or when asked)
and swaps to a new champion atomically: the new version is loaded completely before the reference
is replaced, so requests in flight finish on the old model and none fails. If the registry cannot
be read, or the new version cannot be loaded, the last good model keeps serving and the failure is
reported (``status()``); a market is never left without a model it once had.

Models can also come from a bundle folder (``aurum bento build``): one sub-folder per market with the
pyfunc model and a ``served.json`` record, so a built service starts without the registry.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from features.errors import AurumError
from features.settings import AurumSettings
from models import mlflow_model as ml

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"
RECORD = "served.json"


@dataclass
class ServedModel:
    """One loaded model version and what the API reports about it."""

    market: str
    name: str
    version: str
    alias: str
    forecaster: object  # models.forecaster.Forecaster
    feature_service: str
    quantiles: tuple[float, ...]
    record: dict[str, object]  # version tags: approval decision, metrics, run id
    loaded_at: float = field(default_factory=time.time)
    cache: OrderedDict = field(default_factory=OrderedDict, repr=False)
    cache_size: int = 4096
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.forecaster.input_columns_)

    def cached(self, key: tuple) -> np.ndarray | None:
        """A forecast already made from exactly these inputs (the key holds the feature values)."""
        if not self.cache_size:
            return None
        with self.lock:
            hit = self.cache.get(key)
            if hit is not None:
                self.cache.move_to_end(key)
            return hit

    def remember(self, key: tuple, values: np.ndarray) -> None:
        if not self.cache_size:
            return
        with self.lock:
            self.cache[key] = values
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)


def _served(market: str, name: str, version: str, alias: str, pyfunc, tags: dict[str, str], cache_size: int) -> ServedModel:
    wrapper = pyfunc.unwrap_python_model()
    meta = wrapper.metadata
    return ServedModel(market, name, str(version), alias, wrapper.forecaster, meta.get("feature_service", ""),
                       tuple(float(q) for q in meta.get("quantiles", ())), dict(tags), cache_size=cache_size)


@dataclass
class MarketState:
    """What the book knows about one market's registry entry."""

    champion: ServedModel | None = None
    challenger: ServedModel | None = None
    checked_at: float | None = None
    registry_ok: bool = True
    error: str | None = None


class ModelBook:
    """The serving models of every market, refreshed from the registry (see the module docstring)."""

    def __init__(self, settings: AurumSettings, markets: list[str], *, bundle: Path | None = None,
                 shadow: bool = False):
        self.settings, self.markets, self.bundle, self.shadow = settings, list(markets), bundle, shadow
        self.states: dict[str, MarketState] = {m: MarketState() for m in markets}
        self._refresh_lock = threading.Lock()
        self.tracking_uri = settings.mlflow_tracking_uri()
        if bundle is None:
            ml.configure(self.tracking_uri)

    def name(self, market: str) -> str:
        return f"{self.settings.mlflow.model_prefix}{market}"

    def champion(self, market: str) -> ServedModel | None:
        state = self.states.get(market)
        return state.champion if state else None

    def challenger(self, market: str) -> ServedModel | None:
        state = self.states.get(market)
        return state.challenger if state else None

    def refresh(self, markets: list[str] | None = None) -> dict[str, str]:
        """Re-read the aliases and swap in new versions; returns what happened per market."""
        outcome = {}
        with self._refresh_lock:  # one refresh at a time: a swap never races another
            for m in markets or self.markets:
                outcome[m] = self._refresh_bundle(m) if self.bundle else self._refresh_market(m)
        return outcome

    def _refresh_market(self, market: str) -> str:
        state = self.states.setdefault(market, MarketState())
        name = self.name(market)
        try:
            ml.check_reachable(self.tracking_uri, _redact(self.tracking_uri))  # fast, not MLflow's minutes of retries
            wanted = {CHAMPION: ml.alias_version(name, CHAMPION)}
            if self.shadow:
                wanted[CHALLENGER] = ml.alias_version(name, CHALLENGER)
        except Exception as exc:  # any registry failure: keep serving the last good model
            return self._failed(state, market, f"registry unreachable: {exc}")
        state.checked_at = time.time()
        if wanted[CHAMPION] is None and state.champion is not None:
            return self._failed(state, market, f"registry has no {CHAMPION!r} alias for {name}; "
                                               f"keeping version {state.champion.version}")
        changed = []
        for alias, record in wanted.items():
            current = getattr(state, alias)
            if record is None:
                setattr(state, alias, None) if alias == CHALLENGER else None
                continue
            if current is not None and current.version == record.version:
                continue
            try:
                pyfunc = ml.load_forecaster(f"models:/{name}/{record.version}")
                served = _served(market, name, record.version, alias, pyfunc, record.tags,
                                 self.settings.serving.cache_size)
            except Exception as exc:  # a broken version never replaces a working one
                return self._failed(state, market, f"cannot load {name} version {record.version}: {exc}")
            setattr(state, alias, served)  # the atomic swap: one reference assignment
            changed.append(f"{alias} -> {record.version}")
            log.info("market %s now serves %s version %s as %s", market, name, record.version, alias)
        state.registry_ok, state.error = True, None
        return ", ".join(changed) or "unchanged"

    def _failed(self, state: MarketState, market: str, why: str) -> str:
        state.registry_ok, state.error = False, why
        log.warning("market %s: %s", market, why)
        return f"kept last good model: {why}" if state.champion else f"no model: {why}"

    def _refresh_bundle(self, market: str) -> str:
        state = self.states.setdefault(market, MarketState())
        if state.champion is not None:
            return "unchanged (bundled)"
        folder = self.bundle / market
        try:
            record = json.loads((folder / RECORD).read_text())
            pyfunc = ml.load_forecaster(str(folder / "model"))
        except (OSError, ValueError, AurumError) as exc:
            return self._failed(state, market, f"bundle {folder} is unusable: {exc}")
        state.champion = _served(market, record["name"], record["version"], CHAMPION, pyfunc, record.get("tags", {}),
                                 self.settings.serving.cache_size)
        state.checked_at = time.time()
        return f"champion -> {record['version']} (bundled)"

    def status(self) -> dict[str, dict[str, object]]:
        out = {}
        for m, s in self.states.items():
            out[m] = {
                "champion": _describe(s.champion), "challenger": _describe(s.challenger),
                "registry_ok": s.registry_ok, "error": s.error, "checked_at": s.checked_at,
                "source": "bundle" if self.bundle else "registry",
            }
        return out


def _redact(uri: str) -> str:
    """A store URI without its password."""
    import re

    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", uri)


def _describe(model: ServedModel | None) -> dict[str, object] | None:
    if model is None:
        return None
    tags = model.record
    metrics = {k.removeprefix("metric."): _number(v) for k, v in tags.items() if k.startswith("metric.")}
    approval = {k.removeprefix("approval."): v for k, v in tags.items() if k.startswith("approval.")}
    return {"name": model.name, "version": model.version, "alias": model.alias,
            "feature_service": model.feature_service, "quantiles": list(model.quantiles),
            "loaded_at": model.loaded_at, "run_id": tags.get("run_id"), "metrics": metrics, "approval": approval,
            "model_spec": tags.get("model_spec")}


def _number(v: object) -> object:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return v


def export_bundle(settings: AurumSettings, markets: list[str], folder: Path) -> dict[str, str]:
    """Copy each market's current champion into ``folder`` (for a Bento); returns market -> version."""
    ml.configure(settings.mlflow_tracking_uri())
    out = {}
    for m in markets:
        name = f"{settings.mlflow.model_prefix}{m}"
        record = ml.alias_version(name, CHAMPION)
        if record is None:
            from features.errors import RegistryError

            raise RegistryError(f"market {m!r} has no {CHAMPION!r} version of {name}; train and approve one first")
        target = folder / m
        target.mkdir(parents=True, exist_ok=True)
        ml.download_model(f"models:/{name}/{record.version}", target / "model")
        (target / RECORD).write_text(json.dumps({"name": name, "version": record.version, "tags": record.tags,
                                                 "market": m}, indent=2))
        out[m] = record.version
    return out
