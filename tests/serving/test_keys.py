"""API keys: issued once, stored hashed, verified from a short-lived cache, revoked, never leaked.

Runs on the SQLite store of the local profile and on the real PostgreSQL of the prod profile
(127.0.0.1:5432, database ``test``; skipped with the reason when absent, failed with CI=true).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from features.errors import ApiKeyError, UnknownMarketError
from features.marketdata import MarketData
from features.markets import Market, MarketRegistry
from features.settings import AurumSettings
from serving import keys as keys_module
from serving.commands.keys import app as keys_app
from serving.keys import KeyStore, Principal, bearer_token, database_url

ROOT = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("AURUM_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_settings(request, settings):
    return settings if request.param == "sqlite" else request.getfixturevalue("pg_serving_settings")


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def store(backend_settings, clock):
    s = KeyStore.open(backend_settings, registry=MarketRegistry(), clock=clock)
    yield s
    s.close()


def count_queries(engine: sa.Engine) -> list[str]:
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda conn, cursor, statement, *a: statements.append(statement))
    return statements


# --- issuing ------------------------------------------------------------------------------------------------------


def test_a_key_is_returned_once_and_carries_at_least_32_random_bytes(store):
    issued = store.create("acme", ["SYN_NORTH", "SYN_SOUTH"], name="trading desk")
    prefix, key_id, secret = issued.token.split("_", 2)
    assert prefix == "aurum" and key_id == issued.key_id and len(key_id) == 12
    assert len(base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))) >= 32
    assert issued.info.markets == ("SYN_NORTH", "SYN_SOUTH")
    assert issued.info.tenant == "acme" and issued.info.name == "trading desk" and not issued.info.admin
    other = store.create("acme", ["SYN_NORTH"])
    assert other.key_id != issued.key_id and other.token != issued.token


def test_only_a_salted_hash_of_the_key_is_stored(store):
    issued = store.create("acme", "SYN_NORTH", created_by="ops")
    secret = issued.token.split("_", 2)[2]
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(keys_module.api_keys).where(keys_module.api_keys.c.key_id == issued.key_id)
                           ).mappings().one()
    stored = " ".join(str(v) for v in row.values())
    assert issued.token not in stored and secret not in stored
    assert row["key_hash"] == hmac.new(bytes.fromhex(row["salt"]), issued.token.encode(), hashlib.sha256).hexdigest()
    assert row["created_by"] == "ops" and row["revoked_at"] is None
    # The same secret under another salt hashes differently: no two rows can be matched by hash.
    assert row["key_hash"] != hashlib.sha256(issued.token.encode()).hexdigest()


def test_markets_are_checked_against_the_registry(store):
    with pytest.raises(UnknownMarketError) as err:
        store.create("acme", ["SYN_NORTH", "NOPE"])
    assert "'NOPE'" in str(err.value) and "SYN_NORTH" in str(err.value)
    with pytest.raises(ApiKeyError, match=r"no markets given.*expected market codes or '\*'"):
        store.create("acme", " , ")
    with pytest.raises(ApiKeyError, match=r"mix '\*' with codes"):
        store.create("acme", "*,SYN_NORTH")
    for tenant in ("bad tenant!", "acme\n", ""):
        with pytest.raises(ApiKeyError, match=re.escape(f"tenant {tenant!r} is not valid; expected")):
            store.create(tenant, "SYN_NORTH")
    assert store.list() == []  # nothing half-created


def test_by_default_markets_come_from_the_lakes_registry(settings, lake):
    MarketData(lake).register_market(Market(code="MYZONE", name="My zone", timezone="Europe/Vienna", country="AT"))
    with KeyStore.open(settings) as store:
        assert store.create("acme", "MYZONE").info.markets == ("MYZONE",)
        with pytest.raises(UnknownMarketError, match="'OTHERZONE'"):
            store.create("acme", "OTHERZONE")


def test_principal_may_read_only_its_markets(store):
    p = store.verify(store.create("acme", "SYN_NORTH,SYN_SOUTH", admin=True).token)
    assert p.may_read("SYN_NORTH") and p.may_read("SYN_SOUTH")
    assert not p.may_read("SYN_EAST")  # admin does not widen the markets
    everything = store.verify(store.create("ops", "*").token)
    assert everything.markets == ("*",) and everything.may_read("SYN_EAST") and everything.may_read("ANY_LATER")
    assert not Principal("t", ("SYN_NORTH",), False, "k").may_read("*")


# --- verifying ----------------------------------------------------------------------------------------------------


def test_verify_returns_the_principal_of_a_valid_key(store):
    issued = store.create("acme", "SYN_NORTH", admin=True)
    assert store.verify(issued.token) == Principal(tenant="acme", markets=("SYN_NORTH",), admin=True,
                                                   key_id=issued.key_id)


def test_verify_rejects_wrong_unknown_and_malformed_keys(store):
    issued = store.create("acme", "SYN_NORTH")
    prefix, key_id, secret = issued.token.split("_", 2)
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert store.verify(f"{prefix}_{key_id}_{flipped}") is None
    assert store.verify(f"{prefix}_{'0' * 12}_{secret}") is None  # no such key id
    queries = count_queries(store.engine)
    for bad in (None, "", "Bearer x", issued.token + "\n", issued.token[:-5], key_id, secret, 42,
                f"other_{key_id}_{secret}"):
        assert store.verify(bad) is None
    assert queries == []  # malformed tokens never reach the database
    assert store.verify(issued.token) is not None


def test_the_hot_path_reads_the_database_once_per_ttl(store, clock):
    issued = store.create("acme", "SYN_NORTH")
    queries = count_queries(store.engine)
    first = store.verify(issued.token)
    assert len(queries) == 1
    for _ in range(100):
        assert store.verify(issued.token) == first
    assert len(queries) == 1
    clock.now += store.cache_seconds + 0.001
    assert store.verify(issued.token) == first
    assert len(queries) == 2
    bad = issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B")
    assert store.verify(bad) is None and store.verify(bad) is None
    assert len(queries) == 3  # a rejection is cached too


def test_revocation_is_immediate_here_and_within_the_ttl_in_other_processes(backend_settings, clock):
    """Two stores on one database stand for the CLI and a running service worker."""
    registry = MarketRegistry()
    with KeyStore.open(backend_settings, registry=registry, clock=clock) as cli, \
            KeyStore.open(backend_settings, registry=registry, clock=clock) as worker:
        issued = cli.create("acme", "SYN_NORTH")
        assert cli.verify(issued.token) is not None and worker.verify(issued.token) is not None
        revoked = cli.revoke(issued.key_id)
        assert revoked.revoked_at is not None and not revoked.active
        assert cli.verify(issued.token) is None  # the revoking process forgets it at once
        clock.now += worker.cache_seconds - 1
        assert worker.verify(issued.token) is not None  # still inside the worker's TTL: documented
        clock.now += 1.001
        assert worker.verify(issued.token) is None


def test_cache_ttl_comes_from_the_settings_and_zero_disables_it(settings, clock):
    s = settings.model_copy(update={"serving": settings.serving.model_copy(update={"key_cache_seconds": 0})})
    with KeyStore.open(s, registry=MarketRegistry(), clock=clock) as store:
        assert store.cache_seconds == 0
        issued = store.create("acme", "SYN_NORTH")
        queries = count_queries(store.engine)
        store.verify(issued.token)
        store.verify(issued.token)
        assert len(queries) == 2
    assert AurumSettings().serving.key_cache_seconds == 30


def test_the_cache_stays_bounded_under_a_flood_of_bad_keys(store, monkeypatch):
    monkeypatch.setattr(keys_module, "CACHE_MAX_ENTRIES", 10)
    for i in range(35):
        assert store.verify(f"aurum_{i:012x}_{'x' * 43}") is None
    assert len(store._cache) <= 10


# --- listing, revoking --------------------------------------------------------------------------------------------


def test_list_shows_keys_without_secrets_and_filters(store):
    a = store.create("acme", "SYN_NORTH", name="a")
    b = store.create("beta", "*")
    store.revoke(b.key_id)
    listed = store.list()
    assert [k.key_id for k in listed] == [a.key_id, b.key_id]
    assert not any(hasattr(k, attr) for k in listed for attr in ("token", "key_hash", "salt"))
    assert a.token not in repr(listed) and b.token not in repr(listed)
    assert [k.key_id for k in store.list("beta")] == [b.key_id]
    assert [k.key_id for k in store.list(include_revoked=False)] == [a.key_id]


def test_revoke_names_an_unknown_id_and_keeps_the_first_revocation_time(store):
    with pytest.raises(ApiKeyError, match=r"no API key with id 'feedfeedfeed'"):
        store.revoke("feedfeedfeed")
    issued = store.create("acme", "SYN_NORTH")
    first = store.revoke(issued.key_id).revoked_at
    assert store.revoke(issued.key_id).revoked_at == first


# --- never leaked -------------------------------------------------------------------------------------------------


def test_keys_never_appear_in_reprs_or_logs(store, caplog):
    caplog.set_level(logging.DEBUG)
    issued = store.create("acme", "SYN_NORTH", name="desk")
    secret = issued.token.split("_", 2)[2]
    principal = store.verify(issued.token)
    store.verify(issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B"))  # wrong secret: logged warning
    store.revoke(issued.key_id)
    store.verify(issued.token)
    assert issued.key_id in caplog.text  # the log does speak of the key, by id
    for text in (repr(issued), str(issued), repr(principal), str(principal), repr(issued.info), caplog.text):
        assert secret not in text and issued.token not in text


# --- where the keys live ------------------------------------------------------------------------------------------


def test_database_url_per_profile(tmp_path):
    assert database_url(AurumSettings(home=tmp_path)) == f"sqlite:///{tmp_path.resolve() / 'serving.db'}"
    prod = AurumSettings(profile="prod", postgres_url="postgresql+psycopg2://u@db:5432/aurum")
    assert database_url(prod) == "postgresql+psycopg2://u@db:5432/aurum?options=-csearch_path%3Dserving"
    other = AurumSettings(profile="prod", serving={"database_url": "postgresql+psycopg2://u@db/x?sslmode=require",
                                                   "db_schema": "keys"})
    assert database_url(other) == "postgresql+psycopg2://u@db/x?sslmode=require&options=-csearch_path%3Dkeys"


@pytest.mark.postgres
def test_postgres_keeps_keys_in_their_own_schema(pg_serving_settings):
    schema = pg_serving_settings.serving.db_schema
    with KeyStore.open(pg_serving_settings, registry=MarketRegistry()) as store:
        issued = store.create("acme", "SYN_NORTH")
        assert store.verify(issued.token).tenant == "acme"
    engine = sa.create_engine(PG_URL)
    with engine.connect() as conn:
        tables = conn.execute(sa.text("SELECT table_schema FROM information_schema.tables WHERE table_name = 'api_keys'"
                                      " AND table_schema = :s"), {"s": schema}).scalars().all()
    engine.dispose()
    assert tables == [schema]
    # A second opener (another worker) finds the schema and table and sees the key.
    with KeyStore.open(pg_serving_settings, registry=MarketRegistry()) as again:
        assert again.verify(issued.token).key_id == issued.key_id


# --- the CLI ------------------------------------------------------------------------------------------------------


def test_cli_create_list_revoke(tmp_path, monkeypatch):
    monkeypatch.setenv("AURUM_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    created = runner.invoke(keys_app, ["create", "--tenant", "acme", "--markets", "SYN_NORTH,SYN_SOUTH",
                                       "--name", "desk"])
    assert created.exit_code == 0, created.output
    token = next(w for w in created.output.split() if w.startswith("aurum_"))
    assert f"Authorization: Bearer {token}" in created.output and f"X-API-Key: {token}" in created.output
    with KeyStore.open(AurumSettings()) as store:
        principal = store.verify(token)
    assert principal.tenant == "acme" and principal.markets == ("SYN_NORTH", "SYN_SOUTH")

    listed = runner.invoke(keys_app, ["list"])
    assert listed.exit_code == 0, listed.output
    assert principal.key_id in listed.output and "SYN_NORTH,SYN_SOUTH" in listed.output and "active" in listed.output
    assert token not in listed.output and token.split("_", 2)[2] not in listed.output

    revoked = runner.invoke(keys_app, ["revoke", principal.key_id])
    assert revoked.exit_code == 0, revoked.output
    assert f"revoked {principal.key_id}" in revoked.output and "within 30 s" in revoked.output
    with KeyStore.open(AurumSettings()) as store:
        assert store.verify(token) is None
    assert "revoked" in runner.invoke(keys_app, ["list"]).output
    assert "no API keys" in runner.invoke(keys_app, ["list", "--active"]).output


def test_the_aurum_command_reports_an_unknown_market_and_issues_keys(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AURUM_")} | {"AURUM_HOME": str(tmp_path / "home")}
    aurum = str(ROOT / ".venv" / "bin" / "aurum")
    bad = subprocess.run([aurum, "keys", "create", "--tenant", "acme", "--markets", "SYN_NORTH,NOPE"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2, bad.stderr
    assert "unknown market 'NOPE'" in bad.stderr
    ok = subprocess.run([aurum, "keys", "create", "--tenant", "acme", "--markets", "*", "--admin"],
                        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert ok.returncode == 0, ok.stderr
    token = next(w for w in ok.stdout.split() if w.startswith("aurum_"))
    with KeyStore.open(AurumSettings(home=tmp_path / "home")) as store:
        p = store.verify(token)
    assert p.admin and p.markets == ("*",)


def test_bearer_token_reads_either_header():
    assert bearer_token("Bearer aurum_x") == "aurum_x"
    assert bearer_token("bearer  aurum_x ") == "aurum_x"
    assert bearer_token(None, "aurum_y") == "aurum_y"
    assert bearer_token("Basic abc", "aurum_y") == "aurum_y"
    assert bearer_token("Basic abc") is None and bearer_token(None, " ") is None
