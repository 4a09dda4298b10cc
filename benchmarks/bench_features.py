"""Benchmark of the feature store: historical retrieval, online lookup and materialization.

A script, not a test: it measures and prints, and never asserts on time.

For every size (``N`` years of hourly rows of 10 markets, ``N`` in 1, 5, 20) a fresh temporary
``AURUM_HOME`` (local profile) gets every derived feature table of ``featuretables.GROUPS``
(``features.price_features``, ``features.exogenous_features``, ...) filled directly with synthetic numbers (one ``Lake.rewrite`` per
market and table, with the layout of ``FeatureGroup.layout()``; ingest and compute are skipped, they
would take far longer than the benchmark itself). A row of delivery day ``D`` (UTC) is known at
``D-1 09:00`` (exogenous), ``D-2 12:00`` (price) or ``D-1 00:00`` (calendar); every 7th delivery day also has a revised
exogenous version known at ``D 06:00``, after the issue time, which a point-in-time read must
ignore; about 1% of ``price_lag_P7D`` is NaN. Then ``featurestore.apply`` registers the repo.

Measured:

- historical retrieval: ``featurestore.training_set(store, "day_ahead_v1", rows)`` for a 90-day,
  one-market training set (every delivery hour, issue time ``D-1 09:30`` UTC), 1 warm-up then
  ``--repeat`` runs, median, in a fresh subprocess per size so the peak-RSS increase of the call
  (``ru_maxrss`` after minus before, warm-up included) is its own, and the process peak is the whole
  process's. In another fresh process, the same data read by hand: each table scanned with pyiceberg
  pushdown (market, delivery window, known_at window) and joined with a DuckDB ``ASOF LEFT JOIN``
  plus the 2-day TTL; both results are compared.
  Once, at the middle size, the same retrieval with Feast's stock ``duckdb`` offline store.
- materialization: ``featurestore.materialize`` of a one-day ``known_at`` window (10 markets, both
  views) at every size, 3 different days, median; and of the whole year at the 1-year size.
- online lookup: after that, ``featurestore.OnlineFeatures.vectors`` (the 24 feature vectors of a day as
  arrays, with freshness; one long-lived reader) ``--lookups`` times in-process, then the same requests
  through ``OnlineFeatures.day`` (the same as a pandas frame)
  on the SQLite online store (local profile) and, if PostgreSQL and Redis answer on 127.0.0.1, on
  the Redis online store (prod profile, 1 year x 10 markets, its own Feast project and catalog).

Usage::

    python benchmarks/bench_features.py                 # 1, 5, 20 years x 10 markets
    python benchmarks/bench_features.py --quick         # 1, 2 years x 3 markets, 500 lookups
    python benchmarks/bench_features.py --write-docs    # also records the result in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO))

from features.featuretables import GROUPS  # noqa: E402
from features.lake import Lake, all_of, between, forget_sql_catalog, one_of, to_arrow, window_filter  # noqa: E402
from features.settings import AurumSettings  # noqa: E402

from benchreport import DOCS, command_line, header_lines, record  # noqa: E402

SECTION = "## Feature store: historical retrieval, online lookup, materialization"
PACKAGES = ("feast", "duckdb", "ibis-framework", "pyiceberg", "pyarrow", "pandas", "redis", "numpy")
SERVICE = "day_ahead_v1"
TTL = pd.Timedelta(days=2)
WINDOW_DAYS = 90
RETRIEVAL_GOAL_S = 2.0
RSS_GOAL_MIB = 1024
ASOF_RATIO_GOAL = 1.5
ONLINE_GOAL_MS = 5.0
MATERIALIZE_GOAL_S = 5.0
NEWEST = dt.date.today().year - 1  # a complete past year: the data ends on 1 January of NEWEST + 1
WINDOW_START = pd.Timestamp(f"{NEWEST}-03-01", tz="UTC")


def log(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


def rss_mib() -> float:
    """Peak RSS of this process so far (``VmHWM``). Not ``ru_maxrss``: a child started by fork and exec
    inherits the parent's peak there, which would charge the parent's memory to the child."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --------------------------------------------------------------------------- synthetic feature tables


def market_code(i: int) -> str:
    return f"BENCH_{i:02d}"


def group_features(group) -> dict[str, str]:
    """Feature name -> kind (double, long, boolean) of a feature group, from its table layout."""
    schema = group.layout()[0]
    kinds = {"DoubleType": "double", "LongType": "long", "BooleanType": "boolean"}
    return {f.name: kinds[type(f.field_type).__name__] for f in schema.fields[2:-2]}


def all_features() -> list[str]:
    return [n for g in GROUPS for n in group_features(g)]


def feature_frames(i: int, years: int, now: pd.Timestamp, seed: int) -> dict[str, pd.DataFrame]:
    """Rows of both feature tables of one market: ``years`` years of hours ending on 1 January of NEWEST + 1."""
    start = np.datetime64(f"{NEWEST - years + 1}-01-01T00:00", "us")
    end = np.datetime64(f"{NEWEST + 1}-01-01T00:00", "us")
    stamps = np.arange(start, end, np.timedelta64(1, "h")).astype("datetime64[us]")
    n = len(stamps)
    day = stamps.astype("datetime64[D]").astype("datetime64[us]")
    rng = np.random.default_rng([seed, i, years])
    utc = lambda a: pd.DatetimeIndex(a).tz_localize("UTC")  # noqa: E731
    out = {}
    for group in GROUPS:
        kinds = group_features(group)
        names = [k for k, v in kinds.items() if v == "double"]
        frame = pd.DataFrame({"market": market_code(i), "delivery_start": utc(stamps)})
        for name, kind in kinds.items():
            frame[name] = (rng.normal(50.0, 20.0, n).round(3) if kind == "double" else
                           rng.integers(0, 24, n) if kind == "long" else rng.random(n) < 0.3)
        if group.source == "prices":
            frame.loc[rng.random(n) < 0.01, "price_lag_P7D"] = np.nan
            frame["known_at"] = utc(day - np.timedelta64(2, "D") + np.timedelta64(12, "h"))
        elif group.source == "fundamentals":
            frame["known_at"] = utc(day - np.timedelta64(1, "D") + np.timedelta64(9, "h"))
            # A revision published on D itself, after the D-1 issue time: point-in-time reads ignore it.
            revised = frame[(day.astype("datetime64[D]").astype(np.int64) % 7 == 0)].copy()
            revised[names] = revised[names] + 1000.0
            revised["known_at"] = revised["known_at"] + pd.Timedelta(hours=21)
            frame = pd.concat([frame, revised], ignore_index=True)
        else:  # the calendar: known long before, stamped D-1 00:00 to stay inside the freshness window
            frame["known_at"] = utc(day - np.timedelta64(1, "D"))
        frame["computed_at"] = now
        out[group.table] = frame
    return out


def fill(settings: AurumSettings, years: int, n_markets: int, seed: int) -> tuple[int, float]:
    """Write both feature tables directly; returns (rows written, seconds)."""
    t0 = time.perf_counter()
    lake = Lake.open(settings)
    now = pd.Timestamp.now(tz="UTC")
    rows = 0
    layouts = {}
    for group in GROUPS:
        schema, spec, order = group.layout()
        lake.ensure_table(group.ident, schema, spec, order)
        layouts[group.table] = schema
    for i in range(n_markets):
        frames = feature_frames(i, years, now, seed)
        for group in GROUPS:
            frame = frames[group.table]
            new = to_arrow(layouts[group.table], frame)
            scope = window_filter(market_code(i), frame["delivery_start"].min(),
                                  frame["delivery_start"].max() + pd.Timedelta(microseconds=1))
            lake.rewrite(group.ident, scope, lambda old, new=new: new)
            rows += new.num_rows
    return rows, time.perf_counter() - t0


def entity_rows(market: str) -> pd.DataFrame:
    hours = pd.date_range(WINDOW_START, periods=WINDOW_DAYS * 24, freq="h")
    day = hours.floor("D")
    return pd.DataFrame({"market": market, "delivery_start": hours,
                         "event_timestamp": day - pd.Timedelta(days=1) + pd.Timedelta(hours=9, minutes=30)})


# --------------------------------------------------------------------------- the hand-written ASOF join


def asof_training_set(lake: Lake, rows: pd.DataFrame) -> pd.DataFrame:
    """The same point-in-time join by hand: pyiceberg pushdown scans and a DuckDB ASOF LEFT JOIN."""
    import duckdb

    issued = pd.to_datetime(rows["event_timestamp"], utc=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("e", rows)
    select, joins = ["e.market", "e.delivery_start", "e.event_timestamp"], []
    for k, group in enumerate(GROUPS):
        names = list(group_features(group))
        flt = all_of(one_of("market", set(rows["market"].unique())),
                     between("delivery_start", rows["delivery_start"].min(), rows["delivery_start"].max()),
                     between("known_at", issued.min() - TTL, issued.max()))
        cols = ("market", "delivery_start", *names, "known_at", "computed_at")
        con.register(f"raw{k}", lake.scan(group.ident, flt, cols))
        # Latest computed_at among versions with the same known_at, as Feast breaks ties.
        con.execute(f"CREATE TEMP VIEW f{k} AS SELECT * FROM raw{k} QUALIFY row_number() OVER "
                    f"(PARTITION BY market, delivery_start, known_at ORDER BY computed_at DESC) = 1")
        joins.append(f"ASOF LEFT JOIN f{k} ON e.market = f{k}.market AND e.delivery_start = f{k}.delivery_start "
                     f"AND e.event_timestamp >= f{k}.known_at")
        select += [f"CASE WHEN f{k}.known_at >= e.event_timestamp - INTERVAL 2 DAY THEN f{k}.{n} END AS {n}"
                   for n in names]
    sql = f"SELECT {', '.join(select)} FROM e {' '.join(joins)} ORDER BY e.market, e.delivery_start"
    out = con.execute(sql).df()
    con.close()
    return out


def compare(feast_df: pd.DataFrame, asof_df: pd.DataFrame) -> dict:
    """Same rows, same null pattern and values for every feature."""
    names = all_features()
    a = feast_df.sort_values(["market", "delivery_start"]).reset_index(drop=True)
    b = asof_df.sort_values(["market", "delivery_start"]).reset_index(drop=True)
    same_keys = len(a) == len(b) and bool(
        (pd.to_datetime(a["delivery_start"], utc=True) == pd.to_datetime(b["delivery_start"], utc=True)).all())
    x = a[names].astype(float).to_numpy()
    y = b[names].astype(float).to_numpy() if same_keys else np.full_like(x, np.nan)
    same_nulls = same_keys and bool((np.isnan(x) == np.isnan(y)).all())
    same_values = same_nulls and bool(np.allclose(np.nan_to_num(x), np.nan_to_num(y), rtol=0, atol=1e-9))
    return {"rows": len(a), "cells": int(x.size), "nulls": int(np.isnan(x).sum()),
            "revised_seen": int((np.nan_to_num(x) > 500).sum()), "equal": same_keys and same_nulls and same_values}


# --------------------------------------------------------------------------- child processes


def child(args: argparse.Namespace) -> None:
    """One size's retrieval measurements in a fresh process; prints one RESULT line of JSON."""
    from features import featurestore

    settings = AurumSettings(home=Path(args.home))
    rows = entity_rows(market_code(0))
    out: dict = {}
    if args.child == "asof":
        lake = Lake.open(settings, create=False)
        retrieve = lambda: asof_training_set(lake, rows)  # noqa: E731
    elif args.child == "retrieval":
        store = featurestore.open_store(settings)
    else:  # Feast's stock DuckDB offline store: reads each Iceberg source whole
        text = featurestore._yaml(settings).read_text(encoding="utf-8")
        stock = text.replace("type: features.featurestore.PrunedDuckDBOfflineStore", "type: duckdb")
        assert stock != text, "offline store type not found in the yaml"
        yaml = Path(args.home) / "feature_store.stock.yaml"
        yaml.write_text(stock, encoding="utf-8")
        with featurestore._environment(settings):
            from feast import FeatureStore

            store = FeatureStore(repo_path=str(featurestore.feature_repo_path()), fs_yaml_file=yaml)
        out["offline_store"] = type(store.config.offline_store).__name__
    if args.child != "asof":
        retrieve = lambda: featurestore.training_set(store, SERVICE, rows)  # noqa: E731
    before = rss_mib()
    t0 = time.perf_counter()
    result = retrieve()
    out["first_ms"] = (time.perf_counter() - t0) * 1000
    runs = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        result = retrieve()
        runs.append((time.perf_counter() - t0) * 1000)
    out |= {"ms": runs, "rss_before_mib": before, "rss_increase_mib": rss_mib() - before, "peak_rss_mib": rss_mib()}
    result.to_parquet(Path(args.home) / f"{args.child}.parquet")
    if args.child == "retrieval":
        # The ratio: Feast and the hand-written join alternately in this one (warm) process, so both
        # see the same machine state; the memory figures above were taken before the join ran here.
        lake = Lake.open(settings, create=False)
        asof = asof_training_set(lake, rows)
        asof.to_parquet(Path(args.home) / "asof.parquet")
        pairs = {"feast": [], "asof": []}
        for _ in range(args.repeat):
            for name, fn in (("feast", retrieve), ("asof", lambda: asof_training_set(lake, rows))):
                t0 = time.perf_counter()
                fn()
                pairs[name].append((time.perf_counter() - t0) * 1000)
        out |= {"paired_feast_ms": pairs["feast"], "paired_asof_ms": pairs["asof"]}
    print("RESULT " + json.dumps(out), flush=True)


def run_child(kind: str, home: Path, repeat: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--home", str(home), "--repeat", str(repeat)]
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"child {kind} failed (exit {proc.returncode}): {proc.stdout[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# --------------------------------------------------------------------------- in-process measurements


def materialize_days(store, days: list[pd.Timestamp]) -> list[float]:
    """Seconds of materializing each one-day known_at window ``[day, day + 1)``."""
    from features import featurestore

    out = []
    for d in days:
        t0 = time.perf_counter()
        featurestore.materialize(store, d.to_pydatetime(), (d + pd.Timedelta(days=1)).to_pydatetime())
        out.append(time.perf_counter() - t0)
    return out


def online_latency(store, n_markets: int, calls: int, seed: int) -> dict:
    """Milliseconds of ``calls`` lookups of random markets and days of the newest year.

    Through one long-lived ``OnlineFeatures`` reader, as a serving process holds it.
    """
    from features import featurestore

    rng = np.random.default_rng(seed)
    first = dt.date(NEWEST, 1, 3)
    reader = featurestore.OnlineFeatures(store, SERVICE)
    check = reader.day(market_code(0), dt.date(NEWEST, 6, 15), "UTC")
    bad = int(len(check) != 24 or check["load_forecast_mw"].isna().any() or check["price_lag_P1D"].isna().any())
    load = reader.names.index("load_forecast_mw")
    # warm-up
    for _ in range(20):
        reader.day(market_code(0), first, "UTC")
    requests = [(market_code(int(rng.integers(n_markets))), first + dt.timedelta(days=int(rng.integers(360))))
                for _ in range(calls)]
    ms, frame_ms = [], []
    for k, (market, day) in enumerate(requests):  # the lookup: feature vectors as arrays, with freshness
        t0 = time.perf_counter()
        got = reader.vectors(market, day, "UTC")
        ms.append((time.perf_counter() - t0) * 1000)
        if k % 97 == 0 and (len(got.delivery_start) != 24 or np.isnan(got.values[:, load]).any()):
            bad += 1
    for k, (market, day) in enumerate(requests):  # the same lookups returned as a pandas frame
        t0 = time.perf_counter()
        frame = reader.day(market, day, "UTC")
        frame_ms.append((time.perf_counter() - t0) * 1000)
        if k % 97 == 0 and (len(frame) != 24 or frame["load_forecast_mw"].isna().any()):
            bad += 1
    ms.sort()
    frame_ms.sort()
    q = lambda v, p: v[min(len(v) - 1, int(len(v) * p))]  # noqa: E731
    return {"calls": calls, "p50": q(ms, 0.5), "p99": q(ms, 0.99), "max": ms[-1], "bad": bad,
            "frame_p50": q(frame_ms, 0.5), "frame_p99": q(frame_ms, 0.99)}


def materialize_year(store) -> float:
    from features import featurestore

    t0 = time.perf_counter()
    featurestore.materialize(store, pd.Timestamp(f"{NEWEST - 1}-12-29", tz="UTC").to_pydatetime(),
                             pd.Timestamp(f"{NEWEST + 1}-01-01", tz="UTC").to_pydatetime())
    return time.perf_counter() - t0


def redis_online(n_markets: int, calls: int, seed: int) -> dict:
    """The online lookup on the prod profile (PostgreSQL registry and catalog, Redis online store)."""
    import redis
    import sqlalchemy

    from features import featurestore

    tag = uuid.uuid4().hex[:10]
    home = Path(tempfile.mkdtemp(prefix="aurum-bench-features-prod-"))
    settings = AurumSettings(profile="prod", postgres_url="postgresql+psycopg2://postgres@127.0.0.1:5432/test",
                             feast_project=f"bench_{tag}",
                             catalog={"name": f"bench_{tag}", "warehouse": (home / "warehouse").as_uri()})
    redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2).ping()
    engine = sqlalchemy.create_engine(settings.postgres_url)
    with engine.connect():
        pass
    store = None
    try:
        rows, fill_s = fill(settings, 1, n_markets, seed)
        store = featurestore.apply(settings)
        year_s = materialize_year(store)
        log(f"redis: filled {rows:,} rows in {fill_s:.1f} s, materialized the year in {year_s:.1f} s")
        res = online_latency(store, n_markets, calls, seed)
        res["materialize_year_s"] = year_s
        return res
    finally:
        if store is not None:
            featurestore.drop_project(store)
        with engine.begin() as conn:
            forget_sql_catalog(conn, settings.catalog.name)
        engine.dispose()
        shutil.rmtree(home, ignore_errors=True)


# --------------------------------------------------------------------------- the run


@dataclass
class Size:
    years: int
    rows: int
    fill_s: float
    retrieval: dict
    materialize_day_s: list[float]


@dataclass
class Result:
    markets: int
    repeat: int
    sizes: list[Size] = field(default_factory=list)
    stock: dict | None = None
    stock_years: int = 0
    materialize_year_s: float = float("nan")
    sqlite: dict | None = None
    redis: dict | None = None
    redis_skipped: str = ""
    wall_s: float = 0.0


def run(sizes: list[int], n_markets: int, repeat: int, lookups: int, stock_years: int, seed: int,
        with_redis: bool) -> Result:
    from features import featurestore

    wall0 = time.perf_counter()
    res = Result(n_markets, repeat, stock_years=stock_years)
    for years in sizes:
        home = Path(tempfile.mkdtemp(prefix="aurum-bench-features-"))
        try:
            settings = AurumSettings(home=home)
            rows, fill_s = fill(settings, years, n_markets, seed)
            log(f"{years} years: filled {rows:,} rows in {fill_s:.1f} s")
            store = featurestore.apply(settings)
            retrieval = run_child("retrieval", home, repeat)
            asof = run_child("asof", home, repeat)  # its own process: its own memory figures
            retrieval |= {"feast_ms": retrieval["paired_feast_ms"], "asof_ms": retrieval["paired_asof_ms"],
                          "feast_alone_ms": retrieval.pop("ms"), "asof_alone_ms": asof["ms"],
                          "asof_peak_rss_mib": asof["peak_rss_mib"],
                          "check": compare(pd.read_parquet(home / "retrieval.parquet"), pd.read_parquet(home / "asof.parquet"))}
            log(f"{years} years: Feast {statistics.median(retrieval['feast_ms']):.0f} ms, "
                f"ASOF {statistics.median(retrieval['asof_ms']):.0f} ms, +{retrieval['rss_increase_mib']:.0f} MiB, "
                f"equal {retrieval['check']['equal']}")
            if years == stock_years:
                res.stock = run_child("stock", home, max(1, min(repeat, 3)))
                res.stock["feast_ms"] = res.stock.pop("ms")
                log(f"{years} years: stock duckdb store {statistics.median(res.stock['feast_ms']):.0f} ms")
            days = [pd.Timestamp(f"{NEWEST}-06-{d}", tz="UTC") for d in (10, 11, 12)]
            mat = materialize_days(store, days)
            log(f"{years} years: one-day materialize {', '.join(f'{s:.2f}' for s in mat)} s")
            res.sizes.append(Size(years, rows, fill_s, retrieval, mat))
            if years == 1:
                res.materialize_year_s = materialize_year(store)
                log(f"1 year: materialized the year in {res.materialize_year_s:.1f} s")
                res.sqlite = online_latency(store, n_markets, lookups, seed)
                log(f"sqlite online: p50 {res.sqlite['p50']:.2f} ms, p99 {res.sqlite['p99']:.2f} ms")
        finally:
            shutil.rmtree(home, ignore_errors=True)
    if with_redis:
        try:
            res.redis = redis_online(n_markets, lookups, seed)
            log(f"redis online: p50 {res.redis['p50']:.2f} ms, p99 {res.redis['p99']:.2f} ms")
        except Exception as exc:  # noqa: BLE001 - a benchmark reports what it could not run
            res.redis_skipped = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            log(f"redis skipped: {res.redis_skipped}")
    else:
        res.redis_skipped = "not requested (--no-redis)"
    res.wall_s = time.perf_counter() - wall0
    return res


# --------------------------------------------------------------------------- report


def render(res: Result) -> list[str]:
    met = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    med = statistics.median
    lines = [
        "| years x markets | feature rows (both tables) | Feast `training_set` median (min) ms | first call ms "
        "| process peak RSS MiB (increase in the calls) | ASOF join median ms | ASOF process peak RSS MiB | Feast / ASOF | results equal | one-day materialize median (max) s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|:--:|---:|",
    ]
    for s in res.sizes:
        r = s.retrieval
        f, a = med(r["feast_ms"]), med(r["asof_ms"])
        lines.append(
            f"| {s.years} x {res.markets} | {s.rows:,} | {f:.0f} ({min(r['feast_ms']):.0f}) | {r['first_ms']:.0f} "
            f"| {r['peak_rss_mib']:.0f} ({r['rss_increase_mib']:.0f}) | {a:.0f} | {r['asof_peak_rss_mib']:.0f} | {f / a:.2f} "
            f"| {'yes' if r['check']['equal'] else 'NO'} "
            f"| {med(s.materialize_day_s):.2f} ({max(s.materialize_day_s):.2f}) |")
    lines += ["", "| online store | lookups | p50 ms | p99 ms | max ms | as a pandas frame: p50 / p99 ms | bad answers |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, o in (("SQLite (local)", res.sqlite), ("Redis (prod)", res.redis)):
        if o:
            lines.append(f"| {name} | {o['calls']:,} | {o['p50']:.2f} | {o['p99']:.2f} | {o['max']:.2f} "
                         f"| {o['frame_p50']:.2f} / {o['frame_p99']:.2f} | {o['bad']} |")
    worst = max(res.sizes, key=lambda s: med(s.retrieval["feast_ms"]))
    worst_ms = med(worst.retrieval["feast_ms"])
    worst_rss = max(s.retrieval["peak_rss_mib"] for s in res.sizes)
    worst_ratio = max(med(s.retrieval["feast_ms"]) / med(s.retrieval["asof_ms"]) for s in res.sizes)
    worst_mat = max(max(s.materialize_day_s) for s in res.sizes)
    c = res.sizes[0].retrieval["check"]
    lines += [
        "",
        f"- Retrieval goal (< {RETRIEVAL_GOAL_S:.0f} s): slowest median {worst_ms / 1000:.2f} s at {worst.years} years: "
        f"{met(worst_ms < RETRIEVAL_GOAL_S * 1000)}. RSS goal (< 1 GB): largest peak RSS of the whole retrieval "
        f"process (Python, Feast and every import included) {worst_rss:.0f} MiB: {met(worst_rss < RSS_GOAL_MIB)}. "
        f"ASOF goal (<= {ASOF_RATIO_GOAL}x): worst ratio {worst_ratio:.2f}x: "
        f"{met(worst_ratio <= ASOF_RATIO_GOAL)}.",
        f"- Equality check (Feast vs ASOF join): {sum(s.retrieval['check']['equal'] for s in res.sizes)} of "
        f"{len(res.sizes)} sizes equal ({c['rows']:,} rows, {c['cells']:,} feature cells, {c['nulls']} nulls, "
        f"{c['revised_seen']} values of the later revision leaked).",
    ]
    if res.stock:
        sm = med(res.stock["feast_ms"])
        pruned = next(s for s in res.sizes if s.years == res.stock_years)
        lines.append(f"- Feast's stock `duckdb` offline store at {res.stock_years} years: median {sm:.0f} ms "
                     f"({sm / med(pruned.retrieval['feast_ms']):.1f}x the pruned store), peak RSS increase "
                     f"{res.stock['rss_increase_mib']:.0f} MiB (process peak {res.stock['peak_rss_mib']:.0f} MiB).")
    online = [o for o in (res.sqlite, res.redis) if o]
    p99 = max(o["p99"] for o in online)
    lines += [
        f"- Online goal (p99 < {ONLINE_GOAL_MS:.0f} ms): worst p99 {p99:.2f} ms: {met(p99 < ONLINE_GOAL_MS)}"
        + (f"; Redis not measured: {res.redis_skipped}." if not res.redis else "."),
        f"- Materialization goal (one day of {res.markets} markets < {MATERIALIZE_GOAL_S:.0f} s): slowest "
        f"{worst_mat:.2f} s: {met(worst_mat < MATERIALIZE_GOAL_S)}. The whole year of {res.markets} markets "
        f"(SQLite) took {res.materialize_year_s:.1f} s"
        + (f", into Redis {res.redis['materialize_year_s']:.1f} s." if res.redis else "."),
        f"- Filling the tables directly: {', '.join(f'{s.years} y {s.fill_s:.0f} s' for s in res.sizes)}; "
        f"run wall time {res.wall_s:.0f} s.",
    ]
    return lines


def notes(res: Result) -> list[str]:
    end = WINDOW_START + pd.Timedelta(days=WINDOW_DAYS)
    return [
        f"Feature tables {', '.join(f'`{g.ident}`' for g in GROUPS)} hold {res.markets} markets x N "
        f"years of hourly rows ending {NEWEST}-12-31, written directly (not via ingest/compute); a row of delivery "
        "day D is known at D-1 09:00 UTC (exogenous), D-2 12:00 UTC (price) or D-1 00:00 UTC (calendar); every 7th day has a second "
        "exogenous version known at D 06:00 (after the issue time, so never returned); ~1% of `price_lag_P7D` "
        f"is NaN. Training set: `BENCH_00`, every delivery hour of `[{WINDOW_START:%Y-%m-%d}, {end:%Y-%m-%d})` "
        f"({WINDOW_DAYS * 24:,} rows), issue time D-1 09:30 UTC, service `{SERVICE}` ({len(all_features())} features of {len(GROUPS)} views: {', '.join(g.table for g in GROUPS)}). Each size runs "
        f"its retrieval in a fresh subprocess: 1 warm-up then {res.repeat} runs; peak RSS is the process's `VmHWM` "
        "after them, the increase is that minus `VmHWM` before the first call. Then, in the same process, "
        f"{res.repeat} pairs of Feast and the hand-written join run alternately: the times and the ratio in the table "
        "are their medians. The hand-written join also runs alone in another fresh subprocess, for its memory: pyiceberg scans with market, delivery window and known_at window pushed down, "
        "then DuckDB `ASOF LEFT JOIN` on market, delivery_start and `event_timestamp >= known_at` with the 2-day "
        "TTL as a `CASE`. One-day materialization: `known_at` windows of 10-12 June, 3 runs on the store of each "
        "size. Online lookups: `OnlineFeatures.vectors` (the 24 feature vectors of a UTC day as arrays with freshness, one long-lived reader; "
        "then the same requests as a pandas frame through `OnlineFeatures.day`) of random markets and days after materializing the "
        "1-year store, in-process, after 20 warm-up calls.",
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description="Benchmark the feature store: training-set retrieval as the feature tables grow (vs a "
        "hand-written DuckDB ASOF join), online lookups and materialization. Prints a table; never asserts on time.")
    ap.add_argument("--quick", action="store_true", help="a small run: 1 and 2 years, 3 markets, 500 lookups")
    ap.add_argument("--repeat", type=int, default=11, help="timed retrievals per size after a warm-up (default 11)")
    ap.add_argument("--lookups", type=int, default=None, help="online lookups per store (default 10,000)")
    ap.add_argument("--no-redis", action="store_true", help="skip the Redis online store (prod profile)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default 0)")
    ap.add_argument("--write-docs", action="store_true",
                    help=f"write the result into {DOCS.relative_to(REPO)}, section '{SECTION[3:]}'")
    ap.add_argument("--child", choices=("retrieval", "asof", "stock"), help=argparse.SUPPRESS)
    ap.add_argument("--home", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    if args.child:
        child(args)
        return
    sizes, n_markets, stock_years = ([1, 2], 3, 2) if args.quick else ([1, 5, 20], 10, 5)
    lookups = args.lookups or (500 if args.quick else 10_000)
    if args.repeat < 1 or lookups < 1:
        ap.error("--repeat and --lookups must be at least 1")

    command = command_line("bench_features.py", argv)
    head = header_lines(PACKAGES)
    shape = f"{'/'.join(map(str, sizes))} years x {n_markets} markets, {lookups:,} lookups"
    print("\n".join(head))
    print(f"Command: {command}  ({shape})")
    print(flush=True)
    res = run(sizes, n_markets, args.repeat, lookups, stock_years, args.seed, not args.no_redis)
    table = render(res)
    print("\n".join(table))
    if args.write_docs:
        record(SECTION, command, shape, head, table, notes(res))

if __name__ == "__main__":
    main()
