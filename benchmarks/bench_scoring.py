"""Batch scoring throughput of ``aurum score``, local and Ray engines, at 1 and 10 market-years (``make bench-scoring``).

A script, not a test: it measures and prints, and never asserts on time. The goal it reports on (the
serving issue): one market-year (8,760 hours) scored in under 5 s locally; rows/s of both engines at
1 and 10 market-years.

The data is built through the platform's own commands in a temporary ``AURUM_HOME`` (or ``--home``
names one built before): ``aurum ingest synthetic`` of SYN_NORTH from October of the year before the
first scored year to the end of 2023, ``features compute``, ``features apply``, and ``aurum train`` of
a small LightGBM (60 trees, no baselines, 14 backtest days, the last 180 days of training data), which
the approval gate makes the champion. The synthetic generator knows three markets, so ten
market-years are one market over ten calendar years (2014-2023) scored as one job; one market-year
is 2023 (365 days, 8,760 hours). Ten markets of one year each would be ten jobs, each paying the
fixed cost of a job (the start-up measured at one market-year) once more.

Every measurement starts from an empty forecast archive (the previous run's rows are removed in one
commit), so every day of the window is scored: a job skips the days already archived for the
champion's version. Per engine and size:

- ``aurum score`` as an operator runs it, in a fresh process (``--no-progress``): wall time from
  process start to exit, the job's own time as the command reports it (plan to compaction, without
  the interpreter start and the imports), and the peak RSS of that process (for Ray: the driver only);
- the same job in this process through ``serving.batch.score`` (imports already paid), with the
  phases timed: plan (champion, days already archived), start (model load and feature store; for Ray
  also ``ray.init``), score (for Ray: the actors start, import, load the model and score), archive (one
  commit per 7-day chunk; for Ray in a writer actor) and compaction. For the local engine the score
  phase is split into the feature reads (``featurestore.training_set``, point in time through the
  feature service), the model's ``predict`` and the rest (entity rows, quality, building and checking
  the archive rows).

``--profile`` also runs the local job at the smallest size under cProfile and prints the functions
with the largest cumulative and own time.

Usage::

    python benchmarks/bench_scoring.py                        # local and ray at 1 and 10 market-years
    python benchmarks/bench_scoring.py --sizes 0.1 --engines local --profile   # a small smoke run
    python benchmarks/bench_scoring.py --write-docs           # also record it in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import io
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from benchreport import command_line, header_lines, record  # noqa: E402
from serving.batch import DEFAULT_CHUNK_DAYS  # noqa: E402

SECTION = "## Serving: batch scoring throughput (`aurum score`)"
PACKAGES = ("feast", "duckdb", "mlflow", "lightgbm", "pyiceberg", "pyarrow", "pandas", "ray")
MARKET = "SYN_NORTH"
LAST_DAY = dt.date(2023, 12, 31)  # every window ends here; the data ends the day after
GOAL_SECONDS = 5.0
AURUM = str(Path(sys.executable).with_name("aurum"))
TRAIN = ["--model", "lgbm", "--backtest-days", "14", "--train-days", "180", "--baselines", "none",
         "--param", "n_estimators=60", "--param", "calibration_days=28"]


def window(years: float) -> tuple[dt.date, dt.date]:
    """The scored local days: whole calendar years ending 2023 for a whole number, else the last days."""
    if float(years).is_integer():
        return dt.date(LAST_DAY.year - int(years) + 1, 1, 1), LAST_DAY
    return LAST_DAY - dt.timedelta(days=max(1, round(365 * years)) - 1), LAST_DAY


def aurum_env(home: Path) -> dict[str, str]:
    """The caller's environment without its ``AURUM_`` settings, pointed at ``home``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("AURUM_")}, "AURUM_HOME": str(home)}


def prepare(home: Path, first: dt.date) -> None:
    """SYN_NORTH with features from before ``first`` to the end of 2023 and an approved small champion."""
    start = dt.date(first.year - 1, 10, 1)  # the longest lags and rolling windows reach back weeks
    steps = [
        ["ingest", "synthetic", "--markets", MARKET, "--start", start.isoformat(),
         "--end", (LAST_DAY + dt.timedelta(days=1)).isoformat()],
        ["features", "compute", "--markets", MARKET], ["features", "apply"],
        ["train", "--market", MARKET, *TRAIN],
    ]
    for step in steps:
        t = time.perf_counter()
        done = subprocess.run([AURUM, *step], env=aurum_env(home), capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"aurum {' '.join(step)} failed:\n{done.stderr[-2000:]}{done.stdout[-2000:]}")
        print(f"  aurum {' '.join(step[:2])}: {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
        if step[0] == "train" and "champion" not in done.stdout:
            sys.exit(f"aurum train did not make a champion:\n{done.stdout[-2000:]}")


def empty_archive(settings) -> None:
    """Remove every archived forecast in one commit, so the next job scores every day again."""
    from features.lake import FORECASTS_TABLE, Lake, all_of
    from serving.archive import ensure_forecasts_table

    lake = Lake.open(settings, create=False)
    ensure_forecasts_table(lake)
    lake.rewrite(FORECASTS_TABLE, all_of(), lambda old: None if old is None or not old.num_rows else old.slice(0, 0))


# --------------------------------------------------------------------------- the command, in a fresh process


@dataclass
class CliRun:
    wall: float
    job: float  # as the command reports it: plan to compaction
    rows: int
    days: int
    peak_rss_mib: float


JOB_LINE = re.compile(r"(\d+) scored, (\d+) already archived; ([\d,]+) rows .* in ([\d.]+) s")


def score_command(engine: str, first: dt.date, last: dt.date, chunk_days: int) -> list[str]:
    return [AURUM, "score", "--market", MARKET, "--from", first.isoformat(), "--to", last.isoformat(),
            "--engine", engine, "--chunk-days", str(chunk_days), "--no-progress"]


def run_cli(home: Path, engine: str, first: dt.date, last: dt.date, chunk_days: int, log: Path) -> CliRun:
    cmd = score_command(engine, first, last, chunk_days)
    with log.open("w") as out:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, env=aurum_env(home), stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    found = JOB_LINE.search(text)
    if proc.returncode or not found:
        sys.exit(f"aurum score ({engine}) failed with {proc.returncode}:\n{text[-3000:]}")
    if int(found.group(2)):
        sys.exit(f"aurum score ({engine}) skipped days: the archive was not empty:\n{text[-1000:]}")
    return CliRun(wall, float(found.group(4)), int(found.group(3).replace(",", "")), int(found.group(1)),
                  usage.ru_maxrss / 1024)


# --------------------------------------------------------------------------- the job in this process, phase by phase


@dataclass
class Phases:
    total: float = 0.0
    rows: int = 0
    marks: dict[str, float] = field(default_factory=dict)  # first and last progress call per phase
    spent: dict[str, float] = field(default_factory=dict)  # summed time of wrapped calls

    def progress(self, phase: str, done: int, total: int) -> None:
        now = time.perf_counter()
        self.marks.setdefault(f"{phase}:first", now)
        self.marks[f"{phase}:last"] = now

    def add(self, name: str, seconds: float) -> None:
        self.spent[name] = self.spent.get(name, 0.0) + seconds

    def split(self, t0: float) -> dict[str, float]:
        """Seconds of plan, start, score, archive and compaction, and of the wrapped calls."""
        m = self.marks
        end = t0 + self.total
        out = {"plan": self.spent.get("plan", 0.0),
               "start": m["score:first"] - t0 - self.spent.get("plan", 0.0),
               "score": m["archive:first"] - m["score:first"],
               "archive": m["archive:last"] - m["archive:first"],
               "compact": end - m["archive:last"]}
        return out | {k: v for k, v in self.spent.items() if k != "plan"}


class _TimedModel:
    """The loaded pyfunc with its ``predict`` timed (everything else passed through)."""

    def __init__(self, model, phases: Phases):
        self._model, self._phases = model, phases

    def __getattr__(self, name):
        return getattr(self._model, name)

    def predict(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return self._model.predict(*args, **kwargs)
        finally:
            self._phases.add("predict", time.perf_counter() - t)


@contextlib.contextmanager
def timed_calls(phases: Phases, *, inside: bool):
    """Time ``plan_job`` and, when the work runs in this process (``inside``), the feature reads and predict."""
    from features import featurestore
    from models import mlflow_model as ml
    from serving import batch

    saved = (batch.plan_job, featurestore.training_set, ml.load_forecaster)

    def timing(name, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases.add(name, time.perf_counter() - t)
        return wrapper

    batch.plan_job = timing("plan", saved[0])
    if inside:
        featurestore.training_set = timing("features", saved[1])
        ml.load_forecaster = lambda *a, **k: _TimedModel(saved[2](*a, **k), phases)
    try:
        yield
    finally:
        batch.plan_job, featurestore.training_set, ml.load_forecaster = saved


def run_inprocess(settings, engine: str, first: dt.date, last: dt.date, actors: int,
                  chunk_days: int) -> tuple[Phases, dict]:
    from serving import batch

    phases = Phases()
    with timed_calls(phases, inside=engine == "local"):
        t0 = time.perf_counter()
        result = batch.score(settings, MARKET, first, last, engine=engine, ray_actors=actors,
                             chunk_days=chunk_days, progress=phases.progress)
        phases.total = time.perf_counter() - t0
    if result.days_skipped:
        sys.exit(f"in-process {engine} job skipped {len(result.days_skipped)} days: the archive was not empty")
    phases.rows = result.rows
    return phases, phases.split(t0)


def warm_up(settings, chunk_days: int) -> None:
    """One small job in this process first, so the in-process runs find the imports and caches warm."""
    from serving import batch

    empty_archive(settings)
    batch.score(settings, MARKET, LAST_DAY - dt.timedelta(days=6), LAST_DAY, engine="local", chunk_days=chunk_days)


def import_times(home: Path, first: dt.date, last: dt.date, chunk_days: int) -> tuple[float, float, list[tuple[str, float]]]:
    """``aurum score`` (local) once more under ``python -X importtime``: (wall s, import s, the slowest
    top-level imports), a top-level import being one no other module's import started (a lazy import
    inside a function counts as one)."""
    cmd = [sys.executable, "-X", "importtime", *score_command("local", first, last, chunk_days)]
    t = time.perf_counter()
    done = subprocess.run(cmd, env=aurum_env(home), capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode:
        sys.exit(f"aurum score under -X importtime failed:\n{done.stderr[-2000:]}")
    top: list[tuple[str, float]] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        if not name[1:].startswith(" "):  # no indentation: not nested in another import
            top.append((name.strip(), int(cumulative) / 1e6))
    return wall, sum(s for _, s in top), sorted(top, key=lambda x: -x[1])


def profile_local(settings, first: dt.date, last: dt.date, top: int, chunk_days: int) -> str:
    """cProfile of the in-process local job: the top functions by cumulative and by own time."""
    from serving import batch

    prof = cProfile.Profile()
    prof.enable()
    batch.score(settings, MARKET, first, last, engine="local", chunk_days=chunk_days)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


# --------------------------------------------------------------------------- report


def fmt_years(years: float) -> str:
    return f"{years:g}"


def market_years(years: float) -> str:
    return f"{years:g} market-year{'' if years == 1 else 's'}"


def tables(results: list[dict], inprocess: bool) -> list[str]:
    rows = ["| engine | market-years | days | rows | `aurum score` wall s | job s (reported) | rows/s (wall) "
            "| rows/s (job) | peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        c = r["cli"]
        rows.append(f"| {r['engine']} | {fmt_years(r['years'])} | {c.days:,} | {c.rows:,} | {c.wall:.1f} | {c.job:.1f} "
                    f"| {c.rows / c.wall:,.0f} | {c.rows / c.job:,.0f} | {c.peak_rss_mib:.0f} |")
    if not inprocess:
        return rows
    rows += ["", "| engine | market-years | in-process total s | plan | start | score | of which features / "
             "predict / rows | archive | compact | rows/s |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in results:
        p, s = r["phases"], r["split"]
        inner = "-"
        if "features" in s:
            rest = s["score"] - s["features"] - s["predict"]
            inner = f"{s['features']:.2f} / {s['predict']:.2f} / {rest:.2f}"
        rows.append(f"| {r['engine']} | {fmt_years(r['years'])} | {p.total:.1f} | {s['plan']:.2f} | {s['start']:.2f} "
                    f"| {s['score']:.2f} | {inner} | {s['archive']:.2f} | {s['compact']:.2f} "
                    f"| {p.rows / p.total:,.0f} |")
    return rows


def goal_line(results: list[dict]) -> str:
    one = next((r for r in results if r["engine"] == "local" and r["years"] == 1), None)
    if one is None:
        return "- Goal (one market-year under 5 s locally): not measured in this run (no local run at 1 market-year)."
    c, p = one["cli"], one["phases"]
    verdict = lambda s: "met" if s < GOAL_SECONDS else "not met"  # noqa: E731
    return (f"- Goal (one market-year, 8,760 hours, under {GOAL_SECONDS:.0f} s locally): the job {c.job:.1f} s as "
            f"`aurum score` reports it ({verdict(c.job)}), {p.total:.1f} s in a warm process ({verdict(p.total)}); "
            f"the command from process start to exit {c.wall:.1f} s ({verdict(c.wall)}).")


def import_line(imports: tuple[float, float, list[tuple[str, float]]], years: float) -> str:
    wall, total, top = imports
    slow = ", ".join(f"{name} {sec:.1f}" for name, sec in top[:8] if sec >= 0.2)
    return (f"- Imports of `aurum score` (local, {market_years(years)}, `python -X importtime`): {total:.1f} s "
            f"of its {wall:.1f} s wall time; the slowest top-level imports (s): {slow}.")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, help="a home prepared by an earlier run (--keep) covering the sizes "
                    "(default: build one in a temporary folder)")
    ap.add_argument("--sizes", default="1,10", help="market-years to score, comma-separated; a whole number is "
                    "calendar years ending 2023, a fraction the last days of 2023 (default 1,10)")
    ap.add_argument("--engines", default="local,ray", help="engines, comma-separated (default local,ray)")
    ap.add_argument("--ray-actors", type=int, default=2, help="scoring actors of the ray engine (default 2)")
    ap.add_argument("--chunk-days", type=int, default=DEFAULT_CHUNK_DAYS, help="days per archive commit, as aurum "
                    f"score --chunk-days (default {DEFAULT_CHUNK_DAYS}, the command's default)")
    ap.add_argument("--no-inprocess", action="store_true", help="skip the in-process runs (phases)")
    ap.add_argument("--profile", action="store_true", help="also profile the local job at the smallest size")
    ap.add_argument("--profile-top", type=int, default=30, help="functions listed by the profile (default 30)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary home and print its path")
    ap.add_argument("--write-docs", action="store_true", help="record the tables in docs/benchmarks.md")
    args = ap.parse_args(argv)
    sizes = sorted({float(s) for s in args.sizes.split(",") if s.strip()})
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not sizes or min(sizes) <= 0 or any(e not in ("local", "ray") for e in engines):
        ap.error("--sizes must be positive numbers and --engines local and/or ray")
    for k in [k for k in os.environ if k.startswith("AURUM_")]:
        del os.environ[k]  # this process's own runs read only the home below
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    command = command_line("bench_scoring.py", argv)
    head = header_lines(PACKAGES)
    print("\n".join(head), flush=True)
    tmp = tempfile.mkdtemp(prefix="bench-scoring-") if args.home is None else None
    home = args.home or Path(tmp) / "home"
    t_run, load_start = time.perf_counter(), os.getloadavg()[0]
    if args.home is None:
        print(f"preparing SYN_NORTH with a champion in {home} ...", file=sys.stderr, flush=True)
        prepare(home, window(max(sizes))[0])
    from features.settings import AurumSettings

    settings = AurumSettings(home=home)
    results = []
    if not args.no_inprocess or args.profile:
        warm_up(settings, args.chunk_days)
    for engine in engines:
        for years in sizes:
            first, last = window(years)
            print(f"{engine}, {market_years(years)} ({first} .. {last}) ...", file=sys.stderr, flush=True)
            empty_archive(settings)
            cli = run_cli(home, engine, first, last, args.chunk_days, home / f"score-{engine}-{fmt_years(years)}.log")
            print(f"  aurum score: {cli.rows:,} rows, wall {cli.wall:.1f} s, job {cli.job:.1f} s", file=sys.stderr,
                  flush=True)
            phases, split = Phases(), {}
            if not args.no_inprocess:
                empty_archive(settings)
                phases, split = run_inprocess(settings, engine, first, last, args.ray_actors, args.chunk_days)
                print(f"  in process: {phases.total:.1f} s " + ", ".join(f"{k} {v:.2f}" for k, v in split.items()),
                      file=sys.stderr, flush=True)
            results.append({"engine": engine, "years": years, "cli": cli, "phases": phases, "split": split})
    profile, imports = "", None
    if args.profile:
        first, last = window(sizes[0])
        empty_archive(settings)
        profile = profile_local(settings, first, last, args.profile_top, args.chunk_days)
        empty_archive(settings)
        imports = import_times(home, first, last, args.chunk_days)
    wall = time.perf_counter() - t_run
    rows = tables(results, not args.no_inprocess)
    print("\n".join(["", *rows, "", goal_line(results)]))
    if profile:
        print(f"\ncProfile of the local job in this process, {market_years(sizes[0])}:\n{profile}")
    if imports:
        print(f"\n{import_line(imports, sizes[0])}")
    if args.keep:
        print(f"\nhome kept: {home}")
    elif tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    if args.write_docs:
        shape = f"{', '.join(engines)} at {', '.join(fmt_years(s) for s in sizes)} market-years"
        notes = [
            goal_line(results),
            *([import_line(imports, sizes[0])] if imports else []),
            "- One market (SYN_NORTH, Europe/Berlin): 1 market-year is 2023 (365 days, 8,760 hours); 10 are "
            "2014-2023 in one job (3,652 days). The synthetic generator has three markets, so ten market-years "
            "are ten years of one; ten one-year jobs of ten markets would pay the start-up ten times.",
            "- Model: LightGBM with 60 trees and conformal intervals (quantiles 0.1, 0.5, 0.9), its inputs read "
            "through the feature service `day_ahead_v1`; every run starts from an empty archive, so every day "
            f"is scored and archived ({args.chunk_days}-day chunks, one commit each, then the batch partitions "
            "compacted, a year of months per commit).",
            "- `aurum score` wall: process start to exit (interpreter, imports, Ray start); job: what the command "
            "reports (plan to compaction). Peak RSS is the command's process (for Ray the driver, not the actors).",
            "- In process: the same job through `serving.batch.score`, after a 7-day job in the same process (imports "
            "and caches warm). Plan: champion "
            "and archived days. Start: model load and feature store (ray: `ray.init` too). Score, for the local "
            "engine: feature reads through the feature service (92 days per read) / `predict` / the rest "
            "(entity rows, quality, building and checking the archive rows); for Ray it includes the actors' "
            "start (imports, model load). Archive: the chunk commits (for Ray in a writer actor, started then).",
            f"- Run wall time, the preparation (ingest, features, training) included: {wall:.0f} s; load average "
            f"(1 min) {load_start:.1f} at the start and {os.getloadavg()[0]:.1f} at the end (the machine is shared).",
        ]
        record(SECTION, command, shape, head, rows, notes)


if __name__ == "__main__":
    main()
