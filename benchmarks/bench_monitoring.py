"""Benchmark of drift monitoring at scale: 1 million rows x 50 features, time and peak memory.

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
- ``cold``: both in one process (a champion's first check).

Usage::

    python benchmarks/bench_monitoring.py                   # 1,000,000 rows x 50 features
    python benchmarks/bench_monitoring.py --rows 100000     # smaller
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


def child(args: argparse.Namespace) -> None:
    warnings.filterwarnings("ignore")
    settings = MonitoringSettings()
    folder = Path(args.folder)
    start = time.perf_counter()
    out: dict = {}
    if args.child in ("reference", "cold"):
        out["reference"] = stage_reference(args.rows, args.features, folder, settings)
    if args.child in ("check", "cold"):
        out["check"] = stage_check(args.rows, args.features, folder, settings)
    out |= {"stage_seconds": time.perf_counter() - start, "peak_mib": rss_mib()}
    print("RESULT " + json.dumps(out), flush=True)


def run_child(kind: str, rows: int, features: int, folder: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--rows", str(rows),
           "--features", str(features), "--folder", str(folder)]
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
    return table


def notes(rows: int, features: int, res: dict[str, dict]) -> list[str]:
    worst_s = max(res["reference"]["reference"]["seconds"], res["check"]["check"]["seconds"],
                  res["cold"]["reference"]["seconds"] + res["cold"]["check"]["seconds"])
    worst_mib = max(r["peak_mib"] for r in res.values())
    ok = lambda met: "met" if met else "NOT met"  # noqa: E731
    s = MonitoringSettings()
    return [
        f"- Goal (< {TIME_GOAL_S:.0f} s and < {RSS_GOAL_MIB / 1024:.0f} GB for the drift of {rows:,} rows x "
        f"{features} features): slowest stage {worst_s:.1f} s, largest peak RSS {worst_mib:.0f} MiB: "
        f"{ok(worst_s < TIME_GOAL_S and worst_mib < RSS_GOAL_MIB)}.",
        f"- Evidently's scores equal the engine's: {'yes' if res['check']['check']['agree'] else 'NO'}.",
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
    ap.add_argument("--child", choices=("reference", "check", "cold"), help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return
    if args.rows < 10_000 or args.features < 1:
        ap.error("--rows must be at least 10,000 and --features at least 1")
    command = command_line("bench_monitoring.py", argv)
    head = header_lines(PACKAGES)
    shape = f"{args.rows:,} rows x {args.features} features"
    print("\n".join(head))
    print(f"Command: {command}  ({shape})", flush=True)
    res = {}
    with tempfile.TemporaryDirectory(prefix="aurum-bench-monitoring-") as tmp:
        for kind, folder in (("reference", "warm"), ("check", "warm"), ("cold", "cold")):
            print(f"  {kind} ...", file=sys.stderr, flush=True)
            res[kind] = run_child(kind, args.rows, args.features, Path(tmp) / folder)
    table = render(args.rows, args.features, res)
    print("\n".join(table))
    print("\n".join(notes(args.rows, args.features, res)))
    if args.write_docs:
        record(SECTION, command, shape, head, table, notes(args.rows, args.features, res))


if __name__ == "__main__":
    main()
