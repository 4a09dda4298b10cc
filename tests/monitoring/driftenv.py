"""The monitoring tests' environment: two synthetic markets with the same approved champion, one stable,
one with a regime shift.

The champion of ``SYN_NORTH`` is trained (through the real training pipeline and MLflow store) on the
local days 2022-01-01 .. 2023-01-07; the lakes then hold a year more, which monitoring watches:

- ``stable``: the same market, unchanged;
- ``shifted``: ``RegimeShift(start=2023-06-01)`` (fuel x3, price volatility x2); every row before the
  shift equals the stable one (the generator is prefix-stable and the shift only touches later rows).

The shifted lake is built before the champion is trained, so its feature rows predate the training
run as the stable lake's reference rows do (the reference of both is then ``exact``). It gets a copy
of the stable home's MLflow store: the same champion, read from the same model artifacts.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from features.featuretables import compute_features
from features.ingest import ingest_synthetic
from features.marketdata import MarketData
from features.synthetic import RegimeShift
from marketenv import MarketEnv, build_env

MARKET = "SYN_NORTH"
REFERENCE_START, REFERENCE_END = dt.date(2022, 1, 1), dt.date(2023, 1, 8)  # data the champion is trained on
MONITORED_END = dt.date(2024, 1, 8)  # a year of data after it
SHIFT = RegimeShift(start=dt.date(2023, 6, 1))


@dataclass
class DriftEnvs:
    stable: MarketEnv
    shifted: MarketEnv
    version: str


def build_drift_envs(root) -> DriftEnvs:
    """Build both under ``root`` (about 30 s: the champion is trained through the real pipeline)."""
    from training import pipeline
    from training.specs import ModelSpec

    stable = build_env(root / "stable", REFERENCE_START, REFERENCE_END, markets=(MARKET,))
    shifted = build_env(root / "shifted", REFERENCE_START, MONITORED_END, markets=(MARKET,), shift=SHIFT)
    spec = ModelSpec.of("lgbm", n_estimators=60, calibration_days=28)
    result = pipeline.train(stable.settings, MARKET, spec, backtest_days=14, baselines=(),
                            session=pipeline.Session.open(stable.settings))
    if not result.decision.promote:
        raise RuntimeError(f"the test champion was not approved: {result.decision.reason}")
    # the monitored year arrives after training (generated from the same start: the same history)
    ingest_synthetic(stable.lake, [MARKET], REFERENCE_START, MONITORED_END, seed=11)
    compute_features(stable.lake, MarketData(stable.lake).registry().get(MARKET))
    shutil.copy(stable.settings.home_dir / "mlflow.db", shifted.settings.home_dir / "mlflow.db")
    stable.champions[MARKET] = shifted.champions[MARKET] = result.version
    return DriftEnvs(stable, shifted, result.version)


ARCHIVED = (dt.date(2023, 5, 14), dt.date(2023, 7, 1))  # days batch-scored into both archives (both included)


def archive_batch(env: MarketEnv, first: dt.date, last: dt.date):
    """Batch-score the local days ``first .. last`` with the env's champion into ``serving.forecasts``, as
    ``aurum score`` does (the serving stage's own code: the archive monitoring reads is the one serving writes)."""
    from serving import batch

    return batch.score(env.settings, MARKET, first, last, chunk_days=100)


def build_loop_env(root, envs: DriftEnvs) -> MarketEnv:
    """A third shifted market with the same champion, for the closed loop (which registers new versions and
    may move the ``champion`` alias, so it must not share a store with the other tests); its archive holds
    the champion's forecasts of the weeks around the shift."""
    loop = build_env(root, REFERENCE_START, MONITORED_END, markets=(MARKET,), shift=SHIFT)
    shutil.copy(envs.stable.settings.home_dir / "mlflow.db", loop.settings.home_dir / "mlflow.db")
    loop.champions[MARKET] = envs.version
    archive_batch(loop, dt.date(2023, 5, 28), dt.date(2023, 6, 17))
    return loop


def aurum(monkeypatch, capsys, home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``aurum *args`` in process through the real entry point (``features.cli.main``) with AURUM_HOME=home;
    returns the exit code, stdout and stderr."""
    import pytest

    from features.cli import main

    monkeypatch.setenv("AURUM_HOME", str(home))
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(sys, "argv", ["aurum", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    captured = capsys.readouterr()
    for k in env or {}:
        monkeypatch.delenv(k)
    return exc.value.code, captured.out, captured.err


def printed_path(out: str, label: str) -> Path:
    """The path printed on the line ``<label> <path>``."""
    return Path(re.search(rf"^{label} (\S+)$", out, re.M).group(1))
