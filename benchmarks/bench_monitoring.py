"""Benchmark of monitoring at scale: drift of 1 million rows x 50 features, and the performance check of a week
with 1 million archived forecasts; time and peak memory.

A script, not a test: it measures and prints, and never asserts on time.

The data are synthetic, built to look like the feature frames a drift check reads: every column a
seasonal curve, an hour-of-day shape, a level that persists across days, noise, and for one column in
five rare price-like spikes; one more column stands for the champion's forecast. The reference spans
two years (``--rows`` rows spread evenly over 730 local days), the checked window seven days of
``--rows`` rows (so many series at once), ten of its columns shifted by two standard deviations.

Each stage runs in a fresh subprocess, so its peak RSS (``VmHWM`` of ``/proc/self/status``: Python,
pandas, NumPy, Evidently and every import included) is its own:

- ``reference``: :meth:`monitoring.drift.ReferenceStatistics.build` (scales on every row, the stratified
  sample kept, thresholds calibrated on it), then written as a cached reference is (Parquet + JSON);
- ``check``: the cached reference read back, the window scored (:func:`monitoring.drift.assess`: the
  seasonal match, stratified samples, the distances), Evidently's report run on those samples and
  written as HTML, and the JSON summary written: what ``aurum monitor drift`` does after it has read
  the window from the feature store;
- ``cold``: both in one process (a champion's first check);
- ``performance``: a week of a busy forecast service in an Iceberg archive (``serving.forecasts`` in a
  temporary lake, ``--archive-rows`` rows: every hour answered thousands of times by the API at random
  issue and serving times, 10 % what-if scenario rows, 10 % shadow-challenger rows, and one batch row
  per hour), read through :mod:`monitoring.forecastlog`, judged by :func:`monitoring.performance.assess`
  (selection, deduplication, join with prices, metrics by hour and lead time) and reported by Evidently
  against 336 backtest hours: what ``aurum monitor performance`` does after resolving the champion.

Usage::

    python benchmarks/bench_monitoring.py                   # 1,000,000 rows x 50 features; 1,000,000 archive rows
    python benchmarks/bench_monitoring.py --rows 100000 --archive-rows 100000     # smaller
    python benchmarks/bench_monitoring.py --write-docs      # also records the result in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO))

from features.settings import MonitoringSettings  # noqa: E402
from monitoring import drift  # noqa: E402

from benchreport import DOCS, command_line, header_lines, record  # noqa: E402

SECTION = "## Monitoring: drift of 1 million rows x 50 features"
PACKAGES = ("evidently", "pandas", "numpy", "scipy", "pyarrow")
TIME_GOAL_S = 60.0
RSS_GOAL_MIB = 2048
REFERENCE_START, REFERENCE_DAYS = pd.Timestamp("2021-01-01"), 730
WINDOW_START, WINDOW_DAYS = pd.Timestamp("2023-06-05"), 7
SHIFTED, SHIFT = 10, 6.0  # window columns moved, and by how much (about two of their reference sds)


def rss_mib() -> float:
    """Peak RSS of this process so far (``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (the benchmark needs Linux)")


def columns(features: int) -> list[str]:
    return [f"f{j:02d}" for j in range(features)]


def frame(rows: int, features: int, start: pd.Timestamp, days: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """``rows`` synthetic feature rows over ``days`` local days from ``start`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    day_index = np.arange(rows) * days // rows
    day = start + pd.to_timedelta(day_index, unit="D")
    hour = np.arange(rows) % 24
    doy = day.dayofyear.to_numpy()
    names = columns(features) + [drift.PREDICTION]
    block = np.empty((rows, len(names)))  # one float block: the frame holds it without a copy
    for j in range(len(names)):
        level = _persistent(rng.normal(0, 0.5, days + 1), 0.9)[day_index]  # persists across days
        values = block[:, j]
        values[:] = (3 * np.cos(2 * np.pi * (doy + 9 * j) / 365.25) + np.sin(2 * np.pi * (hour + j) / 24)
                     + level + rng.normal(0, 1, rows))
        if j % 5 == 0:
            values += np.where(rng.random(rows) < 0.002, rng.exponential(25, rows), 0.0)
        if shift and j < SHIFTED:
            values += shift
    out = pd.DataFrame(block, columns=names, copy=False)
    out.insert(0, drift.DAY, day)
    out.insert(0, "delivery_start", (day + pd.to_timedelta(hour, unit="h")).tz_localize("UTC"))
    return out


def _persistent(innovations: np.ndarray, phi: float) -> np.ndarray:
    out = np.empty_like(innovations)
    out[0] = innovations[0]
    for i in range(1, len(out)):  # a few hundred days
        out[i] = phi * out[i - 1] + innovations[i]
    return out


def roles(features: int) -> dict[str, str]:
    return {c: drift.NUMERICAL for c in [*columns(features), drift.PREDICTION]}


def stage_reference(rows: int, features: int, folder: Path, settings: MonitoringSettings) -> dict:
    reference = frame(rows, features, REFERENCE_START, REFERENCE_DAYS, seed=1)
    data_mib = rss_mib()
    t0 = time.perf_counter()
    stats = drift.ReferenceStatistics.build(reference, roles(features), settings)
    built = time.perf_counter() - t0
    folder.mkdir(parents=True, exist_ok=True)
    stats.frame.to_parquet(folder / "reference.parquet", index=False)
    (folder / "reference.json").write_text(json.dumps({"roles": stats.roles, "scales": stats.scales,
                                                       "thresholds": stats.thresholds, "rows": stats.rows}))
    return {"seconds": time.perf_counter() - t0, "build_s": built, "data_mib": data_mib,
            "weeks": stats.calibration["weeks"], "sampled_rows": len(stats.frame)}


def stage_check(rows: int, features: int, folder: Path, settings: MonitoringSettings) -> dict:
    from monitoring import evidently_adapter  # imported outside the timing, as a CLI process does at start

    window = frame(rows, features, WINDOW_START, WINDOW_DAYS, seed=2, shift=SHIFT)
    data_mib = rss_mib()
    t0 = time.perf_counter()
    meta = json.loads((folder / "reference.json").read_text())
    stats = drift.ReferenceStatistics(pd.read_parquet(folder / "reference.parquet"), meta["roles"], meta["scales"],
                                      meta["thresholds"], {}, meta["rows"])
    t_read = time.perf_counter()
    assessment = drift.assess(stats, window, settings, window_end=window["delivery_start"].max())
    t_assess = time.perf_counter()
    report = evidently_adapter.drift_report(assessment, drift_share=0.35)
    t_report = time.perf_counter()
    html = report.save_html(folder / "report.html")
    t_html = time.perf_counter()
    summary = {"metrics": assessment.metrics(), "evidently": report.drifted(), "scores": report.scores()}
    (folder / "summary.json").write_text(json.dumps(summary, default=float))
    t1 = time.perf_counter()
    engine = {c.column: c.score for c in [*assessment.columns, assessment.prediction]}
    agree = all(abs(report.scores()[k] - v) <= 1e-9 * max(1.0, abs(v)) for k, v in engine.items())
    return {"seconds": t1 - t0, "read_s": t_read - t0, "assess_s": t_assess - t_read,
            "evidently_s": t_report - t_assess,
            "html_s": t_html - t_report, "data_mib": data_mib, "html_mib": html.stat().st_size / 2**20,
            "scored_rows": len(assessment.current), "matched_rows": len(assessment.reference),
            "drifted": len(assessment.drifted), "agree": agree}


def archive_table(rows: int, seed: int = 3):
    """``rows`` archive rows of one week (see the module docstring), and the week's prices (and the week before)."""
    import pyarrow as pa

    from features.lake import forecast_table_layout
    from features.markets import BUILTIN_MARKETS

    market = next(m for m in BUILTIN_MARKETS if m.code == "SYN_NORTH")
    rng = np.random.default_rng(seed)
    first = WINDOW_START.tz_localize(market.timezone)
    hours = pd.date_range(first - pd.Timedelta(days=8), first + pd.Timedelta(days=WINDOW_DAYS), freq="h",
                          inclusive="left").tz_convert("UTC")
    price = 60 + 25 * np.sin(2 * np.pi * hours.hour.to_numpy() / 24) + rng.normal(0, 8, len(hours))
    prices = pd.DataFrame({"delivery_start": hours, "price": price,
                           "published_at": market.on_day_before(pd.Series(hours), market.prices_published)})
    week = np.flatnonzero(hours >= first.tz_convert("UTC"))
    idx = np.concatenate([week, rng.choice(week, rows - len(week))])  # one batch row per hour, the rest API
    ds = pd.Series(hours[idx])
    gate = market.on_day_before(ds, market.gate_closure)
    kind = rng.random(rows)
    kind[: len(week)] = 1.0
    batch = np.arange(rows) < len(week)
    issued = gate - pd.to_timedelta(np.where(batch, 0, rng.exponential(6 * 3600, rows)), unit="s")
    served = issued + pd.to_timedelta(rng.exponential(60, rows), unit="s")
    median = price[idx] + rng.normal(0, 6, rows)
    n_levels = 3
    values = np.column_stack([median - 10, median, median + 10]).ravel()
    offsets = np.arange(0, n_levels * rows + 1, n_levels, dtype=np.int64)
    schema = forecast_table_layout()[0].as_arrow()
    local_day = ds.dt.tz_convert(market.timezone).dt.date
    scenario = kind < 0.1
    shadow = (kind >= 0.1) & (kind < 0.2)
    ts = lambda v: pa.array(pd.to_datetime(v, utc=True).astype("datetime64[us, UTC]"), pa.timestamp("us", "UTC"))  # noqa: E731
    columns = {
        "request_id": pa.array(np.char.add("r", np.arange(rows).astype(str))),
        "batch_id": pa.array(np.where(batch, "bench", None)),
        "source": pa.array(np.where(batch, "batch", np.where(scenario, "scenario", "api"))),
        "tenant": pa.array(np.full(rows, "acme")), "market": pa.array(np.full(rows, market.code)),
        "delivery_day": pa.array(local_day.to_numpy(), pa.date32()), "delivery_start": ts(ds),
        "issued_at": ts(issued), "served_at": ts(served),
        "levels": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(np.tile([0.1, 0.5, 0.9], rows)),
                                                type=schema.field("levels").type),
        "values": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values), type=schema.field("values").type),
        "forecast": pa.array(median), "model_name": pa.array(np.full(rows, "day_ahead_SYN_NORTH")),
        "model_version": pa.array(np.where(shadow, "2", "1")),
        "model_alias": pa.array(np.where(shadow, "challenger", "champion")), "shadow": pa.array(shadow),
        "scenario": pa.array(np.where(scenario, "windless", None)), "feature_service": pa.array(np.full(rows, "day_ahead_v1")),
        "feature_snapshot": pa.nulls(rows, pa.int64()), "feature_known_at": pa.nulls(rows, pa.timestamp("us", "UTC")),
        "quality": pa.array(np.full(rows, "ok")), "quality_reason": pa.nulls(rows, pa.string()),
    }
    return market, pa.Table.from_pydict(columns, schema=schema), prices


def stage_performance(rows: int, folder: Path) -> dict:
    from features.lake import FORECASTS_TABLE, Lake, forecast_table_layout
    from features.settings import AurumSettings
    from monitoring import evidently_adapter, forecastlog, performance
    from monitoring.expectation import Expectation

    market, table, prices = archive_table(rows)
    lake = Lake.open(AurumSettings(home=folder / "home"))
    lake.ensure_table(FORECASTS_TABLE, *forecast_table_layout())
    t0 = time.perf_counter()
    lake.append_compacted(FORECASTS_TABLE, table)
    write_s = time.perf_counter() - t0
    files = len(lake.file_paths(FORECASTS_TABLE))
    del table
    rng = np.random.default_rng(4)
    actual = rng.normal(60, 20, 336)
    backtest = pd.DataFrame({"actual": actual, "forecast": actual + rng.normal(0, 6, 336), "hour": np.arange(336) % 24,
                             "lead_bin": 12})
    backtest["abs_error"] = (backtest["actual"] - backtest["forecast"]).abs()
    expectation = Expectation("bench", {"mae": 5.0, "coverage_0.8": 0.8}, None, None, None)
    data_mib = rss_mib()
    t0 = time.perf_counter()
    lo = WINDOW_START.tz_localize(market.timezone).tz_convert("UTC")
    hi = lo + pd.Timedelta(days=WINDOW_DAYS)
    archived = forecastlog.read_window(lake, market.code, lo, hi)
    t_read = time.perf_counter()
    a = performance.assess(archived, prices, market, "day_ahead_SYN_NORTH", "1", expectation, window_days=WINDOW_DAYS,
                           as_of=pd.Timestamp("2030-01-01", tz="UTC"), where="bench")
    m = a.metrics()
    t_assess = time.perf_counter()
    report = evidently_adapter.performance_report(a.champion.per_row(), backtest)
    t_report = time.perf_counter()
    html = report.save_html(folder / "performance.html")
    t_html = time.perf_counter()
    agree = abs(report.means()["abs_error"] - m["mae"]) <= 1e-9 * m["mae"]
    return {"seconds": t_html - t0, "write_s": write_s, "files": files, "read_s": t_read - t0,
            "assess_s": t_assess - t_read, "evidently_s": t_report - t_assess, "html_s": t_html - t_report,
            "data_mib": data_mib, "html_mib": html.stat().st_size / 2**20, "rows": len(archived),
            "judged": a.champion.hours, "dropped": a.selection.champion_duplicates,
            "scenario": a.selection.scenario_rows, "challenger_hours": sum(g.hours for g in a.challengers),
            "agree": agree}


def child(args: argparse.Namespace) -> None:
    warnings.filterwarnings("ignore")
    settings = MonitoringSettings()
    folder = Path(args.folder)
    start = time.perf_counter()
    out: dict = {}
    if args.child == "performance":
        out["performance"] = stage_performance(args.archive_rows, folder)
    if args.child in ("reference", "cold"):
        out["reference"] = stage_reference(args.rows, args.features, folder, settings)
    if args.child in ("check", "cold"):
        out["check"] = stage_check(args.rows, args.features, folder, settings)
    out |= {"stage_seconds": time.perf_counter() - start, "peak_mib": rss_mib()}
    print("RESULT " + json.dumps(out), flush=True)


def run_child(kind: str, rows: int, features: int, folder: Path, archive_rows: int = 0) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--rows", str(rows),
           "--features", str(features), "--folder", str(folder), "--archive-rows", str(archive_rows)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"stage {kind} failed (exit {proc.returncode}): {proc.stdout[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):]) | {"process_s": time.perf_counter() - t0}


def render(rows: int, features: int, res: dict[str, dict]) -> list[str]:
    ref, check, cold = res["reference"]["reference"], res["check"]["check"], res["cold"]
    cold_s = cold["reference"]["seconds"] + cold["check"]["seconds"]
    table = [
        "| stage | what is timed | wall s | process wall s | peak RSS MiB (the data alone) | detail |",
        "|---|---|---:|---:|---:|---|",
        f"| reference | scales on {rows:,} rows, stratified sample, calibration, write | {ref['seconds']:.1f} | "
        f"{res['reference']['process_s']:.0f} | "
        f"{res['reference']['peak_mib']:.0f} ({ref['data_mib']:.0f}) | {ref['weeks']} weeks calibrated on "
        f"{ref['sampled_rows']:,} sampled rows |",
        f"| check | read the cached reference, score {rows:,} rows, Evidently report, HTML, JSON | "
        f"{check['seconds']:.1f} | "
        f"{res['check']['process_s']:.0f} | "
        f"{res['check']['peak_mib']:.0f} ({check['data_mib']:.0f}) | read {check['read_s']:.1f} s, assess "
        f"{check['assess_s']:.1f} s, Evidently {check['evidently_s']:.1f} s, HTML {check['html_s']:.1f} s "
        f"({check['html_mib']:.1f} MiB); {check['scored_rows']:,} window and {check['matched_rows']:,} reference "
        f"rows scored; {check['drifted']} of {features} features drifted |",
        f"| cold | both in one process | {cold_s:.1f} | {cold['process_s']:.0f} | {cold['peak_mib']:.0f} | "
        "a champion's first check |",
    ]
    if "performance" in res:
        p = res["performance"]["performance"]
        table.append(
            f"| performance | read {p['rows']:,} archived forecasts of a week, select, deduplicate, join, metrics, "
            f"Evidently report, HTML | {p['seconds']:.1f} | {res['performance']['process_s']:.0f} | "
            f"{res['performance']['peak_mib']:.0f} ({p['data_mib']:.0f}) | read {p['read_s']:.1f} s ({p['files']} "
            f"file), assess {p['assess_s']:.1f} s, Evidently {p['evidently_s']:.1f} s, HTML {p['html_s']:.1f} s "
            f"({p['html_mib']:.1f} MiB); {p['judged']} hours judged, {p['dropped']:,} duplicates dropped, "
            f"{p['scenario']:,} scenario rows left out, {p['challenger_hours']} challenger hours |")
    return table


def notes(rows: int, features: int, res: dict[str, dict]) -> list[str]:
    worst_s = max(res["reference"]["reference"]["seconds"], res["check"]["check"]["seconds"],
                  res["cold"]["reference"]["seconds"] + res["cold"]["check"]["seconds"])
    worst_mib = max(res[k]["peak_mib"] for k in ("reference", "check", "cold"))
    ok = lambda met: "met" if met else "NOT met"  # noqa: E731
    s = MonitoringSettings()
    return [
        f"- Goal (< {TIME_GOAL_S:.0f} s and < {RSS_GOAL_MIB / 1024:.0f} GB for the drift of {rows:,} rows x "
        f"{features} features): slowest stage {worst_s:.1f} s, largest peak RSS {worst_mib:.0f} MiB: "
        f"{ok(worst_s < TIME_GOAL_S and worst_mib < RSS_GOAL_MIB)}.",
        f"- Evidently's scores equal the engine's: {'yes' if res['check']['check']['agree'] else 'NO'}"
        + (f"; the performance report's MAE equals the engine's: "
           f"{'yes' if res['performance']['performance']['agree'] else 'NO'}." if "performance" in res else "."),
        "",
        f"Synthetic frames (see the script): the reference {rows:,} rows over {REFERENCE_DAYS} local days, the window "
        f"{rows:,} rows over {WINDOW_DAYS} days, {features} features and a forecast column, {SHIFTED} window columns "
        f"moved by {SHIFT:g} (about 2 sd). Defaults of `MonitoringSettings`: windows and matched references sampled "
        f"to {s.max_rows:,} "
        f"rows, the cached reference to {s.reference_max_rows:,} rows (stratified by day and hour), season half-width "
        f"{s.season_half_width_days} days, calibration guard {s.calibration_guard_days} days, margin "
        f"{s.threshold_margin}. Each stage runs in a fresh subprocess; peak RSS is its `VmHWM` (imports included), "
        "in brackets after building its input frames, before the timed work. Wall times exclude building the frames "
        "and importing Evidently (a CLI process imports it once); the process time includes them.",
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Benchmark drift monitoring: reference statistics and a drift check "
                                 "of 1M rows x 50 features, wall time and peak RSS. Prints a table; never asserts on "
                                 "time.")
    ap.add_argument("--rows", type=int, default=1_000_000,
                    help="rows of the reference and of the window (default 1,000,000)")
    ap.add_argument("--features", type=int, default=50, help="feature columns (default 50)")
    ap.add_argument("--write-docs", action="store_true",
                    help=f"write the result into {DOCS.relative_to(REPO)}, section '{SECTION[3:]}'")
    ap.add_argument("--archive-rows", type=int, default=1_000_000,
                    help="archived forecasts of the performance week (default 1,000,000; 0 skips the stage)")
    ap.add_argument("--child", choices=("reference", "check", "cold", "performance"), help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return
    if args.rows < 10_000 or args.features < 1:
        ap.error("--rows must be at least 10,000 and --features at least 1")
    if args.archive_rows and args.archive_rows < 1_000:
        ap.error("--archive-rows must be 0 (skip) or at least 1,000")
    command = command_line("bench_monitoring.py", argv)
    head = header_lines(PACKAGES)
    shape = f"{args.rows:,} rows x {args.features} features; {args.archive_rows:,} archived forecasts"
    print("\n".join(head))
    print(f"Command: {command}  ({shape})", flush=True)
    res = {}
    with tempfile.TemporaryDirectory(prefix="aurum-bench-monitoring-") as tmp:
        for kind, folder in (("reference", "warm"), ("check", "warm"), ("cold", "cold"), ("performance", "perf")):
            if kind == "performance" and not args.archive_rows:
                continue
            print(f"  {kind} ...", file=sys.stderr, flush=True)
            res[kind] = run_child(kind, args.rows, args.features, Path(tmp) / folder, args.archive_rows)
    table = render(args.rows, args.features, res)
    print("\n".join(table))
    print("\n".join(notes(args.rows, args.features, res)))
    if args.write_docs:
        record(SECTION, command, shape, head, table, notes(args.rows, args.features, res))


if __name__ == "__main__":
    main()
