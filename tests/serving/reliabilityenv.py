"""Helpers of the serving reliability tests (``test_reliability.py``): a bounded load generator that keeps
every answer, the service's Prometheus counters, its process tree (supervisor, workers, archivers), a
private ``redis-server`` on a free loopback port, and a served market on the prod profile (PostgreSQL
catalog, MLflow and Feast registry, Redis online store).

A plain module (not a conftest), so the test imports it by name.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil  # a dependency of BentoML and Feast (uv.lock); the service tree is walked with it
import pytest

from serving import launcher

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_URL = os.environ.get("AURUM_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def missing(reason: str):
    """Fail with CI=true, skip elsewhere (as tests/conftest.py does)."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


def wait_for(condition: Callable[[], object], timeout: float, what: str, every: float = 0.1):
    """Poll ``condition`` until it is truthy (returned), or fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
    return value


# ---------------------------------------------------------------- load


@dataclass(frozen=True)
class Answer:
    """One request of a load run: when it was sent and answered (time.monotonic()), and how."""

    sent: float
    done: float
    request: dict
    status: int | None  # None: no HTTP answer (the connection failed)
    error: str | None  # the transport error, or what was wrong with the answer
    request_id: str | None


class Load:
    """``clients`` threads, each with its own httpx client, posting ``/v1/forecast`` bodies (round robin)
    until ``max_requests`` were sent in total, ``max_seconds`` passed, or :meth:`stop`. Every answer is kept
    (:class:`Answer`); ``check(request, response)`` returns what is wrong with a 200 answer, or None.

    ``keepalive=False`` opens a connection per request, so the kernel spreads requests over every worker
    that accepts on the shared socket (a kept-alive connection stays with one worker).
    """

    def __init__(self, url: str, key: str | None, bodies: list[dict], *, clients: int = 4, max_requests: int = 3000,
                 max_seconds: float = 20.0, keepalive: bool = True,
                 check: Callable[[dict, httpx.Response], str | None] | None = None):
        self.url, self.key, self.bodies, self.clients = url, key, bodies, clients
        self.max_requests, self.max_seconds, self.keepalive, self.check = max_requests, max_seconds, keepalive, check
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._sent = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, name=f"load-{i}", daemon=True) for i in range(clients)]
        self.started = self.ended = 0.0

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in self._threads), "a load client did not stop"
        self.ended = self.ended or time.monotonic()

    def wait(self) -> None:
        """Until the budget (requests or seconds) is used up."""
        for t in self._threads:
            t.join(timeout=self.max_seconds + 60)
        self.stop()

    def _ticket(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or self._sent >= self.max_requests or \
                    time.monotonic() > self.started + self.max_seconds:
                return None
            self._sent += 1
            return self._sent - 1

    def _client(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        limits = httpx.Limits(max_keepalive_connections=None if self.keepalive else 0)
        with httpx.Client(base_url=self.url, headers=headers, timeout=30, limits=limits) as client:
            while (n := self._ticket()) is not None:
                body = self.bodies[n % len(self.bodies)]
                sent = time.monotonic()
                try:
                    r = client.post("/v1/forecast", json=body)
                except httpx.TransportError as exc:
                    answer = Answer(sent, time.monotonic(), body, None, f"{type(exc).__name__}: {exc}", None)
                else:
                    done = time.monotonic()
                    problem = None
                    rid = None
                    if r.status_code == 200:
                        rid = r.json().get("request_id")
                        problem = self.check(body, r) if self.check else None
                    else:
                        problem = r.text[:300]
                    answer = Answer(sent, done, body, r.status_code, problem, rid)
                with self._lock:
                    self.answers.append(answer)

    # what the run saw
    def ok(self) -> list[Answer]:
        return [a for a in self.answers if a.status == 200 and a.error is None]

    def failed(self) -> list[Answer]:
        return [a for a in self.answers if a.status != 200 or a.error is not None]

    def latency_ms(self, q: float) -> float:
        import numpy as np

        return float(np.quantile([1000 * (a.done - a.sent) for a in self.answers], q)) if self.answers else float("nan")


# ---------------------------------------------------------------- metrics


def counter(metrics_text: str, name: str, **labels: str) -> float:
    """The sum of the samples of counter ``name`` (without ``_total``) whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_total" and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def counters_by(metrics_text: str, name: str, by: str, **labels: str) -> dict[str, float]:
    """Counter ``name`` summed per value of label ``by`` (among samples with ``labels``)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == name:
            for s in family.samples:
                if s.name == f"{name}_total" and all(s.labels.get(k) == v for k, v in labels.items()):
                    out[s.labels.get(by)] = out.get(s.labels.get(by), 0.0) + s.value
    return out


# ---------------------------------------------------------------- the service's processes


def alive(pid: int) -> bool:
    """A running process (a zombie, exited but not reaped yet, counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def workers(service: launcher.ServiceProcess) -> dict[int, psutil.Process]:
    """The live worker processes of a ``bentoml serve`` (children of the supervisor running the worker module)."""
    found = {}
    for p in psutil.Process(service.process.pid).children():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "_bentoml_impl.worker.service" in p.cmdline():
                found[p.pid] = p
        except psutil.NoSuchProcess:
            pass
    return found


def archivers(worker_pid: int) -> list[int]:
    """The forecast archiver children (``python -m serving.archiver``) of one worker."""
    try:
        children = psutil.Process(worker_pid).children()
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in children:
        try:
            if p.cmdline()[-2:] == ["-m", "serving.archiver"] and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def accepts_on(pid: int, port: int) -> bool:
    """The process holds an established connection on the service port (it accepted a request)."""
    try:
        return any(c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
                   for c in psutil.Process(pid).net_connections(kind="tcp"))
    except psutil.NoSuchProcess:
        return False


# ---------------------------------------------------------------- a private Redis


class PrivateRedis:
    """A ``redis-server`` of one test on a free loopback port, keeping nothing on disk; it can be killed and
    started again on the same port (the machine's shared Redis on 6379 is never touched)."""

    def __init__(self, workdir: Path, port: int | None = None):
        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server is not installed (a private Redis is started on a free loopback port)")
        self.binary, self.workdir, self.port = binary, Path(workdir), port or launcher.free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        import redis

        log = (self.workdir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)

        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server exited: {(self.workdir / 'redis.log').read_text()[-500:]}")
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        try:
            wait_for(up, timeout, f"redis-server on 127.0.0.1:{self.port}")
        finally:
            client.close()

    def kill(self) -> None:
        """Gone at once (SIGKILL): what a crash or a lost host looks like to the clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


# ---------------------------------------------------------------- a served market on the prod profile


MARKET = "SYN_NORTH"
START, END = dt.date(2023, 11, 1), dt.date(2024, 4, 15)  # as tests/marketenv.py


@dataclass
class ProdServedEnv:
    """A market served on the prod profile: what the service's process needs (``service_env``) and the
    handles to load the online store again."""

    settings: object
    store: object
    champion: str
    service_env: dict[str, str] = field(default_factory=dict)

    def materialize(self) -> None:
        from features import featurestore

        featurestore.materialize(self.store, dt.datetime.combine(START, dt.time(), dt.timezone.utc),
                                 dt.datetime.combine(END + dt.timedelta(days=2), dt.time(), dt.timezone.utc))


def pg_engine():
    import sqlalchemy as sa

    engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        engine.dispose()
        missing(f"PostgreSQL at {PG_URL} is not reachable: {exc.orig}")
    return engine


def build_prod_served_env(home: Path, redis_url: str, engine) -> ProdServedEnv:
    """SYN_NORTH as ``marketenv.build_served_env``, on the prod profile: Iceberg catalog, MLflow (own schema),
    Feast SQL registry (own project) and serving tables (own schema) in the PostgreSQL of ``engine``, the
    Feast online store in the Redis of ``redis_url``, files under ``home``. :func:`drop_prod_env` removes it."""
    import sqlalchemy as sa

    from features import featurestore
    from features.featuretables import compute_features
    from features.ingest import ingest_synthetic
    from features.lake import Lake
    from features.marketdata import MarketData
    from features.settings import AurumSettings
    from training import pipeline
    from training.specs import ModelSpec

    tag = f"rel_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "mlflow_{tag}"'))
    service_env = {
        "AURUM_PROFILE": "prod", "AURUM_POSTGRES_URL": PG_URL, "AURUM_REDIS_URL": redis_url,
        "AURUM_FEAST_PROJECT": f"aurum_{tag}", "AURUM_CATALOG__NAME": f"aurum_{tag}",
        "AURUM_CATALOG__WAREHOUSE": (home / "warehouse").as_uri(),
        "AURUM_MLFLOW__TRACKING_URI": f"{PG_URL}?options=-csearch_path%3Dmlflow_{tag}",
        "AURUM_MLFLOW__ARTIFACT_ROOT": (home / "mlartifacts").as_uri(),
        "AURUM_SERVING__DB_SCHEMA": f"serving_{tag}",
    }
    settings = AurumSettings(
        profile="prod", home=home, postgres_url=PG_URL, redis_url=redis_url, feast_project=f"aurum_{tag}",
        catalog={"name": f"aurum_{tag}", "warehouse": service_env["AURUM_CATALOG__WAREHOUSE"]},
        mlflow={"tracking_uri": service_env["AURUM_MLFLOW__TRACKING_URI"],
                "artifact_root": service_env["AURUM_MLFLOW__ARTIFACT_ROOT"]},
        serving={"db_schema": f"serving_{tag}"})
    env = ProdServedEnv(settings, None, "", service_env)
    lake = Lake.open(settings)
    ingest_synthetic(lake, [MARKET], START, END, seed=11)
    compute_features(lake, MarketData(lake).registry().get(MARKET))
    env.store = featurestore.apply(settings)
    result = pipeline.train(settings, MARKET, ModelSpec.of("lgbm", n_estimators=60, calibration_days=28),
                            backtest_days=14, baselines=())
    assert result.decision.promote, result.decision.reason
    env.champion = result.version
    env.materialize()
    return env


def drop_prod_env(env: ProdServedEnv, engine) -> None:
    """Remove what :func:`build_prod_served_env` made in PostgreSQL (and the project's online keys, if the
    Redis still answers)."""
    import sqlalchemy as sa

    from features import featurestore
    from features.lake import forget_sql_catalog

    s = env.settings
    tag = s.feast_project.removeprefix("aurum_")
    if env.store is not None:
        try:
            featurestore.drop_project(env.store)
        except Exception as exc:  # noqa: BLE001 - the private Redis may be gone already; the registry row goes below
            print(f"feast project {s.feast_project} not dropped through Feast: {exc}")
    with engine.begin() as conn:
        forget_sql_catalog(conn, s.catalog.name)
        for schema in (f"mlflow_{tag}", f"serving_{tag}"):
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
