"""The reference of a drift check: the serving champion's training data, rebuilt from its lineage.

``Reference.for_champion(settings, market)`` reads the champion version and the lineage of its
training run (:mod:`monitoring.champion`), rebuilds the features the model was fitted on through the
same feature service with the same point-in-time rule as training (each local day's features as
known at its issue time), adds the champion's own median forecasts of those rows, and computes the
reference statistics once (scales, thresholds calibrated on the reference's week-to-season
variation: :mod:`monitoring.drift`).

The result is cached under ``home/monitoring/reference/<model name>/<version>/`` (``reference.parquet``,
``reference.json``): a version's training data never changes, so later checks read the cache (and
only recalibrate, without the feature store, when the calibration settings changed).

Reproducibility check: the rebuilt rows equal what training read unless a feature version of the
reference days was computed after the training run began *and* was already known at its row's issue
time (a backfill). Such versions are counted per feature table and the reference is marked
``diverges``; otherwise ``exact``. (The run's Iceberg snapshot ids are kept with the reference as
lineage; snapshots expire, ``computed_at`` stamps do not.)
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features import featurestore
from features.errors import LineageError
from features.featuretables import GROUPS
from features.lake import Lake, all_of, between, window_filter
from features.marketdata import MarketData
from features.markets import Market
from features.settings import AurumSettings, MonitoringSettings
from monitoring import drift
from monitoring.champion import Champion, champion as champion_of
from monitoring.drift import NUMERICAL, PREDICTION, ReferenceStatistics
from monitoring.roles import ColumnRoles
from monitoring.windows import ChampionModel, service_frame, with_predictions

FORMAT = 1
CALIBRATION_KEYS = ("season_half_width_days", "calibration_guard_days", "threshold_margin", "min_threshold",
                    "min_calibration_weeks", "calibration_max_rows")


def reference_dir(settings: AurumSettings, champion: Champion) -> Path:
    return settings.home_dir / "monitoring" / "reference" / champion.model_name / champion.version


@dataclass
class Reference:
    """The champion's training rows (features and its median forecast) and their drift statistics."""

    champion: Champion
    timezone: str
    roles: ColumnRoles
    stats: ReferenceStatistics
    first_day: dt.date
    last_day: dt.date
    verification: dict[str, object]
    built_at: str
    path: Path

    @classmethod
    def for_champion(cls, settings: AurumSettings, market: str, *, champion: Champion | None = None,
                     lake: Lake | None = None, store=None, rebuild: bool = False,
                     progress: Callable[[str], None] | None = None) -> Reference:
        """The reference of ``market``'s champion: from the cache, or rebuilt from its lineage and cached.

        Raises:
            UnknownMarketError: the market is not registered.
            NoChampionError, LineageError: no champion, or one whose run lacks the lineage tags.
            MonitoringDataError: the feature store knows nothing for the fitted days, or they are too few
                weeks to calibrate thresholds on.
        """
        say = progress or (lambda msg: None)
        lake = lake or Lake.open(settings, create=False)
        m = MarketData(lake).registry().get(market)
        champion = champion or champion_of(settings, market)
        path = reference_dir(settings, champion)
        if not rebuild and (path / "reference.json").exists():
            cached = cls.load(path, champion, settings.monitoring)
            if cached is not None:
                return cached
        lineage = champion.lineage
        first, last = lineage.fitted_days
        say(f"rebuilding the reference of {champion.model_name} v{champion.version}: {lineage.feature_service} "
            f"features of {first} .. {last} as known at each issue time")
        store = store or featurestore.open_store(settings)
        frame = service_frame(store, lineage.feature_service, m, first, last + dt.timedelta(days=1), lake=lake)
        model = ChampionModel.load(champion.model_uri, settings.mlflow_tracking_uri())
        roles = ColumnRoles.of_service(store, lineage.feature_service, frame, inputs=model.inputs)
        frame = with_predictions(frame, model)
        stats = ReferenceStatistics.build(frame, {**roles.monitored, PREDICTION: NUMERICAL}, settings.monitoring)
        built = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        ref = cls(champion, m.timezone, roles, stats, first, last, verify(lake, m, champion, first, last), built, path)
        ref.save()
        return ref

    # ---------------------------------------------------------------- cache

    def meta(self) -> dict[str, object]:
        lineage = self.champion.lineage
        return {
            "format": FORMAT, "market": self.champion.market, "model_name": self.champion.model_name,
            "model_version": self.champion.version, "run_id": lineage.run_id, "timezone": self.timezone,
            "feature_service": lineage.feature_service, "first_day": str(self.first_day),
            "last_day": str(self.last_day),
            "data_window": [str(lineage.data_start), str(lineage.data_end)], "train_days": lineage.train_days,
            "snapshots": lineage.snapshots, "rows": self.stats.rows, "sampled_rows": len(self.stats.frame),
            "roles": self.roles.as_dict(), "scales": self.stats.scales, "thresholds": _finite(self.stats.thresholds),
            "calibration": self.stats.calibration, "verification": self.verification, "built_at": self.built_at,
        }

    def save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.stats.frame.to_parquet(self.path / "reference.parquet", index=False)
        tmp = self.path / "reference.json.tmp"
        tmp.write_text(json.dumps(self.meta(), indent=2, default=str))
        tmp.replace(self.path / "reference.json")  # the json last, atomically: it marks the cache complete

    @classmethod
    def load(cls, path: Path, champion: Champion, settings: MonitoringSettings) -> Reference | None:
        """The cached reference of ``champion``, recalibrated if the calibration settings changed; None when
        the cache is of another format or another run (a registry that reused the version number).

        Raises:
            LineageError: the cache is unreadable (a half-deleted folder).
        """
        try:
            meta = json.loads((path / "reference.json").read_text())
            frame = pd.read_parquet(path / "reference.parquet")
        except (OSError, ValueError) as exc:
            raise LineageError(f"the cached reference in {path} cannot be read ({exc}); delete the folder or "
                               "run aurum monitor reference --rebuild") from exc
        if meta.get("format") != FORMAT or meta.get("run_id") != champion.lineage.run_id:
            return None
        roles = ColumnRoles.from_dict(meta["roles"])
        columns = {**roles.monitored, PREDICTION: NUMERICAL}
        thresholds = {c: float(meta["thresholds"].get(c, math.inf)) for c in columns}
        calibration = meta["calibration"]
        stats = ReferenceStatistics(frame, columns, {c: float(meta["scales"][c]) for c in columns}, thresholds,
                                    calibration, int(meta["rows"]))
        ref = cls(champion, meta["timezone"], roles, stats, dt.date.fromisoformat(meta["first_day"]),
                  dt.date.fromisoformat(meta["last_day"]), meta["verification"], meta["built_at"], path)
        if {k: calibration.get(k) for k in CALIBRATION_KEYS} != settings.model_dump(include=set(CALIBRATION_KEYS)):
            stats.thresholds, stats.calibration = drift.calibrate(frame, columns, stats.scales, settings)
            ref.save()
        return ref

    def summary(self) -> dict[str, object]:
        """What a check's JSON summary says about its reference."""
        return {k: v for k, v in self.meta().items()
                if k in ("model_name", "model_version", "run_id", "feature_service", "first_day", "last_day",
                         "rows", "sampled_rows", "roles", "verification", "built_at")} | {
            "calibration": {k: v for k, v in self.stats.calibration.items() if not k.startswith("week_score")},
            "path": str(self.path)}


def _finite(values: dict[str, float]) -> dict[str, float | None]:
    return {k: (v if math.isfinite(v) else None) for k, v in values.items()}


def verify(lake: Lake, market: Market, champion: Champion, first: dt.date, last: dt.date) -> dict[str, object]:
    """Whether the rebuilt reference is what training read (see the module docstring)."""
    lo = pd.Timestamp(first).tz_localize(market.timezone).tz_convert("UTC")
    hi = pd.Timestamp(last + dt.timedelta(days=1)).tz_localize(market.timezone).tz_convert("UTC")
    cutoff = pd.Timestamp(champion.lineage.started_at)
    later, early = {}, {}
    for g in GROUPS:
        rows = lake.scan(g.ident, all_of(window_filter(market.code, lo, hi), between("computed_at", lo=cutoff)),
                         columns=("delivery_start", "known_at")).to_pandas()
        later[g.ident] = len(rows)
        if rows.empty:
            early[g.ident] = 0
            continue
        ds = pd.to_datetime(rows["delivery_start"], utc=True)
        issued = market.on_day_before(ds, market.gate_closure)
        early[g.ident] = int((pd.to_datetime(rows["known_at"], utc=True) <= issued).sum())
    return {"status": "diverges" if any(early.values()) else "exact",
            "training_run_started_at": cutoff.isoformat(),
            "versions_computed_after_training": later,
            "of_which_known_at_issue_time": early,
            "snapshots": champion.lineage.snapshots}

