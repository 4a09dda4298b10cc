"""The unchanged pipeline on nine ENTSO-E bidding zones it was never tuned on: ``make bench-entsoe``.

A script, not a test. The training issue asks that the pipeline work unchanged on markets it was
never tuned on. For each zone of ``../shared/data/entsoe`` (BE, DE_LU, DK_1, ES, FR, NL, NO_2, PL,
SE_3; 2015 - mid 2023, DE_LU from 2018-10), in one fresh ``AURUM_HOME``, it runs the commands a user
would, nothing else:

1. ``aurum ingest entsoe <ZONE> ../shared/data/entsoe/<ZONE>.csv`` (every zone's quirks: DST,
   duplicated and empty rows, zeros standing for missing data, negative prices);
2. ``aurum features compute`` and ``aurum features apply`` (feature tables, Feast repo);
3. per test week, ``aurum backtest --market <ZONE> --model ensemble --from <Monday> --to <Monday + 7>
   --refit-days 7`` with the weekly naive and LEAR baselines: each day D forecast with only what was
   known on D-1 by the project's default champion recipe (``training.specs.DEFAULTS``, chosen on the
   EPF validation years; nothing tuned here), fitted at the week's first issue time on the history
   before it: all of it, or the last ``--train-days`` days (``make bench-entsoe``: 1456, the 4 years
   of the EPF benchmark).

The test window is ``--weeks`` whole Monday-to-Sunday weeks spread evenly over the zone's last year
of data (the 52 weeks ending with the last complete one): every season and weekday equally, at a
fraction of the cost of 52 refits. ``--crisis`` adds a second window, ``--crisis-weeks`` weeks spread
evenly over ``--crisis-year`` (2022: the gas-price crisis, prices to 871 EUR/MWh, FR 2,987).

The forecasts are read back from each MLflow run's artifacts (``backtest/backtest.csv``,
``backtest/baselines/{naive,lear}.csv``) and scored with ``models.metrics`` over all weeks of a window:
MAE, rMAE (against the weekly naive on the same hours), sMAPE and 80 % coverage on the hours as
delivered (23 / 25 on DST days), and the one-sided multivariate Diebold-Mariano test of the ensemble
against LEAR on days folded to 24 local hours (``training.backtest.daily``). A command that fails is
a finding: the zone's row says which command, and the error is printed below the table.

    python benchmarks/bench_entsoe.py                          # nine zones, 8 weeks; writes nothing
    python benchmarks/bench_entsoe.py --crisis --train-days 1456 --write-docs   # what make bench-entsoe runs:
                                                               # and 4 weeks of 2022; into docs/benchmarks.md
    python benchmarks/bench_entsoe.py --zones NL --weeks 1     # a quick look
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchreport import command_line, header_lines, record, require_shared_data  # noqa: E402

SECTION = "## ENTSO-E zones: the unchanged pipeline on nine bidding zones"
PACKAGES = ("lightgbm", "scikit-learn", "mlflow", "feast", "pyiceberg", "pandas", "numpy")
ZONES = ("BE", "DE_LU", "DK_1", "ES", "FR", "NL", "NO_2", "PL", "SE_3")
YEAR_WEEKS = 52


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class CommandFailed(RuntimeError):
    """An ``aurum`` command exited non-zero; ``summary`` is its last error line."""

    def __init__(self, args: tuple[str, ...], code: int, stdout: str, stderr: str):
        self.command = "aurum " + " ".join(args)
        self.code = code
        lines = [ln.strip() for ln in (stderr or stdout).splitlines() if ln.strip() and not ln.startswith("[")]
        self.summary = next((ln for ln in reversed(lines) if re.match(r"^(error:|[\w.]*(Error|Exception)\b)", ln)),
                            lines[-1] if lines else f"exit {code}")
        super().__init__(f"{self.command} failed ({code}):\n{stdout[-3000:]}\n{stderr[-3000:]}")


def aurum(env: dict[str, str], *args: str) -> str:
    """Run one ``aurum`` command as a user would; its stdout, or :class:`CommandFailed`."""
    cmd = [str(Path(sys.executable).with_name("aurum")), *args]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise CommandFailed(args, proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


def last_price_day(csv: Path) -> dt.date:
    """The last local day of a zone file with a price (DE_LU ends with empty rows), by the platform's reader."""
    from features.sources import read_entsoe

    frame = read_entsoe(csv).frame
    return frame.loc[frame["price"].notna(), "timestamp"].max().date()


def last_year_weeks(last_day: dt.date, n: int) -> list[dt.date]:
    """Mondays of ``n`` whole weeks spread evenly over the 52 weeks that end with the last complete week."""
    end = last_day + dt.timedelta(days=1)  # the first day without data
    latest = end - dt.timedelta(days=7)  # the last start of a whole week
    last_monday = latest - dt.timedelta(days=latest.weekday())
    first = last_monday - dt.timedelta(weeks=YEAR_WEEKS - 1)
    return spread(first, YEAR_WEEKS, n)


def year_weeks(year: int, n: int) -> list[dt.date]:
    """Mondays of ``n`` whole weeks spread evenly over the Monday weeks that start in ``year``."""
    jan1 = dt.date(year, 1, 1)
    first = jan1 + dt.timedelta(days=(7 - jan1.weekday()) % 7)
    count = sum(1 for k in range(54) if (first + dt.timedelta(weeks=k)).year == year)
    return spread(first, count, n)


def spread(first: dt.date, count: int, n: int) -> list[dt.date]:
    """``n`` of the ``count`` weeks from ``first``, one in the middle of each of ``n`` equal stretches."""
    n = min(n, count)
    return [first + dt.timedelta(weeks=int((i + 0.5) * count / n)) for i in range(n)]


@dataclass
class Window:
    """One test window of one zone: its weeks, the runs that forecast them and what failed."""

    name: str
    weeks: list[dt.date]
    runs: list[str] = field(default_factory=list)
    frames: dict[str, list[pd.DataFrame]] = field(default_factory=lambda: {"ours": [], "naive": [], "lear": []})
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (week, command, error)
    done: list[dt.date] = field(default_factory=list)
    skipped: list[dt.date] = field(default_factory=list)  # not started: the time budget ran out
    seconds: float = 0.0  # backtest commands, summed


def backtest_week(env: dict[str, str], zone: str, monday: dt.date, model: str, params: tuple[str, ...],
                  train_days: int | None) -> tuple[str, dict[str, pd.DataFrame]]:
    """One week through ``aurum backtest``; the run id and its forecasts read back from MLflow."""
    from models import mlflow_model as ml

    extra = [a for p in params for a in ("--param", p)] + (["--train-days", str(train_days)] if train_days else [])
    out = aurum(env, "backtest", "--market", zone, "--model", model, "--from", str(monday),
                "--to", str(monday + dt.timedelta(days=7)), "--refit-days", "7", "--baselines", "naive,lear", *extra)
    run_id = re.search(r"^run (\w+):", out, re.M).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        frames = {"ours": pd.read_csv(ml.download_artifact(run_id, "backtest/backtest.csv", tmp))}
        for name in ("naive", "lear"):
            frames[name] = pd.read_csv(ml.download_artifact(run_id, f"backtest/baselines/{name}.csv", tmp))
    return run_id, frames


def run_week(env: dict[str, str], zone: str, window: Window, monday: dt.date, model: str, params: tuple[str, ...],
             train_days: int | None, deadline: float | None) -> None:
    """Backtest one week of a window and keep its forecasts; a failure is recorded, not raised."""
    if deadline is not None and time.monotonic() > deadline:
        window.skipped.append(monday)
        return
    w0 = time.perf_counter()
    try:
        run_id, frames = backtest_week(env, zone, monday, model, params, train_days)
    except CommandFailed as exc:
        window.failures.append((str(monday), exc.command, exc.summary))
        log(f"{zone} {window.name} week {monday}: FAILED: {exc.summary}")
        log(str(exc))
        return
    finally:
        window.seconds += time.perf_counter() - w0
    window.runs.append(run_id)
    window.done.append(monday)
    for k, f in frames.items():
        window.frames[k].append(f)
    log(f"{zone} {window.name} week {monday}: run {run_id} in {time.perf_counter() - w0:.0f} s")


def spread_order(n: int) -> list[int]:
    """0 .. n-1 in bit-reversed order (0, 4, 2, 6, 1, ... for 8): any prefix is spread over the whole range,
    so a run stopped by its time budget still covers the year."""
    bits = max(1, (n - 1).bit_length())
    return sorted(range(n), key=lambda i: int(format(i, f"0{bits}b")[::-1], 2))


def score(window: Window) -> dict[str, float] | None:
    """Metrics of the window's weeks together, or None when no week was forecast."""
    from models import metrics
    from training.backtest import daily

    if not window.frames["ours"]:
        return None
    key = ["market", "delivery_start"]
    ours, naive, lear = (pd.concat(window.frames[k], ignore_index=True).sort_values(key, ignore_index=True)
                         for k in ("ours", "naive", "lear"))
    hours = ours.merge(naive[key + ["q50"]].rename(columns={"q50": "naive_q50"}), on=key, how="left", validate="1:1")
    hours = hours.merge(lear[key + ["q50"]].rename(columns={"q50": "lear"}), on=key, how="left", validate="1:1")
    h = hours[hours["actual"].notna()]
    a = h["actual"].to_numpy(float)
    out = {
        "hours": len(h),
        "mae": metrics.mae(a, h["q50"]), "rmae": metrics.rmae(a, h["q50"], h["naive_q50"]),
        "smape": metrics.smape(a, h["q50"]), "coverage": metrics.coverage(a, h["q10"], h["q90"]),
        "lear_mae": metrics.mae(a, h["lear"]), "lear_rmae": metrics.rmae(a, h["lear"], h["naive_q50"]),
        "naive_mae": metrics.mae(a, h["naive_q50"]),
        "mean_price": float(np.mean(a)), "max_price": float(np.max(a)), "negative_hours": int((a < 0).sum()),
        "missing_forecasts": int(h["q50"].isna().sum()),
    }
    # DM on whole days folded to 24 local hours, as aurum backtest's own comparison does.
    hours["delivery_start"] = pd.to_datetime(hours["delivery_start"], utc=True)
    act, mine, other = (daily(hours, c) for c in ("actual", "q50", "lear"))
    ok = ~(np.isnan(act).any(axis=1) | np.isnan(mine).any(axis=1) | np.isnan(other).any(axis=1))
    out["days"] = len(act)
    out["dm_p_vs_lear"] = metrics.diebold_mariano(act[ok], mine[ok], other[ok]) if ok.sum() > 1 else float("nan")
    return out


@dataclass
class ZoneResult:
    zone: str
    ingest: str = ""  # the ingest summary (quarantine by reason, gaps)
    failure: tuple[str, str] | None = None  # (command, error) of a failed ingest / features step
    windows: list[Window] = field(default_factory=list)


def ingest_summary(out: str) -> str:
    """The interesting part of ``aurum ingest``'s report: rows, prices, quarantine by reason, gaps."""
    if " skipped: " in out:
        return "already in the lake (ingest skipped)"
    counts: dict[str, str] = {}
    reasons = []
    for line in out.splitlines():
        m = re.match(r"^\s+(rows read|prices accepted|quarantined|gaps \(missing periods\)|DST autumn hours split)\s+([\d,]+)$", line)
        r = re.match(r"^\s{4}([a-z_]+)\s+([\d,]+)$", line)
        if m:
            counts[m.group(1)] = m.group(2)
        elif r:
            reasons.append(f"{r.group(1)} {r.group(2)}")
    return (f"{counts.get('rows read', '?')} rows, {counts.get('prices accepted', '?')} prices, "
            f"{counts.get('quarantined', '?')} quarantined" + (f" ({', '.join(reasons)})" if reasons else "")
            + f", {counts.get('gaps (missing periods)', '?')} gaps")


def render(results: list[ZoneResult], model: str, wall: float, jobs: int, train_days: int | None = None
           ) -> tuple[list[str], list[str]]:
    lines: list[str] = []
    names = list(dict.fromkeys(w.name for r in results for w in r.windows)) or ["last year"]
    for wname in names:
        rows = [(r, next((w for w in r.windows if w.name == wname), None)) for r in results]
        common = next((w.weeks for _, w in rows if w is not None), [])
        lines += [f"### {wname}: {len(common)} whole weeks (Monday to Sunday) per zone", "",
                  "Weeks starting " + ", ".join(map(str, common)) + ".", "",
                  f"| zone | weeks | days | {model} MAE | rMAE | sMAPE % | cov80 | LEAR MAE | naive MAE | DM p vs LEAR "
                  "| mean / max price | negative hours | backtest min |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        scored = []
        for r, w in rows:
            if r.failure is not None:
                lines.append(f"| {r.zone} | failed: `{r.failure[0]}` |" + " |" * 11)
                continue
            if w is None:
                continue
            s = score(w)
            weeks = f"{len(w.done)}/{len(w.weeks)}"
            if w.weeks != common:
                weeks += " (" + ", ".join(map(str, w.weeks)) + ")"
            if w.failures:
                weeks += f", {len(w.failures)} failed"
            if w.skipped:
                weeks += f", {len(w.skipped)} not run (time budget)"
            if s is None:
                lines.append(f"| {r.zone} | {weeks} | 0 |" + " |" * 10)
                continue
            scored.append(s)
            lines.append(f"| {r.zone} | {weeks} | {s['days']} | {s['mae']:.2f} | {s['rmae']:.3f} | {s['smape']:.1f} "
                         f"| {s['coverage']:.3f} | {s['lear_mae']:.2f} | {s['naive_mae']:.2f} | {s['dm_p_vs_lear']:.3f} "
                         f"| {s['mean_price']:.0f} / {s['max_price']:.0f} | {s['negative_hours']} "
                         f"| {w.seconds / 60:.1f} |")
        if scored:
            lines += ["", f"{len(scored)} zones scored: rMAE median {np.median([s['rmae'] for s in scored]):.3f} "
                      f"(range {min(s['rmae'] for s in scored):.3f} .. {max(s['rmae'] for s in scored):.3f}; "
                      f"LEAR alone median {np.median([s['lear_rmae'] for s in scored]):.3f}); {model} below LEAR's MAE "
                      f"in {sum(s['mae'] < s['lear_mae'] for s in scored)}, significantly (DM p < 0.05) in "
                      f"{sum(s['dm_p_vs_lear'] < 0.05 for s in scored)}; 80 % coverage median "
                      f"{np.median([s['coverage'] for s in scored]):.3f}."]
        lines.append("")
    total = sum(len(w.done) for r in results for w in r.windows)
    lines.append(f"Whole benchmark (ingest, features, {total} weekly backtests with baselines, {len(results)} zones, "
                 f"{jobs} at a time): {wall / 60:.1f} min.")
    notes = ["Each week is one `aurum backtest --from <Monday> --to <Monday + 7> --refit-days 7`: the model is fitted at "
             "the week's first issue time (D-1 12:00 local) on "
             + (f"the last {train_days} days before it" if train_days else "all earlier history")
             + ", each day forecast from the features "
             "known at its own issue time; since a week has no earlier forecasts of its own, the conformal interval is "
             "calibrated on the 182 held-out days before it (as `aurum train`'s final model is). MAE, rMAE (vs the "
             "weekly naive on the same hours), sMAPE and cov80 (share of hours inside P10-P90) are over the hours as "
             "delivered; DM p = one-sided multivariate Diebold-Mariano p-value that the ensemble beats LEAR "
             "(small = significantly better). sMAPE is inflated where prices are near zero or negative.",
             "",
             "Ingest per zone (`aurum ingest entsoe`): " + "; ".join(f"{r.zone}: {r.ingest}" for r in results if r.ingest)
             + "."]
    failures = [(r.zone, "", *r.failure) for r in results if r.failure]
    failures += [(r.zone, f"{w.name} week {wk}", cmd, err) for r in results for w in r.windows
                 for wk, cmd, err in w.failures]
    if failures:
        notes += ["", "Failures:", ""]
        notes += [f"- {z}{' ' + where if where else ''}: `{cmd}`: {err}" for z, where, cmd, err in failures]
    else:
        notes += ["", "No command failed."]
    return lines, notes


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="The unchanged pipeline (ingest, features, aurum backtest) on the "
                                             "ENTSO-E bidding zones.")
    ap.add_argument("--zones", default=",".join(ZONES), help=f"comma-separated zones (default {','.join(ZONES)})")
    ap.add_argument("--model", default="ensemble", help="model family to backtest (default ensemble, the champion recipe)")
    ap.add_argument("--weeks", type=int, default=8, help="whole weeks spread over each zone's last year (default 8)")
    ap.add_argument("--crisis", action="store_true", help="also backtest weeks of the price crisis (--crisis-year)")
    ap.add_argument("--crisis-weeks", type=int, default=4, help="weeks spread over the crisis year (default 4)")
    ap.add_argument("--crisis-year", type=int, default=2022, help="the crisis year (default 2022)")
    ap.add_argument("--train-days", type=int, default=None, help="passed to aurum backtest (default: all history)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="a model parameter passed to aurum backtest (repeatable)")
    ap.add_argument("--jobs", type=int, default=2, help="zones backtested at once (default 2, one per core)")
    ap.add_argument("--budget-minutes", type=float, default=None,
                    help="start no backtest after this many minutes from the start; report the weeks done")
    ap.add_argument("--home", type=Path, default=None, help="AURUM_HOME to use (default: a fresh temporary one, removed after)")
    ap.add_argument("--write-docs", action="store_true", help="record the result in docs/benchmarks.md")
    args = ap.parse_args(argv)
    data_dir = require_shared_data("entsoe", "ENTSO-E")
    zones = [z.strip() for z in args.zones.split(",") if z.strip()]
    unknown = [z for z in zones if not (data_dir / "entsoe" / f"{z}.csv").is_file()]
    if unknown:
        sys.exit(f"no file for zone(s) {unknown}; expected among {', '.join(ZONES)}")
    home = args.home or Path(tempfile.mkdtemp(prefix="aurum-bench-entsoe-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AURUM_")} | {"AURUM_HOME": str(home)}
    # One thread per backtest process: zones run in parallel processes, one per core (LightGBM n_jobs=1).
    env |= {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    results = [ZoneResult(z) for z in zones]
    wall0 = time.perf_counter()
    deadline = None if args.budget_minutes is None else time.monotonic() + args.budget_minutes * 60
    try:
        for r in results:
            log(f"ingest {r.zone}")
            try:
                r.ingest = ingest_summary(aurum(env, "ingest", "entsoe", r.zone, str(data_dir / "entsoe" / f"{r.zone}.csv")))
            except CommandFailed as exc:
                r.failure = (exc.command, exc.summary)
                log(str(exc))
        ok = [r for r in results if r.failure is None]
        log("features compute + apply")
        try:
            aurum(env, "features", "compute")
        except CommandFailed as exc:
            # One zone's failure should not hide the others: compute zone by zone to see which one fails.
            log(str(exc))
            for r in ok:
                try:
                    aurum(env, "features", "compute", "--markets", r.zone)
                except CommandFailed as zexc:
                    r.failure = (zexc.command, zexc.summary)
        aurum(env, "features", "apply")
        from features.settings import AurumSettings
        from models import mlflow_model as ml

        ml.configure(AurumSettings(home=home).mlflow_tracking_uri())
        for r in results:
            if r.failure is None:
                last = last_price_day(data_dir / "entsoe" / f"{r.zone}.csv")
                r.windows.append(Window("last year", last_year_weeks(last, args.weeks)))
                if args.crisis:
                    r.windows.append(Window(f"crisis {args.crisis_year}", year_weeks(args.crisis_year, args.crisis_weeks)))

        # Week-major: round k backtests the k-th week (in spread order) of every window of every zone, so a run
        # cut short by --budget-minutes has the same share of weeks, spread over the year, in every zone.
        tasks = []
        for k in range(max((len(w.weeks) for r in results for w in r.windows), default=0)):
            for r in results:
                for w in r.windows:
                    order = spread_order(len(w.weeks))
                    if k < len(order):
                        tasks.append((r.zone, w, w.weeks[order[k]]))
        log(f"{len(tasks)} weekly backtests, {args.jobs} at a time")
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(lambda t: run_week(env, t[0], t[1], t[2], args.model, tuple(args.param), args.train_days,
                                             deadline), tasks))
        wall = time.perf_counter() - wall0
        head = header_lines(PACKAGES)
        table, notes = render(results, args.model, wall, args.jobs, args.train_days)
    finally:
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)
    print("\n".join([*head, "", *table, "", *notes]))
    if args.write_docs:
        shape = (f"{', '.join(zones)}; {args.weeks} weeks of each zone's last year"
                 + (f" and {args.crisis_weeks} of {args.crisis_year}" if args.crisis else "")
                 + f", model {args.model}, refit weekly" + "".join(f", {p}" for p in args.param)
                 + (f", train days {args.train_days}" if args.train_days else ""))
        record(SECTION, command_line("bench_entsoe.py", argv), shape, head, table, notes)


if __name__ == "__main__":
    main()
