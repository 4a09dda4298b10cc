"""Reliability of the forecast service under load and failures: a real ``bentoml serve`` on loopback, the
real MLflow store and the real online stores (SQLite; Redis in a private ``redis-server``).

- a sustained load run (bounded in requests and time) answers every request validly, without a 5xx, and
  the service's own counters agree with what the clients sent;
- a worker killed with SIGKILL mid-run is restarted by the supervisor; only the requests it had in flight
  fail (counted and reported), and its orphaned archiver flushes what it got and exits;
- the Redis online store going away and coming back: forecasts are answered by the flagged baseline
  (or a 503 naming the online store), never a 500, and are the champion's again once Redis is back and
  loaded, without restarting the service.

A champion swap under load is ``test_champion_swap.py``; the registry going away is ``test_runtime.py``.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import numpy as np
import pytest

from features.errors import OnlineStoreUnavailableError
from models.forecaster import quantile_column
from reliabilityenv import (Load, PrivateRedis, accepts_on, alive, archivers, build_prod_served_env, counter,
                            counters_by, drop_prod_env, pg_engine, wait_for, workers)
from serving import launcher
from serving.keys import KeyStore
from serving.runtime import OnlineStoreGuard

MARKET = "SYN_NORTH"
DEFAULT_LEVELS = [0.1, 0.5, 0.9]
OK_DAYS = [f"2024-03-{d:02d}" for d in range(28, 32)] + [f"2024-04-{d:02d}" for d in range(1, 13)]
DEGRADED_DAY = "2024-04-18"  # after the synthetic data ends: the weekly-naive baseline answers
LEVEL_SETS = [None, [0.1, 0.9], [0.5]]  # None: the default levels
BODIES = [{"market": MARKET, "delivery_day": d, **({"quantiles": q} if q else {})}
          for d in [*OK_DAYS, DEGRADED_DAY] for q in LEVEL_SETS]


def forecast_checker(champion: str):
    """What is wrong with a 200 answer to one of ``BODIES`` (None when it is a valid forecast)."""
    def check(body: dict, r: httpx.Response) -> str | None:
        b = r.json()
        day = body["delivery_day"]
        levels = body.get("quantiles", DEFAULT_LEVELS)
        if (b["market"], b["delivery_day"]) != (MARKET, day):
            return f"answer for {b['market']} {b['delivery_day']}"
        if len(b["hours"]) != (23 if day == "2024-03-31" else 24):
            return f"{len(b['hours'])} hours"
        if len(b["request_id"]) != 32:
            return f"request id {b['request_id']!r}"
        if day == DEGRADED_DAY:
            if b["quality"] != "degraded" or b["model"]["alias"] != "baseline" or \
                    "weekly-naive baseline" not in b["quality_reason"]:
                return f"expected the degraded baseline; got {b['quality']} from {b['model']}"
        elif b["quality"] != "ok" or b["model"]["version"] != champion or b["model"]["alias"] != "champion":
            return f"expected the champion v{champion}; got {b['quality']} from {b['model']}"
        cols = [quantile_column(q) for q in levels]
        values = np.array([[h["values"][c] for c in cols] for h in b["hours"]], dtype=float)
        if not np.isfinite(values).all() or (np.diff(values, axis=1) < 0).any():
            return "quantiles not finite and non-decreasing"
        return None
    return check


def tenant_key(settings) -> str:
    with KeyStore.open(settings) as keys:
        return keys.create("acme", [MARKET]).token


# ---------------------------------------------------------------- sustained load


@pytest.mark.slow
def test_sustained_load_has_no_server_error_and_the_counters_agree(served_env, tmp_path, record_property):
    """4 clients, at most 3000 requests or 20 s: every answer a valid forecast, none a 5xx, and
    ``aurum_requests_total`` and BentoML's own request counter count exactly what was sent."""
    key = tenant_key(served_env.settings)
    service = launcher.start(served_env.settings.home_dir, tmp_path / "serve.log")
    try:
        with service.client() as c:
            before = c.get("/metrics").text
        load = Load(service.url, key, BODIES, clients=4, max_requests=3000, max_seconds=20.0,
                    check=forecast_checker(served_env.champions[MARKET]))
        with load:
            load.wait()
        sent = len(load.answers)
        seconds = load.ended - load.started
        statuses = {}
        for a in load.answers:
            statuses[a.status] = statuses.get(a.status, 0) + 1

        def counted() -> tuple[dict, dict]:
            with service.client() as c:
                after = c.get("/metrics").text
            ours = counters_by(after, "aurum_requests", "status", endpoint="forecast")
            ours = {s: n - counters_by(before, "aurum_requests", "status", endpoint="forecast").get(s, 0.0)
                    for s, n in ours.items()}
            theirs = counters_by(after, "bentoml_service_request", "http_response_code", endpoint="/v1/forecast")
            theirs = {s: n - counters_by(before, "bentoml_service_request", "http_response_code",
                                         endpoint="/v1/forecast").get(s, 0.0) for s, n in theirs.items()}
            return ({s: n for s, n in ours.items() if n}, {s: n for s, n in theirs.items() if n})

        # BentoML counts a request after its answer is sent: wait (bounded) for the last ones to be counted
        wait_for(lambda: counted() == ({"200": sent}, {"200": sent}), 15, "the counters to reach the requests sent")
        ok, degraded = load.ok(), sum(a.request["delivery_day"] == DEGRADED_DAY for a in load.ok())
    finally:
        service.stop()
    print(f"sustained load: {sent} requests in {seconds:.1f} s ({sent / seconds:.0f}/s), statuses {statuses}, "
          f"p50 {load.latency_ms(0.5):.1f} ms, p99 {load.latency_ms(0.99):.1f} ms, {degraded} baseline answers")
    record_property("load_requests", sent)
    record_property("load_seconds", round(seconds, 1))
    record_property("load_p99_ms", round(load.latency_ms(0.99), 1))
    assert sent >= 500, f"only {sent} requests in {seconds:.0f} s: the load did not run"
    assert statuses == {200: sent}, statuses
    assert not load.failed(), [(a.request, a.status, a.error) for a in load.failed()[:5]]
    assert len(ok) == sent and len({a.request_id for a in ok}) == sent  # valid, with unique request ids
    assert degraded > 0  # the baseline path was under load too


# ---------------------------------------------------------------- a worker killed mid-run


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_only_its_requests_in_flight_fail(served_env, tmp_path, record_property):
    """Two workers under load; one is killed with SIGKILL while it holds a request.

    The bound on failed requests: each client has one request in flight at a time and never retries, and
    the listening socket belongs to the supervisor and is shared by the workers, so connections not yet
    accepted are taken by the surviving worker. Only the requests the killed worker had accepted and not
    answered can fail: at most one per client. The killed worker's archiver is orphaned: it reads its pipe
    to the end, commits what it got and exits, so every forecast answered more than a second before the
    kill is in the archive (the worker sends to it every 0.25 s).
    """
    from serving.archive import read_forecasts

    clients = 4
    key = tenant_key(served_env.settings)
    log = tmp_path / "serve.log"
    service = launcher.start(served_env.settings.home_dir, log, env={"AURUM_SERVING__WORKERS": "2"}, timeout=180)
    port = int(service.url.rsplit(":", 1)[1])
    load = Load(service.url, key, BODIES, clients=clients, max_requests=50_000, max_seconds=200.0, keepalive=False,
                check=forecast_checker(served_env.champions[MARKET]))
    try:
        first = wait_for(lambda: len(w := workers(service)) == 2 and all(archivers(p) for p in w) and w, 120,
                         "two workers, each with its archiver")
        with load:
            # both workers serve (a connection per request spreads them), then kill one that holds a request
            seen: set[int] = set()
            wait_for(lambda: seen.update(p for p in first if accepts_on(p, port)) or seen == set(first), 120,
                     "both workers to accept requests", every=0.01)
            wait_for(lambda: len(load.answers) >= 200, 60, "200 answers before the kill")
            victim = wait_for(lambda: next((p for p in first if accepts_on(p, port)), None), 30,
                              "a worker holding a connection", every=0.001)
            [orphan] = archivers(victim)
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: not alive(orphan), 60, "the orphaned archiver to flush and exit")
            orphan_gone_after = time.monotonic() - killed_at
            new = wait_for(lambda: set(workers(service)) - set(first), 120, "the supervisor to start a new worker")
            restarted_after = time.monotonic() - killed_at
            [new_pid] = new
            wait_for(lambda: archivers(new_pid) and accepts_on(new_pid, port), 120,
                     "the new worker to open its runtime and accept requests", every=0.01)
            serving_after = time.monotonic() - killed_at
            with service.client() as c:
                assert c.get("/readyz").status_code == 200
            back = len(load.answers)
            wait_for(lambda: len(load.answers) >= back + 200, 60, "200 answers after the restart")
        assert len(workers(service)) == 2 and victim not in workers(service)
        archiver_log = [line for line in service.log_text().splitlines() if "forecast archiver:" in line and
                        "rows in" in line]

        # The archive, read while the service still runs (its live archivers commit within about a second):
        # every forecast answered more than a second before the kill is there, the orphan's included; lost
        # can be only what the killed worker answered in its last second.
        answered = {a.request_id: a.done for a in load.ok()}
        days = sorted(b["delivery_day"] for b in BODIES)
        must = {r for r, done in answered.items() if not killed_at - 1.0 <= done <= killed_at + 0.5}
        deadline = time.monotonic() + 90
        while True:
            rows = read_forecasts(served_env.lake, MARKET, days[0], f"{days[-1]}T23:59:59Z", source="api",
                                  columns=("request_id",))
            have = set(rows["request_id"]) & answered.keys()
            if have >= must or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        absent = sorted(round(answered[r] - killed_at, 2) for r in must - have)
        assert not absent, f"{len(absent)} forecasts answered outside the kill's second are not archived " \
                           f"(answered at these seconds from the kill): {absent[:20]} ... {absent[-5:]}"
        lost = sorted(answered.keys() - have)
    finally:
        load.stop()
        service.stop()

    answers = load.answers
    failed = load.failed()
    after_kill = [a for a in answers if a.sent > killed_at + 0.5]
    print(f"worker killed: {len(failed)} of {len(answers)} requests failed ({[a.error for a in failed]}); "
          f"new worker after {restarted_after:.1f} s, serving after {serving_after:.1f} s; orphaned archiver "
          f"gone after {orphan_gone_after:.1f} s")
    print(f"archive: {len(have)} of {len(answered)} answered forecasts, {len(lost)} lost in the killed worker's "
          f"last second; archiver exits logged: {archiver_log}")
    record_property("failed_requests_at_kill", len(failed))
    record_property("requests", len(answers))
    record_property("worker_restart_seconds", round(restarted_after, 1))
    record_property("new_worker_serving_seconds", round(serving_after, 1))
    assert not [a for a in answers if a.status is not None and a.status >= 500]
    assert len(failed) <= clients, f"{len(failed)} failed requests; at most one per client may be in flight"
    for a in failed:  # only requests in flight at the kill: transport errors, sent before, ended right after
        assert a.status is None and a.sent < killed_at < a.done < killed_at + 5, a
    assert after_kill and all(a.status == 200 and a.error is None for a in after_kill)
    assert not [a for a in answers if a.status == 200 and a.error], [a.error for a in answers if a.error][:3]
    record_property("archive_lost_forecasts", len(lost))
    assert len(archiver_log) == 1 and int(archiver_log[0].split("forecast archiver: ")[1].split()[0]) > 0, \
        "the orphaned archiver logs the rows it committed before it exits (and no other archiver exited)"


# ---------------------------------------------------------------- the Redis online store going away


def test_lookups_fail_fast_while_the_online_store_is_down_and_resume_by_themselves():
    """OnlineStoreGuard on a reader whose store goes away: one lookup meets the outage, the next ones fail
    at once without touching the store, a background probe finds it back; other errors pass through."""
    import datetime as dt
    import threading

    import redis

    class Reader:
        up, calls = True, []

        def vectors(self, market, day, timezone, *, gate_closure):
            self.calls.append(threading.current_thread().name)
            if not self.up:  # as the Redis reader raises it (features.featurestore._RedisRows)
                raise OnlineStoreUnavailableError("the Redis online store does not answer") from \
                    redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
            if market == "BAD":
                raise ValueError("not an outage")
            return "vectors"

    reader = Reader()
    guard = OnlineStoreGuard(reader, "Redis at 127.0.0.1:1", retry_s=0.05)
    lookup = ("SYN_NORTH", dt.date(2024, 4, 12), "Europe/Berlin")
    try:
        assert guard.vectors(*lookup, gate_closure=dt.time(12)) == "vectors"
        with pytest.raises(ValueError, match="not an outage"):
            guard.vectors("BAD", *lookup[1:], gate_closure=dt.time(12))
        assert guard.down is None
        reader.up = False
        with pytest.raises(OnlineStoreUnavailableError, match=r"Redis at 127\.0\.0\.1:1\) does not answer: "
                                                              r"ConnectionError: Error 111") as first:
            guard.vectors(*lookup, gate_closure=dt.time(12))
        assert isinstance(first.value.__cause__.__cause__, redis.exceptions.ConnectionError)
        here = threading.current_thread().name
        mine = reader.calls.count(here)
        for _ in range(50):
            with pytest.raises(OnlineStoreUnavailableError, match="does not answer"):
                guard.vectors(*lookup, gate_closure=dt.time(12))
        assert reader.calls.count(here) == mine  # failed fast: the store was not asked again by requests
        wait_for(lambda: reader.calls.count("online-store-probe") >= 2, 10, "the probe to try the store")
        reader.up = True
        wait_for(lambda: guard.down is None, 10, "the probe to find the store back")
        assert guard.vectors(*lookup, gate_closure=dt.time(12)) == "vectors"
    finally:
        guard.close()



@pytest.mark.slow
@pytest.mark.postgres
def test_the_redis_online_store_going_away_and_coming_back(tmp_path, record_property):
    """The prod profile with the online store in a private ``redis-server``, killed and started again.

    While it is gone: the weekly-naive baseline answers (200, ``quality: degraded``, the reason names the
    online store), and a day the baseline cannot answer is a 503 naming the online store; only the first
    request waits for the Redis client's connection retries, the others fail over at once. Once it is back
    and loaded again, the champion answers, without restarting the service.
    """
    engine = pg_engine()
    redis = PrivateRedis(tmp_path / "redis")
    redis.start()
    env = service = None
    answers: list[tuple[str, int, dict, float]] = []  # phase, status, body, seconds

    def ask(c: httpx.Client, phase: str, day: str = "2024-04-12") -> tuple[int, dict]:
        t = time.monotonic()
        r = c.post("/v1/forecast", json={"market": MARKET, "delivery_day": day})
        answers.append((phase, r.status_code, r.json(), time.monotonic() - t))
        assert r.status_code < 500 or r.status_code == 503, (phase, r.status_code, r.text[:500])
        return r.status_code, r.json()

    try:
        env = build_prod_served_env(tmp_path / "home", redis.url, engine)
        key = tenant_key(env.settings)
        service = launcher.start(env.settings.home_dir, tmp_path / "serve.log", env=env.service_env, timeout=180)
        with service.client(key) as c:
            for _ in range(5):
                status, body = ask(c, "up")
                assert status == 200 and body["quality"] == "ok" and body["model"]["version"] == env.champion

            redis.kill()
            down = [ask(c, "down")]
            outage_until = time.monotonic() + 8  # long enough for the probe to fail again (each try ~3-6 s)
            while time.monotonic() < outage_until:
                down.append(ask(c, "down"))
                time.sleep(0.1)
            for status, body in down:
                assert status == 200 and body["quality"] == "degraded" and body["model"]["alias"] == "baseline", body
                assert "online feature store" in body["quality_reason"] and "does not answer" in body["quality_reason"]
                assert "weekly-naive baseline" in body["quality_reason"]
            status, body = ask(c, "down", day="2020-01-10")  # no prices a week before either: nothing can answer
            assert status == 503 and "online feature store" in body["error"], body
            r = c.post("/v1/scenarios", json={"markets": [MARKET], "delivery_days": ["2024-04-12"], "scenarios": [
                {"name": "calm", "overrides": [{"feature": "wind_forecast_mw", "op": "scale", "value": 0.5}]}]})
            assert r.status_code == 200 and not r.json()["results"], r.text  # what-ifs need the model's inputs
            [error] = r.json()["errors"]
            assert error["status"] == 503 and "online feature store" in error["error"], error
            assert c.get("/readyz").status_code == 200  # the service still answers; a restart would not help
            metrics = c.get("/metrics").text
            assert counter(metrics, "aurum_degraded_forecasts", reason="online_store_unavailable") == len(down)
            assert counter(metrics, "aurum_requests", endpoint="forecast", status="500") == 0

            redis.start()  # the same port, empty: the service finds it again by itself
            back_at = time.monotonic()
            wait_for(lambda: "does not answer" not in _reason(ask(c, "empty")[1]), 60,
                     "the service to find Redis again", every=0.2)
            reconnected = time.monotonic() - back_at
            env.materialize()
            wait_for(lambda: ask(c, "loaded")[1].get("quality") == "ok", 60, "the champion to answer again", every=0.2)
            recovered = time.monotonic() - back_at
            for _ in range(5):
                status, body = ask(c, "loaded")
                assert status == 200 and body["quality"] == "ok" and body["model"]["version"] == env.champion
            metrics = c.get("/metrics").text
        assert counter(metrics, "aurum_requests", endpoint="forecast", status="500") == 0
    finally:
        if service is not None:
            service.stop()
        if env is not None:
            if not redis.running:
                redis.start()  # the project's keys and registry entry are dropped through Feast
            drop_prod_env(env, engine)
        redis.kill()
        engine.dispose()

    down_seconds = [s for phase, _, _, s in answers if phase == "down"]
    empty = [b.get("quality_reason") for phase, _, b, _ in answers if phase == "empty"]
    print(f"redis gone: first answer after {down_seconds[0]:.2f} s, the next ones p50 "
          f"{1000 * np.median(down_seconds[1:]):.0f} ms; back: found again after {reconnected:.1f} s, champion "
          f"again {recovered:.1f} s after the restart (materialize included); {len(answers)} requests, statuses "
          f"{sorted({s for _, s, _, _ in answers})}")
    record_property("redis_down_first_answer_s", round(down_seconds[0], 2))
    record_property("redis_down_requests", len(down_seconds))
    record_property("redis_recovered_s", round(recovered, 1))
    assert float(np.median(down_seconds[1:])) < 1.0, "after the first failure, requests must not wait for Redis"
    assert all(s < 500 or s == 503 for _, s, _, _ in answers)
    assert empty and "features missing" in empty[-1]  # an empty Redis: the store answers, the features are gone


def _reason(body: dict) -> str:
    """Why an answer is not the champion's: the degraded forecast's reason or the error."""
    return body.get("quality_reason") or body.get("error") or ""
