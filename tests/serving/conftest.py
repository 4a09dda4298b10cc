"""Serving fixtures: a synthetic market with an approved champion.

``served_env`` is read-only and shared by the session (tests that change the registry or the
online store build their own with ``marketenv.build_served_env``). ``liveservice`` starts a real
``bentoml serve`` of it.
"""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from features.settings import AurumSettings
from marketenv import MarketEnv, build_served_env

PG_URL = os.environ.get("AURUM_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def served_env(tmp_path_factory) -> MarketEnv:
    """SYN_NORTH 2023-11-01..2024-04-15 with an approved LightGBM champion and a materialized online store."""
    return build_served_env(tmp_path_factory.mktemp("served") / "home")


@pytest.fixture
def pg_serving_settings(tmp_path):
    """Prod-profile settings whose serving tables live in a PostgreSQL schema of this test alone (dropped after)."""
    engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        reason = f"PostgreSQL at {PG_URL} is not reachable: {exc.orig}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: required)")
        pytest.skip(reason)
    schema = f"serving_test_{uuid.uuid4().hex[:10]}"
    yield AurumSettings(profile="prod", home=tmp_path / "home", postgres_url=PG_URL, serving={"db_schema": schema})
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()
