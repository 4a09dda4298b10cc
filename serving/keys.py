"""API keys of the forecast service: issued once, stored hashed, verified on every request.

A key reads ``aurum_<key id>_<secret>``: the key id (12 hex digits) names the stored row, the secret
is 32 random bytes (``secrets.token_urlsafe(32)``, 256 bits). The plaintext exists only in the
:class:`IssuedKey` that :meth:`KeyStore.create` returns; the database keeps the key id, tenant, markets
(or ``*`` for every market, including markets registered later), the admin flag, who created it and
when, when it was revoked, a per-key random salt and ``HMAC-SHA256(salt, key)``.

Why a fast salted hash and not bcrypt/scrypt/Argon2: slow hashes protect *low-entropy* secrets
(passwords) against guessing after a database leak. A 256-bit random secret cannot be guessed at
any hash speed, so a slow hash would only add tens of milliseconds to every uncached request. The
salt keeps equal hashes from ever lining up across rows or databases, and hashing the whole key
(key id included) binds each hash to its row.

Verification is constant-time (``hmac.compare_digest``) and cached: a verified key is trusted for
``settings.serving.key_cache_seconds`` (default 30 s) without a database read, so the hot path is a
dictionary lookup. Invariant: **a revocation takes effect immediately in the process that revokes,
and in every other process (service workers) within that TTL.** Rejections are cached too (a token
cannot become valid later: keys are never re-issued), so a flood of bad tokens costs no database
reads either. The cache is keyed by a SHA-256 digest of the token, never by the token itself.

Keys and secrets never appear in logs, reprs or :meth:`KeyStore.list`.

The serving database (this module's :func:`open_engine`, shared with :mod:`serving.scenarios`) is
SQLite ``home/serving.db`` on the ``local`` profile and PostgreSQL schema ``serving``
(``settings.serving.db_schema``, created if missing) on ``prod``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa

from features.errors import ApiKeyError, ServingStoreUnavailableError
from features.markets import MarketRegistry
from features.settings import AurumSettings

log = logging.getLogger(__name__)

PREFIX = "aurum"
ALL_MARKETS = "*"
KEY_ID_HEX = 12  # 48 bits: a name for the row, not a secret; collisions are retried at insert
SECRET_BYTES = 32
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOKEN = re.compile(rf"{PREFIX}_([0-9a-f]{{{KEY_ID_HEX}}})_([A-Za-z0-9_-]{{43,128}})")  # fullmatch: no trailing newline
CACHE_MAX_ENTRIES = 50_000

metadata = sa.MetaData()
api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("key_id", sa.String(KEY_ID_HEX), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("markets", sa.Text, nullable=False),  # "*" or sorted comma-separated market codes
    sa.Column("admin", sa.Boolean, nullable=False),
    sa.Column("salt", sa.String(32), nullable=False),  # 16 random bytes, hex
    sa.Column("key_hash", sa.String(64), nullable=False),  # HMAC-SHA256(salt, full key), hex
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)


# ----------------------------------------------------------------------------------------------------------------
# The serving database


def database_url(settings: AurumSettings) -> str:
    """The serving database of the active profile, secrets included (never print it; see :func:`redact`).

    ``local``: SQLite ``home/serving.db``; ``prod``: ``AURUM_POSTGRES_URL`` with ``search_path`` set to the
    serving schema. ``settings.serving.database_url`` overrides either (the schema still applies to PostgreSQL).
    """
    s = settings.serving
    if s.database_url:
        url = s.database_url
    elif settings.profile == "local":
        return f"sqlite:///{settings.home_dir / 'serving.db'}"
    else:
        url = settings.postgres_url
    if not url.startswith("postgresql"):
        return url
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{s.db_schema}"


def redact(url: str) -> str:
    """A database URL without its password."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def open_engine(settings: AurumSettings, tables: Iterable[sa.Table] = ()) -> sa.Engine:
    """An engine on the serving database, with the schema (PostgreSQL) and ``tables`` created if missing.

    Creation is safe against concurrent openers: PostgreSQL takes a transaction-scoped advisory lock,
    SQLite serialises writers itself and the DDL says ``IF NOT EXISTS``.

    Raises:
        ServingStoreUnavailableError: the database does not answer.
    """
    url = database_url(settings)
    if url.startswith("sqlite:///"):
        settings.home_dir.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = sa.create_engine(url, pool_pre_ping=True,
                                  connect_args={"connect_timeout": 5} if url.startswith("postgresql") else {})
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('aurum.serving.ddl'))"))
                conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{settings.serving.db_schema}"'))
            for table in tables:
                conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
                for index in table.indexes:
                    conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        raise ServingStoreUnavailableError(
            f"the serving database at {redact(url)} does not answer: {exc.orig}") from exc
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets service workers read while `aurum keys` writes; the busy timeout makes writers take turns.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """A stored time as an aware UTC datetime (SQLite returns naive UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# ----------------------------------------------------------------------------------------------------------------
# What callers see


@dataclass(frozen=True)
class Principal:
    """Who a verified key speaks for. ``markets == ("*",)`` means every market, including later ones.

    ``admin`` grants the service's admin operations; it does not widen ``markets``.
    """

    tenant: str
    markets: tuple[str, ...]
    admin: bool
    key_id: str

    @property
    def all_markets(self) -> bool:
        return self.markets == (ALL_MARKETS,)

    def may_read(self, market: str) -> bool:
        """Whether this key may read forecasts (and run scenarios) of ``market``."""
        return self.all_markets or market in self.markets


@dataclass(frozen=True)
class KeyInfo:
    """A stored key as :meth:`KeyStore.list` shows it: everything but the secret and its hash."""

    key_id: str
    tenant: str
    name: str | None
    markets: tuple[str, ...]
    admin: bool
    created_at: dt.datetime
    created_by: str | None
    revoked_at: dt.datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class IssuedKey:
    """A key just created: the only object that ever holds its plaintext (``token``).

    ``repr`` and ``str`` leave the token out, so logging or printing the object does not leak it.
    """

    info: KeyInfo
    token: str = field(repr=False)

    @property
    def key_id(self) -> str:
        return self.info.key_id

    def __str__(self) -> str:
        return f"API key {self.info.key_id} of tenant {self.info.tenant!r}"


# ----------------------------------------------------------------------------------------------------------------
# The store


def _digest(salt: bytes, token: str) -> str:
    return hmac.new(salt, token.encode(), hashlib.sha256).hexdigest()


class KeyStore:
    """API keys in the serving database, with a short-lived in-memory cache of verifications.

    Thread-safe: a service may share one store between request threads.
    """

    def __init__(self, engine: sa.Engine, *, settings: AurumSettings | None = None,
                 registry: MarketRegistry | None = None, cache_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.engine = engine
        self.cache_seconds = cache_seconds
        self._settings = settings
        self._registry = registry
        self._clock = clock
        self._cache: dict[bytes, tuple[Principal | None, float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, settings: AurumSettings, *, registry: MarketRegistry | None = None,
             clock: Callable[[], float] = time.monotonic) -> KeyStore:
        """The profile's key store (tables created if missing).

        ``registry`` validates the markets of new keys; by default the lake's registry (built-in markets
        plus registered ones) is read on the first :meth:`create`, so verifying keys never opens the lake.
        """
        return cls(open_engine(settings, [api_keys]), settings=settings, registry=registry,
                   cache_seconds=settings.serving.key_cache_seconds, clock=clock)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- issuing and revoking ------------------------------------------------------------------------------------

    def create(self, tenant: str, markets: Iterable[str] | str, *, admin: bool = False, name: str | None = None,
               created_by: str | None = None) -> IssuedKey:
        """Issue a key for ``tenant`` to read ``markets`` (codes, a comma-separated string, or ``"*"``).

        The returned :class:`IssuedKey` holds the plaintext; it is not stored and cannot be shown again.

        Raises:
            ApiKeyError: a bad tenant, name or market list.
            UnknownMarketError: a market that is not in the registry (the message names it and the known ones).
        """
        if not isinstance(tenant, str) or not TENANT_PATTERN.fullmatch(tenant):
            raise ApiKeyError(f"tenant {tenant!r} is not valid; expected 1-64 letters, digits, '_', '.' or '-', "
                              "starting with a letter or digit")
        if name is not None and not (0 < len(name) <= 200):
            raise ApiKeyError(f"key name {name!r} is not valid; expected 1-200 characters")
        codes = self._markets(markets)
        issued_at = now_utc()
        salt = secrets.token_bytes(16)
        for _ in range(5):  # a key-id collision (48 bits) is astronomically rare; draw again if it happens
            key_id = secrets.token_hex(KEY_ID_HEX // 2)
            token = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
            row = dict(key_id=key_id, tenant=tenant, name=name, markets=",".join(codes), admin=bool(admin),
                       salt=salt.hex(), key_hash=_digest(salt, token), created_at=issued_at, created_by=created_by,
                       revoked_at=None)
            try:
                with self.engine.begin() as conn:
                    conn.execute(api_keys.insert().values(**row))
                break
            except sa.exc.IntegrityError:
                continue
        else:  # pragma: no cover - five 48-bit collisions in a row
            raise ApiKeyError("could not draw an unused key id in 5 attempts")
        info = _info(row)
        log.info("created API key %s for tenant %r (markets %s, admin %s)", key_id, tenant, ",".join(codes), admin)
        return IssuedKey(info, token)

    def _markets(self, markets: Iterable[str] | str) -> tuple[str, ...]:
        if isinstance(markets, str):
            markets = markets.split(",")
        codes = sorted({m.strip() for m in markets if m and m.strip()})
        if not codes:
            raise ApiKeyError(f"no markets given ({markets!r}); expected market codes or '*' for every market")
        if ALL_MARKETS in codes:
            if len(codes) > 1:
                raise ApiKeyError(f"markets {codes!r} mix '*' with codes; expected either '*' alone or codes")
            return (ALL_MARKETS,)
        registry = self._market_registry()
        for code in codes:
            registry.get(code)  # UnknownMarketError names the code and the known ones
        return tuple(codes)

    def _market_registry(self) -> MarketRegistry:
        if self._registry is None:
            if self._settings is None:
                raise ApiKeyError("this key store has no market registry to check markets against; "
                                  "open it with KeyStore.open(settings) or pass registry=")
            from features.lake import Lake
            from features.marketdata import MarketData

            self._registry = MarketData(Lake.open(self._settings)).registry()
        return self._registry

    def revoke(self, key_id: str) -> KeyInfo:
        """Revoke a key (idempotent: a revoked key keeps its first revocation time).

        Effective at once in this process and within the cache TTL in every other.

        Raises:
            ApiKeyError: no key has that id.
        """
        with self.engine.begin() as conn:
            conn.execute(api_keys.update().where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                         .values(revoked_at=now_utc()))
            row = conn.execute(api_keys.select().where(api_keys.c.key_id == key_id)).mappings().first()
        if row is None:
            raise ApiKeyError(f"no API key with id {key_id!r}; `aurum keys list` shows the ids")
        with self._lock:
            for digest, (principal, _) in list(self._cache.items()):
                if principal is not None and principal.key_id == key_id:
                    del self._cache[digest]
        log.info("revoked API key %s of tenant %r", key_id, row["tenant"])
        return _info(row)

    def list(self, tenant: str | None = None, *, include_revoked: bool = True) -> list[KeyInfo]:
        """Stored keys (oldest first), optionally of one tenant; never secrets or hashes."""
        q = api_keys.select().order_by(api_keys.c.created_at, api_keys.c.key_id)
        if tenant is not None:
            q = q.where(api_keys.c.tenant == tenant)
        if not include_revoked:
            q = q.where(api_keys.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [_info(r) for r in conn.execute(q).mappings()]

    # -- the hot path --------------------------------------------------------------------------------------------

    def verify(self, token: str | None) -> Principal | None:
        """The principal of a valid, unrevoked key, or None (malformed, unknown, revoked, or a wrong secret).

        Cached for ``cache_seconds`` (accepted and rejected tokens alike); a malformed token is rejected
        without a database read or a cache entry.
        """
        if not isinstance(token, str):
            return None
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        principal = self._verify_stored(match.group(1), token)
        if self.cache_seconds > 0:
            with self._lock:
                if len(self._cache) >= CACHE_MAX_ENTRIES:
                    self._evict(now)
                self._cache[digest] = (principal, now + self.cache_seconds)
        return principal

    def _verify_stored(self, key_id: str, token: str) -> Principal | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(api_keys.c.tenant, api_keys.c.markets, api_keys.c.admin, api_keys.c.salt,
                                         api_keys.c.key_hash, api_keys.c.revoked_at)
                               .where(api_keys.c.key_id == key_id)).first()
        if row is None:
            log.info("rejected an API key: unknown key id %s", key_id)
            return None
        # Compare before looking at revocation, so both rejections take the same time.
        matches = hmac.compare_digest(_digest(bytes.fromhex(row.salt), token), row.key_hash)
        if not matches:
            log.warning("rejected an API key: wrong secret for key id %s", key_id)
            return None
        if row.revoked_at is not None:
            log.info("rejected an API key: key %s was revoked at %s", key_id, utc(row.revoked_at).isoformat())
            return None
        return Principal(tenant=row.tenant, markets=tuple(row.markets.split(",")), admin=bool(row.admin),
                         key_id=key_id)

    def _evict(self, now: float) -> None:
        """Drop expired entries; if the cache is still full, the oldest half (insertion order)."""
        for digest in [d for d, (_, expires) in self._cache.items() if expires <= now]:
            del self._cache[digest]
        if len(self._cache) >= CACHE_MAX_ENTRIES:
            for digest in list(self._cache)[: CACHE_MAX_ENTRIES // 2]:
                del self._cache[digest]


def _info(row) -> KeyInfo:
    return KeyInfo(key_id=row["key_id"], tenant=row["tenant"], name=row["name"],
                   markets=tuple(row["markets"].split(",")), admin=bool(row["admin"]),
                   created_at=utc(row["created_at"]), created_by=row["created_by"], revoked_at=utc(row["revoked_at"]))


def bearer_token(authorization: str | None = None, x_api_key: str | None = None) -> str | None:
    """The key of a request: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (the first given)."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None
