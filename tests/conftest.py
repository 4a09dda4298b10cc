"""Shared fixtures: a lake in a temporary home, the PostgreSQL catalog of the prod profile, real data.

Outside CI a missing PostgreSQL or data folder skips the tests that need it, with the reason;
with CI=true it fails them, so a green CI run always exercised the real services.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from features.lake import Lake, forget_sql_catalog
from features.settings import AurumSettings

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_URL = os.environ.get("AURUM_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parents[1]


def missing(reason: str):
    """Fail in CI, skip elsewhere."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    """No AURUM_ variable of the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("AURUM_"):
            monkeypatch.delenv(key)


@pytest.fixture
def settings(tmp_path) -> AurumSettings:
    return AurumSettings(home=tmp_path / "home")


@pytest.fixture
def lake(settings) -> Lake:
    return Lake.open(settings)


@pytest.fixture
def pg_settings(tmp_path):
    """Prod-profile settings on the real PostgreSQL, in a catalog name of this test alone."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(PG_URL)
        with engine.connect():
            pass
    except sqlalchemy.exc.OperationalError as exc:
        missing(f"PostgreSQL at {PG_URL} is not reachable: {exc.orig}")
    name = f"aurum_test_{uuid.uuid4().hex[:10]}"
    s = AurumSettings(profile="prod", postgres_url=PG_URL,
                      catalog={"name": name, "warehouse": (tmp_path / "warehouse").as_uri()})
    yield s
    with engine.begin() as conn:
        forget_sql_catalog(conn, name)  # a test that never created the catalog leaves nothing to delete
    engine.dispose()


@pytest.fixture
def redis_available():
    """The Redis of the prod profile on 127.0.0.1:6379."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        missing(f"Redis at 127.0.0.1:6379 is not reachable: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = Path(os.environ.get("AURUM_TEST_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (d / "epf").is_dir() or not (d / "entsoe").is_dir():
        missing(f"real market data folder {d} (with epf/ and entsoe/) is absent")
    return d
