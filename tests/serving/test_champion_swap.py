"""A new champion replaces the old one in a running service with zero failed requests; a challenger
scores the same requests in shadow mode, off the request path, into the archive."""

import threading
import time

import numpy as np
import pytest

from serving import launcher
from marketenv import build_served_env
from serving.keys import KeyStore
from training import pipeline
from training.specs import ModelSpec

MARKET = "SYN_NORTH"
BODY = {"market": MARKET, "delivery_day": "2024-04-12"}


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """The served market with a second registered version (not approved: the champion stays version 1)."""
    env = build_served_env(tmp_path_factory.mktemp("swap") / "home")
    second = pipeline.train(env.settings, MARKET, ModelSpec.of("lgbm", n_estimators=90, calibration_days=28),
                            backtest_days=14, baselines=(), approve=False)
    return env, second.version


@pytest.mark.slow
def test_promotion_and_rollback_swap_the_served_model_without_a_failed_request(two_versions, tmp_path):
    env, second_version = two_versions
    with KeyStore.open(env.settings) as keys:
        key = keys.create("acme", [MARKET]).token
        admin = keys.create("ops", "*", admin=True).token
    service = launcher.start(env.settings.home_dir, tmp_path / "serve.log",
                            env={"AURUM_SERVING__RELOAD_INTERVAL_S": "1"})
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def hammer():
        with service.client(key) as c:
            deadline = time.monotonic() + 240  # bounded even if the test body fails
            while not stop.is_set() and time.monotonic() < deadline:
                r = c.post("/v1/forecast", json=BODY)
                seen.append((r.status_code, r.json()["model"]["version"] if r.status_code == 200 else r.text))

    client = threading.Thread(target=hammer, daemon=True)
    try:
        client.start()
        _wait_for(lambda: len(seen) >= 20)
        pipeline.promote(env.settings, MARKET, second_version, "swap test", who="test")
        with service.client(admin) as c:
            r = c.post("/v1/admin/reload", json={"markets": [MARKET]})
        assert r.status_code == 200 and r.json()["markets"][MARKET]["champion"]["version"] == second_version
        _wait_for(lambda: sum(v == second_version for _, v in seen) >= 20)
        # A rollback is picked up by the periodic check alone (every second here), no admin call.
        pipeline.rollback(env.settings, MARKET, "swap test done", who="test")
        _wait_for(lambda: seen[-1][1] == env.champions[MARKET] and
                  sum(v == second_version for _, v in seen) >= 20, timeout=60)
        n = len(seen)
        _wait_for(lambda: len(seen) >= n + 20)
    finally:
        stop.set()
        client.join(timeout=30)
        service.stop()
    assert seen and all(status == 200 for status, _ in seen), [s for s in seen if s[0] != 200][:3]
    versions = [v for _, v in seen]
    changes = [(a, b) for a, b in zip(versions, versions[1:]) if a != b]
    first = env.champions[MARKET]
    assert changes == [(first, second_version), (second_version, first)]  # each swap once, no flapping


def _wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.mark.slow
def test_shadow_mode_archives_the_challenger_beside_the_champion(two_versions, tmp_path):
    from models import mlflow_model as ml
    from serving.archive import read_forecasts

    env, second_version = two_versions
    ml.configure(env.settings.mlflow_tracking_uri())
    ml.set_alias(f"day_ahead_{MARKET}", "challenger", second_version)
    with KeyStore.open(env.settings) as keys:
        key = keys.create("acme", [MARKET]).token
    service = launcher.start(env.settings.home_dir, tmp_path / "shadow.log", env={"AURUM_SERVING__SHADOW": "true"})
    try:
        with service.client(key) as c:
            ids = [c.post("/v1/forecast", json={**BODY, "delivery_day": day}).json()["request_id"]
                   for day in ("2024-04-01", "2024-04-02")]
        deadline = time.monotonic() + 30
        while True:
            rows = read_forecasts(env.lake, MARKET, source="api")
            rows = rows[rows["request_id"].isin(ids)]
            if len(rows) >= 96 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        service.stop()
    served, shadow = rows[~rows["shadow"]], rows[rows["shadow"]]
    assert len(served) == 48 and set(served["model_alias"]) == {"champion"}
    assert set(served["model_version"]) == {env.champions[MARKET]}
    assert len(shadow) == 48 and set(shadow["model_alias"]) == {"challenger"}
    assert set(shadow["model_version"]) == {second_version} and set(shadow["request_id"]) == set(ids)
    pair = served.merge(shadow, on=["request_id", "delivery_start"], suffixes=("", "_shadow"))
    assert len(pair) == 48 and not np.allclose(pair["forecast"], pair["forecast_shadow"])  # a different model
