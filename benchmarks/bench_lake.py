"""Benchmark of the Iceberg market-data lake: ingest rate and 30-day window reads as the lake grows.

A script, not a test: it measures and prints, and never asserts on time.

The lake starts empty in a fresh temporary ``AURUM_HOME`` (local profile: SQLite catalog, file
warehouse). It is then grown one year at a time, like a yearly backfill going back in time: for
year ``y = 1 .. --years`` every one of ``--markets`` benchmark markets ingests one UTC calendar year
of hourly data (8,760 or 8,784 rows) as one batch, one ``ingest_parsed`` call. The newest year is
ingested first, so the 30-day read window (March of the newest year, market ``BENCH_00``) is the
same query at every size and only the table around it grows.

Measured:

- ingest: wall time of each ``ingest_parsed`` call (validation, the dedupe check and all table
  commits; building the synthetic frame is not timed). Rows counted are *source rows*, i.e.
  delivery hours; each one becomes one ``prices`` row and one ``fundamentals`` row, so the lake
  stores twice as many table rows as counted here.
- read: after 1, 2, 5, 10 and 20 years, ``MarketData(lake).prices(market, start, end)`` and
  ``MarketData(lake).window(...)`` (prices and fundamentals joined) over the 30-day window,
  each with a fresh ``MarketData`` (as a caller would), one warm-up and then ``--repeat`` timed
  runs (median and min). Also the scan planning alone (``Lake.file_paths``) and the number of
  data files the scan plans versus all data files of ``prices``.
- peak RSS of the process.

Usage::

    python benchmarks/bench_lake.py                 # 20 years x 10 markets, prints the table
    python benchmarks/bench_lake.py --quick         # 3 years x 2 markets, a smoke run
    python benchmarks/bench_lake.py --write-docs    # also records the result in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO))

from features.ingest import ingest_parsed, synthetic_source  # noqa: E402
from features.lake import Lake, window_filter  # noqa: E402
from features.marketdata import MarketData  # noqa: E402
from features.markets import Market  # noqa: E402
from features.settings import AurumSettings  # noqa: E402

from benchreport import DOCS, command_line, header_lines, record  # noqa: E402

SECTION = "## Lake: ingest and 30-day window read"
PACKAGES = ("pyiceberg", "pyarrow", "pandas", "sqlalchemy", "numpy")
CHECKPOINTS = (1, 2, 5, 10, 20)
READ_RATIO_GOAL = 2.0
INGEST_GOAL_ROWS_PER_MIN = 1_000_000
HOUR_US = 3_600_000_000


# --------------------------------------------------------------------------- synthetic hourly data


def year_frame(code_index: int, year: int, seed: int) -> pd.DataFrame:
    """One UTC calendar year of hourly market data, shaped like a real zone (numpy only, fast)."""
    start = np.datetime64(f"{year}-01-01T00:00", "us")
    end = np.datetime64(f"{year + 1}-01-01T00:00", "us")
    stamps = np.arange(start, end, np.timedelta64(HOUR_US, "us"))
    n = len(stamps)
    rng = np.random.default_rng([seed, code_index, year])
    hour = (stamps.astype("datetime64[h]").astype(np.int64) % 24).astype(np.float64)
    doy = (stamps.astype("datetime64[D]") - stamps.astype("datetime64[Y]")).astype(np.int64).astype(np.float64)
    daily = np.sin((hour - 6.0) / 24.0 * 2 * np.pi)
    yearly = np.cos(doy / 365.25 * 2 * np.pi)  # high in winter
    load = 45_000 + 8_000 * daily + 6_000 * yearly + rng.normal(0, 1_500, n)
    wind = np.abs(12_000 + 4_000 * yearly + np.cumsum(rng.normal(0, 300, n)) % 9_000) + 1.0
    solar = np.clip(np.sin((hour - 6.0) / 12.0 * np.pi), 0, None) * (9_000 - 4_000 * yearly) * rng.uniform(0.6, 1.0, n)
    price = np.clip(40 + 0.002 * (load - wind - solar) + rng.normal(0, 8, n), -100, 900)
    actual = load + rng.normal(0, 800, n)
    return pd.DataFrame({
        "delivery_start": pd.DatetimeIndex(stamps).tz_localize("UTC").astype("datetime64[us, UTC]"),
        "price": price.round(2),
        "load_forecast_mw": load.round(1),
        "wind_forecast_mw": wind.round(1),
        "solar_forecast_mw": solar.round(1),
        "load_actual_mw": actual.round(1),
    })


# --------------------------------------------------------------------------- measurements


@dataclass
class Checkpoint:
    years: int
    prices_rows: int
    ingest_rows: int  # source rows (hours) ingested in this year's batches
    ingest_seconds: float  # their summed wall time
    batch_rates: list[float]
    read_ms: list[float]
    window_ms: list[float]
    plan_ms: list[float]
    files_scanned: int
    files_total: int
    snapshots: int
    manifests: int

    @property
    def rows_per_s(self) -> float:
        return self.ingest_rows / self.ingest_seconds if self.ingest_seconds else float("nan")


@dataclass
class Result:
    years: int
    markets: int
    repeat: int
    window: tuple[pd.Timestamp, pd.Timestamp]
    checkpoints: list[Checkpoint] = field(default_factory=list)
    all_rows: int = 0
    all_seconds: float = 0.0
    wall_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    quarantined: int = 0
    bulk_rows: int = 0  # one batch per market holding every year: a full-history file
    bulk_seconds: float = 0.0


def timed(fn, repeat: int) -> list[float]:
    """Milliseconds of ``repeat`` calls after one untimed warm-up call."""
    fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def table_shape(lake: Lake, name: str) -> tuple[int, int]:
    """(snapshots in metadata, manifests of the current snapshot) of a table."""
    t = lake.table(name)
    snap = t.current_snapshot()
    return len(t.metadata.snapshots), len(snap.manifests(t.io)) if snap else 0


def run(years: int, n_markets: int, repeat: int, seed: int, keep: bool, verbose: bool) -> Result:
    home = Path(tempfile.mkdtemp(prefix="aurum-bench-lake-"))
    wall0 = time.perf_counter()
    try:
        lake = Lake.open(AurumSettings(home=home))
        data = MarketData(lake)
        markets = [Market(code=f"BENCH_{i:02d}", name=f"Benchmark market {i}", timezone="Europe/Berlin", country="DE",
                          provenance="bench_lake synthetic") for i in range(n_markets)]
        for m in markets:
            data.register_market(m)

        newest = dt.date.today().year - 1  # a complete past year; the backfill goes back from it
        w_start = pd.Timestamp(f"{newest}-03-01", tz="UTC")
        w_end = w_start + pd.Timedelta(days=30)
        reader = markets[0].code
        res = Result(years, n_markets, repeat, (w_start, w_end))
        checkpoints = sorted({c for c in CHECKPOINTS if c <= years} | {years})
        prices_rows = 0
        for y in range(1, years + 1):
            year = newest - (y - 1)
            rows = secs = 0.0
            rates = []
            for i, m in enumerate(markets):
                frame = year_frame(i, year, seed)
                parsed = synthetic_source(frame, m.code, {"bench": "lake", "year": year, "seed": seed})
                t0 = time.perf_counter()
                report = ingest_parsed(lake, m, parsed, data=data)
                s = time.perf_counter() - t0
                rows += len(frame)
                secs += s
                rates.append(len(frame) / s)
                prices_rows += report.prices_accepted
                res.quarantined += report.quarantined
            res.all_rows += int(rows)
            res.all_seconds += secs
            if verbose:
                print(f"  year {y:>2} ({year}): {int(rows):,} rows in {secs:.1f} s = {rows / secs:,.0f} rows/s",
                      file=sys.stderr, flush=True)
            if y not in checkpoints:
                continue
            flt = window_filter(reader, w_start, w_end)
            read_ms = timed(lambda: MarketData(lake).prices(reader, w_start, w_end), repeat)
            window_ms = timed(lambda: MarketData(lake).window(reader, w_start, w_end), repeat)
            plan_ms = timed(lambda: lake.file_paths("prices", flt), repeat)
            got = MarketData(lake).prices(reader, w_start, w_end)
            if len(got) != 30 * 24:
                print(f"warning: the window read returned {len(got)} rows, expected {30 * 24}", file=sys.stderr)
            snaps, manifests = table_shape(lake, "prices")
            res.checkpoints.append(Checkpoint(
                years=y, prices_rows=prices_rows, ingest_rows=int(rows), ingest_seconds=secs, batch_rates=rates,
                read_ms=read_ms, window_ms=window_ms, plan_ms=plan_ms,
                files_scanned=len(lake.file_paths("prices", flt)), files_total=len(lake.file_paths("prices")),
                snapshots=snaps, manifests=manifests,
            ))
            if verbose:
                c = res.checkpoints[-1]
                print(f"  read after {y} years: prices median {statistics.median(c.read_ms):.0f} ms, "
                      f"window {statistics.median(c.window_ms):.0f} ms, plan {statistics.median(c.plan_ms):.0f} ms, "
                      f"files {c.files_scanned}/{c.files_total}", file=sys.stderr, flush=True)
        bulk(res, markets, newest, years, seed, verbose)
    finally:
        if keep:
            print(f"lake kept at {home}", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)
    res.wall_seconds = time.perf_counter() - wall0
    res.peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return res


def bulk(res: Result, markets: list[Market], newest: int, years: int, seed: int, verbose: bool) -> None:
    """Ingest every market's whole history as one batch into a fresh lake (a full-history file)."""
    home = Path(tempfile.mkdtemp(prefix="aurum-bench-bulk-"))
    try:
        lake = Lake.open(AurumSettings(home=home))
        data = MarketData(lake)
        for i, m in enumerate(markets):
            data.register_market(m)
            frame = pd.concat([year_frame(i, newest - k, seed) for k in range(years)[::-1]], ignore_index=True)
            parsed = synthetic_source(frame, m.code, {"bench": "bulk", "years": years, "seed": seed})
            t0 = time.perf_counter()
            ingest_parsed(lake, m, parsed, data=data)
            res.bulk_seconds += time.perf_counter() - t0
            res.bulk_rows += len(frame)
        if verbose:
            print(f"  bulk: {res.bulk_rows:,} rows in {res.bulk_seconds:.1f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)


# --------------------------------------------------------------------------- report


def render(res: Result, command: str) -> list[str]:
    base = statistics.median(res.checkpoints[0].read_ms)
    base_w = statistics.median(res.checkpoints[0].window_ms)
    lines = [
        "| years | prices rows | ingest rows/s | rows/min | 30-day `prices` read median (min) ms | ratio vs 1 year "
        "| 30-day `window` read median ms | ratio | scan planning ms | files scanned / total | snapshots / manifests |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in res.checkpoints:
        med, wmed = statistics.median(c.read_ms), statistics.median(c.window_ms)
        lines.append(
            f"| {c.years} | {c.prices_rows:,} | {c.rows_per_s:,.0f} | {c.rows_per_s * 60:,.0f} "
            f"| {med:.0f} ({min(c.read_ms):.0f}) | {med / base:.2f} | {wmed:.0f} | {wmed / base_w:.2f} "
            f"| {statistics.median(c.plan_ms):.0f} | {c.files_scanned} / {c.files_total} "
            f"| {c.snapshots} / {c.manifests} |"
        )
    last, first = res.checkpoints[-1], res.checkpoints[0]
    ratio = statistics.median(last.read_ms) / base
    overall = res.all_rows / res.all_seconds * 60
    last_rate = last.rows_per_s * 60
    bulk_rate = res.bulk_rows / res.bulk_seconds * 60
    met = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    lines += [
        "",
        f"- Read goal: 30-day read {last.years} years / {first.years} year = {ratio:.2f}x "
        f"(goal <= {READ_RATIO_GOAL:.1f}x): {met(ratio <= READ_RATIO_GOAL)}.",
        f"- Ingest goal (>= {INGEST_GOAL_ROWS_PER_MIN:,} rows/min): yearly batches of 8,760 rows "
        f"{overall:,.0f} rows/min over all {res.years * res.markets} batches and {last_rate:,.0f} rows/min "
        f"in those of year {last.years}: {met(min(overall, last_rate) >= INGEST_GOAL_ROWS_PER_MIN)}; "
        f"full-history files ({res.markets} batches of {res.bulk_rows // res.markets:,} rows) "
        f"{bulk_rate:,.0f} rows/min: {met(bulk_rate >= INGEST_GOAL_ROWS_PER_MIN)}.",
        f"- Ingest total: {res.all_rows:,} source rows in {res.all_seconds:.0f} s; "
        f"run wall time {res.wall_seconds:.0f} s; peak RSS {res.peak_rss_mib:,.0f} MiB; "
        f"quarantined values {res.quarantined}.",
    ]
    return lines


def notes(res: Result) -> list[str]:
    w0, w1 = res.window
    return [
        f"{res.markets} markets, grown one year at a time from 1 to {res.years} years of hourly data; every "
        "market-year is one `ingest_parsed` batch (a yearly backfill going back in time). Ingest rows are "
        "source rows (delivery hours): each becomes one `prices` and one `fundamentals` row. The rate of a "
        "year is its rows over the summed wall time of its batches (validation, dedupe check, all commits). "
        f"Reads: 30 days `[{w0:%Y-%m-%d}, {w1:%Y-%m-%d})` of `BENCH_00`, the same window at every size, a fresh "
        f"`MarketData` per call, 1 warm-up then {res.repeat} runs; `window` reads prices and fundamentals "
        "joined; scan planning is `Lake.file_paths` alone. Snapshots / manifests are those of `prices`. "
        "Full-history files: a fresh lake, each market's whole history ingested as one batch.",
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description="Benchmark the Iceberg market-data lake: ingest rows/s and the read time of a 30-day "
        "window as the lake grows year by year. Prints a table; never asserts on time.")
    ap.add_argument("--years", type=int, default=20, help="years of hourly data to grow to (default 20)")
    ap.add_argument("--markets", type=int, default=10, help="number of markets (default 10)")
    ap.add_argument("--quick", action="store_true", help="a tiny run: 3 years, 2 markets")
    ap.add_argument("--repeat", type=int, default=7, help="timed reads per checkpoint after a warm-up (default 7)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default 0)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary lake and print its path")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ap.add_argument("--write-docs", action="store_true",
                    help=f"write the result into {DOCS.relative_to(REPO)}, section '{SECTION[3:]}'")
    args = ap.parse_args(argv)
    if args.quick:
        args.years, args.markets = 3, 2
    if args.years < 1 or args.markets < 1 or args.repeat < 1:
        ap.error("--years, --markets and --repeat must be at least 1")
    logging.basicConfig(level=logging.WARNING)

    command = command_line("bench_lake.py", argv)
    head = header_lines(PACKAGES)
    shape = f"{args.years} years x {args.markets} markets"
    print("\n".join(head))
    print(f"Command: {command}  ({shape})")
    print(flush=True)
    res = run(args.years, args.markets, args.repeat, args.seed, args.keep, not args.quiet)
    table = render(res, command)
    print("\n".join(table))
    if args.write_docs:
        record(SECTION, command, shape, head, table, notes(res))

if __name__ == "__main__":
    main()
