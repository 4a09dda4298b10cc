"""Forecast API latency and throughput against a real ``bentoml serve`` on loopback (``make bench-serving``).

The service runs in its own process; this script is the client. Each measurement puts the forecast
endpoint beside the service's no-op endpoint (same process, same middleware, same auth-free path
otherwise) in the same run, because this 2-core machine is noisy: ratios travel, absolute times less so.

Measured for three configurations: as configured (forecast cache and online-lookup cache on, started from
the saved online plan); with both caches off (every request reads the online store and runs the model:
the cost of a forecast whose inputs just changed); and without the online plan (the worker imports Feast
to resolve the feature service, as before the plan existed):
- cold start: process start to ready, and to the first forecast answered, with the worker's own
  breakdown by phase (``startup_seconds`` of ``GET /v1/models``);
- sequential: one client, p50 and p99 of a day-ahead forecast (24 hours x 3 quantiles, online feature
  lookup included) against the no-op, in alternating blocks;
- concurrent: 16 clients (asyncio) for a fixed time each, throughput and p99, forecast vs no-op.

The market: one synthetic market with an approved LightGBM champion, built through the CLI (ingest,
features, feature store, ``aurum train``) in a temporary home, unless ``--home`` names a ready one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from benchreport import command_line, header_lines, record  # noqa: E402

SECTION = "## Serving: forecast API latency and throughput"
PACKAGES = ("bentoml", "feast", "mlflow", "lightgbm", "httpx", "pandas")
MARKET = "SYN_NORTH"
BODY = {"market": MARKET, "delivery_day": "2024-04-12", "quantiles": [0.1, 0.5, 0.9]}
AURUM = str(Path(sys.executable).with_name("aurum"))


def prepare(home: Path) -> None:
    """The synthetic market through the platform's own commands, with an approved champion."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AURUM_")}, "AURUM_HOME": str(home)}
    steps = [
        ["ingest", "synthetic", "--markets", MARKET, "--start", "2023-01-01", "--end", "2024-04-16"],
        ["features", "compute"], ["features", "apply"],
        ["features", "materialize", "--from", "2024-03-01", "--to", "2024-04-17"],
        ["train", "--market", MARKET, "--model", "lgbm", "--backtest-days", "14", "--train-days", "365"],
    ]
    for step in steps:
        t = time.perf_counter()
        done = subprocess.run([AURUM, *step], env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"aurum {' '.join(step)} failed:\n{done.stderr[-2000:]}")
        print(f"  aurum {' '.join(step[:2])}: {time.perf_counter() - t:.1f} s", file=sys.stderr)


def bench_key(home: Path) -> str:
    from features.settings import AurumSettings
    from serving.keys import KeyStore

    with KeyStore.open(AurumSettings(home=home)) as keys:
        return keys.create("bench", [MARKET], name="bench-serving").token


def sequential(url: str, key: str, n: int, block: int = 100) -> dict[str, np.ndarray]:
    """Alternating blocks of no-op and forecast calls over one keep-alive connection."""
    out = {"noop": [], "forecast": []}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        for _ in range(100):  # warm-up: connections, caches, lazy imports
            c.post("/v1/forecast", json=BODY), c.post("/v1/noop", json={})
        for _ in range(max(1, n // block)):
            for name, path, body in (("noop", "/v1/noop", {}), ("forecast", "/v1/forecast", BODY)):
                for _ in range(block):
                    t = time.perf_counter()
                    r = c.post(path, json=body)
                    out[name].append(time.perf_counter() - t)
                    if r.status_code != 200:
                        sys.exit(f"{path} answered {r.status_code}: {r.text[:300]}")
    return {k: np.array(v) * 1e3 for k, v in out.items()}


async def _clients(url: str, key: str, path: str, body: dict, clients: int, seconds: float) -> tuple[int, np.ndarray]:
    """``clients`` keep-alive HTTP/1.1 connections, each sending the next request when the last answered.

    A deliberately thin client (pre-encoded requests over asyncio streams): on 2 shared cores a full
    HTTP client library would spend more CPU per request than the endpoint under test.
    """
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload
    times: list[float] = []
    failed = 0
    stop = time.perf_counter() + seconds

    async def one():
        nonlocal failed
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                times.append(time.perf_counter() - t)
                failed += not head.startswith(b"HTTP/1.1 200")
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(clients)))
    if failed:
        sys.exit(f"{failed} requests to {path} failed under load")
    return len(times), np.array(times) * 1e3


def concurrent(url: str, key: str, clients: int, seconds: float) -> dict[str, tuple[float, np.ndarray]]:
    """Throughput (requests/s) and latencies at ``clients`` concurrent clients, no-op and forecast twice each."""
    got: dict[str, list] = {"noop": [0, []], "forecast": [0, []]}
    for _ in range(2):
        for name, path, body in (("noop", "/v1/noop", {}), ("forecast", "/v1/forecast", BODY)):
            n, t = asyncio.run(_clients(url, key, path, body, clients, seconds))
            got[name][0] += n
            got[name][1].append(t)
    return {k: (n / (2 * seconds), np.concatenate(ts)) for k, (n, ts) in got.items()}


def first_forecast(service, key: str) -> float:
    """Seconds from process start to the first forecast answered (a cold start as a caller sees it)."""
    with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        r = c.post("/v1/forecast", json=BODY)
        if r.status_code != 200:
            sys.exit(f"first forecast answered {r.status_code}: {r.text[:300]}")
    return time.monotonic() - service.started


def run_variant(home: Path, key: str, label: str, env: dict[str, str], args) -> dict:
    from serving import launcher

    service = launcher.start(home, home / f"bench-{label}.log", env=env)
    try:
        cold = first_forecast(service, key)
        startup = httpx.get(f"{service.url}/v1/models", headers={"Authorization": f"Bearer {key}"},
                            timeout=30).json().get("startup_seconds", {})
        seq = sequential(service.url, key, args.requests)
        conc = concurrent(service.url, key, args.clients, args.seconds)
    finally:
        service.stop()
    return {"label": label, "ready": service.ready_after, "first": cold, "seq": seq, "conc": conc, "startup": startup}


def breakdown(results: list[dict]) -> list[str]:
    """The cold start of each variant by phase, as the worker measured it (``GET /v1/models``)."""
    phases = list(dict.fromkeys(k for r in results for k in r["startup"] if k != "init_total"))
    rows = ["| service | " + " | ".join(phases) + " | other (supervisor, worker spawn, readiness, first request) "
            "| first forecast |", "|---|" + "---|" * (len(phases) + 2)]
    for r in results:
        s = r["startup"]
        other = r["first"] - (s.get("worker_before_init") or 0) - (s.get("init_total") or 0)
        cells = [f"{s[k]:.2f}" if isinstance(s.get(k), (int, float)) else "-" for k in phases]
        rows.append(f"| {r['label']} | " + " | ".join(cells) + f" | {other:.2f} | {r['first']:.2f} |")
    return rows


def table(results: list[dict], clients: int) -> list[str]:
    rows = ["| service | ready (s) | first forecast (s) | seq. no-op p50 / p99 (ms) | seq. forecast p50 / p99 (ms) "
            f"| {clients} clients: no-op req/s | forecast req/s | forecast p99 (ms) | throughput forecast / no-op |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s, c = r["seq"], r["conc"]
        rows.append(
            f"| {r['label']} | {r['ready']:.1f} | {r['first']:.1f} "
            f"| {np.percentile(s['noop'], 50):.2f} / {np.percentile(s['noop'], 99):.2f} "
            f"| {np.percentile(s['forecast'], 50):.2f} / {np.percentile(s['forecast'], 99):.2f} "
            f"| {c['noop'][0]:.0f} | {c['forecast'][0]:.0f} | {np.percentile(c['forecast'][1], 99):.1f} "
            f"| {c['forecast'][0] / c['noop'][0]:.2f} |")
    return rows


# --------------------------------------------------------------------------- soak: memory over a sustained load

SOAK_SECTION = "## Serving: memory over a sustained load run"
SOAK_HISTORY = ("2021-01-01", "2023-01-01")  # ingested before prepare()'s data: more days than the cache holds
SOAK_DAYS = ("2021-01-15", "2024-04-15")  # forecast days of the soak (online store materialized over them)
SOAK_HOT_DAYS = 7  # the latest days, asked for 30% of the time (hits once seen)
SOAK_HOT_SHARE = 0.3
SOAK_QUANTILES = ((0.5,), (0.1, 0.5, 0.9), (0.1,), (0.9,))  # as requested; the cache key adds the median: 4 keys a day
RSS_GOAL_MIB = 600 * 1e6 / 2**20  # 600 MB
FLAT_MIB_PER_MIN = 0.5  # "no growth": under 5 MiB over 10 minutes after the warm-up


def _rss_mib(pid: int | None) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, TypeError):
        return None
    return None


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def worker_pids(service) -> tuple[int | None, int | None]:
    """(worker, its archiver) of a service started by ``serving.launcher``: the worker is the child of the
    ``bentoml serve`` process that runs ``_bentoml_impl.worker``, the archiver its ``python -m serving.archiver``
    child (``serving.archiver.ArchiverProcess``; None with the archive off)."""
    for child in _children(service.process.pid):
        if "_bentoml_impl.worker" in _cmdline(child):
            archivers = [c for c in _children(child) if "serving.archiver" in _cmdline(c)]
            return child, (archivers[0] if archivers else None)
    return None, None


class _Requests:
    """The soak's forecast requests, pre-encoded: first every (day, levels) key once in a seeded random order
    (the fill: caches reach their steady size), then endlessly a seeded mix, 30% for one of the latest days and
    70% for any day. The forecast cache is keyed by day, levels with the median and the feature values, so a
    key here is one cache entry; there are more keys than the cache holds, so it evicts and misses go on."""

    def __init__(self, key: str, host: str, days: tuple[str, str], seed: int = 0):
        import pandas as pd

        self.rng = np.random.default_rng(seed)
        self.days = [d.date().isoformat() for d in pd.date_range(*days, freq="D")]
        self.head = f"POST /v1/forecast HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        self.fill = [(d, q) for d in self.days for q in range(len(SOAK_QUANTILES))]
        self.rng.shuffle(self.fill)
        self.taken = 0
        self._encoded: dict[tuple[str, int], bytes] = {}

    @property
    def distinct(self) -> int:
        return len(self.days) * len({tuple(sorted({*q, 0.5})) for q in SOAK_QUANTILES})

    @property
    def filling(self) -> bool:
        return self.taken < len(self.fill)

    def next(self) -> tuple[bytes, tuple]:
        if self.filling:
            day, q = self.fill[self.taken]
        else:
            hot = self.rng.random() < SOAK_HOT_SHARE
            day = self.days[-1 - self.rng.integers(SOAK_HOT_DAYS)] if hot else self.days[self.rng.integers(len(self.days))]
            q = int(self.rng.integers(len(SOAK_QUANTILES)))
        self.taken += 1
        request = self._encoded.get((day, q))
        if request is None:
            payload = json.dumps({"market": MARKET, "delivery_day": day, "quantiles": list(SOAK_QUANTILES[q])}).encode()
            request = self._encoded[(day, q)] = (self.head + "Content-Type: application/json\r\nContent-Length: "
                                                 f"{len(payload)}\r\n\r\n").encode() + payload
        return request, (day, tuple(sorted({*SOAK_QUANTILES[q], 0.5})))


async def _soak_load(service, key: str, args, cache_size: int) -> dict:
    """``args.soak_clients`` keep-alive clients for ``args.soak`` seconds (the fill first), the worker's and its
    archiver's RSS sampled every ``args.soak_interval`` seconds. Misses are counted by replaying the service's
    LRU forecast cache (``cache_size`` entries) on the keys in the order the answers came back."""
    from collections import OrderedDict

    host, port = service.url.removeprefix("http://").split(":")
    requests = _Requests(key, host, (args.soak_from, args.soak_to))
    lru: OrderedDict = OrderedDict()
    state = {"done": 0, "misses": 0, "degraded": 0, "status": {}, "times": [], "fill_end": None}
    samples: list[dict] = []
    t0 = time.perf_counter()
    stop = t0 + args.soak

    async def client():
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < stop:
                request, cache_key = requests.next()
                if not requests.filling and state["fill_end"] is None:
                    state["fill_end"] = time.perf_counter() - t0
                t = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                body = await reader.readexactly(length)
                state["times"].append(time.perf_counter() - t)
                status = int(head.split(b" ", 2)[1])
                state["status"][status] = state["status"].get(status, 0) + 1
                state["done"] += 1
                degraded = b'"quality":"degraded"' in body
                state["degraded"] += degraded
                if status != 200 or degraded:
                    continue  # the baseline's answers are not cached
                if cache_key in lru:
                    lru.move_to_end(cache_key)
                else:
                    state["misses"] += 1
                    lru[cache_key] = True
                    if len(lru) > cache_size:
                        lru.popitem(last=False)
        finally:
            writer.close()

    def sample() -> None:
        worker, archiver = worker_pids(service)
        samples.append({"t": time.perf_counter() - t0, "requests": state["done"], "misses": state["misses"],
                        "failed": sum(n for s, n in state["status"].items() if s != 200),
                        "worker": _rss_mib(worker), "worker_pid": worker,
                        "archiver": _rss_mib(archiver), "archiver_pid": archiver})

    async def sampler():
        sample()
        while time.perf_counter() < stop:
            await asyncio.sleep(min(args.soak_interval, max(0.0, stop - time.perf_counter())))
            sample()

    await asyncio.gather(sampler(), *(client() for _ in range(args.soak_clients)))
    await asyncio.sleep(2 * args.soak_interval)  # the archiver's last flush
    sample()
    return {**state, "samples": samples, "distinct": requests.distinct, "days": len(requests.days),
            "seconds": args.soak, "cache_size": cache_size}


def _slope_per_min(samples: list[dict], what: str, after: float) -> float:
    pts = [(s["t"] / 60, s[what]) for s in samples if s["t"] >= after and s[what] is not None]
    if len(pts) < 3:
        return float("nan")
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def _floor_slope_per_min(samples: list[dict], what: str, after: float) -> float:
    """Least-squares slope (MiB/min) of the per-minute minima of ``what`` after ``after`` seconds: the level
    a process returns to between transient peaks (the archiver's merges), which a leak would raise."""
    minute: dict[int, float] = {}
    for s in samples:
        if s["t"] >= after and s[what] is not None:
            k = int((s["t"] - after) // 60)
            minute[k] = min(minute.get(k, float("inf")), s[what])
    if len(minute) < 3:
        return float("nan")
    keys = sorted(minute)
    return float(np.polyfit(np.array(keys) + 0.5, [minute[k] for k in keys], 1)[0])


def _at(samples: list[dict], what: str, t: float) -> float:
    """The sample of ``what`` nearest to ``t`` seconds."""
    valid = [s for s in samples if s[what] is not None]
    return min(valid, key=lambda s: abs(s["t"] - t))[what] if valid else float("nan")


def _peak(samples: list[dict], what: str) -> float:
    return max((s[what] for s in samples if s[what] is not None), default=float("nan"))


def soak_warmup(res: dict, warmup: float) -> float:
    """The warm-up: the fill (every key once) or ``warmup`` seconds, whichever ends later."""
    return max(res["fill_end"] if res["fill_end"] is not None else res["seconds"], warmup)


def soak_tables(res: dict, warmup: float) -> list[str]:
    samples, end = res["samples"], res["seconds"]
    rows = ["| process | RSS MiB at start | after warm-up | at end | peak | slope after warm-up MiB/min "
            "| slope over the last half MiB/min | floor slope after warm-up MiB/min (per-minute minima) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for what in ("worker", "archiver"):
        rows.append(f"| {what} | {_at(samples, what, 0):.0f} | {_at(samples, what, warmup):.0f} "
                    f"| {_at(samples, what, end):.0f} | {_peak(samples, what):.0f} "
                    f"| {_slope_per_min(samples, what, warmup):+.2f} | {_slope_per_min(samples, what, end / 2):+.2f} "
                    f"| {_floor_slope_per_min(samples, what, warmup):+.2f} |")
    times = np.array(res["times"]) * 1e3
    failed = {s: n for s, n in res["status"].items() if s != 200}
    rows += ["", "| requests | req/s | cache misses | distinct keys / cache size | degraded answers | non-200 "
             "| latency p50 / p99 ms |", "|---:|---:|---:|---:|---:|---|---:|",
             f"| {res['done']:,} | {res['done'] / end:.0f} | {res['misses']:,} | {res['distinct']:,} / "
             f"{res['cache_size']:,} | {res['degraded']:,} "
             f"| {', '.join(f'{n} x {s}' for s, n in sorted(failed.items())) or 'none'} "
             f"| {np.percentile(times, 50):.1f} / {np.percentile(times, 99):.1f} |"]
    rows += ["", "| s | phase | requests | req/s | cache misses | worker RSS MiB | archiver RSS MiB |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    step = max(1, round(len(samples) / 12))
    shown = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    last = {"t": 0.0, "requests": 0, "misses": 0}
    for s in shown:
        n, span = s["requests"] - last["requests"], s["t"] - last["t"]
        phase = ("fill" if res["fill_end"] is None or s["t"] <= res["fill_end"] else
                 "warm-up" if s["t"] <= warmup else "load" if s["t"] <= end + 0.5 else "after")
        rows.append(f"| {s['t']:.0f} | {phase} | {n:,} | {n / span if span > 0 else 0:.0f} "
                    f"| {s['misses'] - last['misses']:,} | {s['worker'] or float('nan'):.0f} "
                    f"| {s['archiver'] or float('nan'):.0f} |")
        last = s
    return rows


def soak_verdict(res: dict, warmup: float) -> list[str]:
    samples = res["samples"]
    peak, slope = _peak(samples, "worker"), _slope_per_min(samples, "worker", warmup)
    child, child_all = _floor_slope_per_min(samples, "archiver", warmup), _slope_per_min(samples, "archiver", warmup)
    pids = {s["archiver_pid"] for s in samples if s["archiver_pid"]}
    failed = sum(n for s, n in res["status"].items() if s != 200)
    return [
        f"- RSS goal (one worker under 600 MB = {RSS_GOAL_MIB:.0f} MiB): worker peak {peak:.0f} MiB: "
        f"{'met' if peak < RSS_GOAL_MIB else 'not met'}. Its archiver child, a process of its own: peak "
        f"{_peak(samples, 'archiver'):.0f} MiB (a merge), slope of all its samples after the warm-up "
        f"{child_all:+.2f} MiB/min.",
        f"- Growth goal (none after the warm-up; flat = under {FLAT_MIB_PER_MIN} MiB/min, 5 MiB in 10 minutes): "
        f"worker {slope:+.2f} MiB/min over {(res['seconds'] - warmup) / 60:.1f} min (all samples): "
        f"{'met' if abs(slope) < FLAT_MIB_PER_MIN else 'not met'}; archiver {child:+.2f} MiB/min (its floor, the "
        f"slope of its per-minute minima): {'met' if abs(child) < FLAT_MIB_PER_MIN else 'not met'}.",
        f"- {res['done']:,} requests, {failed} not answered 200; {len(pids)} archiver process(es) seen "
        f"({'no restart' if len(pids) <= 1 else 'restarted'}).",
        f"- Archive: {res['archived']:,} forecasts archived after the stop, of {res['done'] - failed:,} "
        f"answered 200 ({'none lost' if res['archived'] >= res['done'] - failed else 'some not archived'}).",
    ]


def archived_requests(home: Path) -> int:
    """Distinct request ids of the forecasts the service archived (source ``api``), read after it stopped."""
    from features.lake import Lake
    from features.settings import AurumSettings
    from serving.archive import read_forecasts

    frame = read_forecasts(Lake.open(AurumSettings(home=home)), source="api", columns=("request_id",))
    return int(frame["request_id"].nunique())


def soak_prepare(home: Path, first_day: str) -> None:
    """``prepare``, then two earlier years of the same market and its online store over every soak day."""
    prepare(home)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AURUM_")}, "AURUM_HOME": str(home)}
    for step in (["ingest", "synthetic", "--markets", MARKET, "--start", SOAK_HISTORY[0], "--end", SOAK_HISTORY[1]],
                 ["features", "compute", "--markets", MARKET],
                 ["features", "materialize", "--from", first_day, "--to", "2024-04-17"]):
        t = time.perf_counter()
        done = subprocess.run([AURUM, *step], env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"aurum {' '.join(step)} failed:\n{done.stderr[-2000:]}")
        print(f"  aurum {' '.join(step[:2])}: {time.perf_counter() - t:.1f} s", file=sys.stderr)


def soak_main(args, argv: list[str] | None) -> None:
    """Prepare (or take ``--home``), start one worker, load it for ``--soak`` seconds, report its RSS."""
    from features.settings import AurumSettings
    from serving import launcher

    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp) / "home"
        if args.home is None:
            print("preparing a synthetic market with an approved champion and three years online ...", file=sys.stderr)
            soak_prepare(home, args.soak_from)
        key = bench_key(home)
        cache_size = AurumSettings(home=home).serving.cache_size
        service = launcher.start(home, home / "bench-soak.log", env={"AURUM_SERVING__ARCHIVE": "true"})
        try:
            worker, archiver = worker_pids(service)
            if worker is None:
                sys.exit(f"no worker process under bentoml serve (pid {service.process.pid})")
            print(f"soak: {args.soak:.0f} s, {args.soak_clients} clients, worker pid {worker}, archiver pid "
                  f"{archiver} ...", file=sys.stderr, flush=True)
            res = asyncio.run(_soak_load(service, key, args, cache_size))
        finally:
            service.stop()
        res["archived"] = archived_requests(home)
    warmup = soak_warmup(res, args.soak_warmup if args.soak_warmup is not None else args.soak / 5)
    if args.soak_samples:
        import pandas as pd

        pd.DataFrame(res["samples"]).to_csv(args.soak_samples, index=False)
        print(f"samples written to {args.soak_samples}", file=sys.stderr)
    head = header_lines(PACKAGES)
    rows = soak_tables(res, warmup)
    verdict = soak_verdict(res, warmup)
    print("\n".join(["", *head, "", *rows, "", *verdict]))
    if res["fill_end"] is None:
        print("\nwarning: the fill (every key once) did not end within --soak: no steady load was measured",
              file=sys.stderr)
    if args.write_docs:
        notes = [*verdict,
                 f"- One service worker (`bentoml serve`, default settings: forecast cache {cache_size} per model, "
                 f"online cache 64 days per thread, archive on through the archiver child), {args.soak_clients} "
                 "keep-alive clients in another process on the same 2 cores, each sending its next request when the "
                 "last one answered. Nothing else ran on the machine.",
                 f"- Requests: POST /v1/forecast of SYN_NORTH, any day from {args.soak_from} to {args.soak_to} "
                 f"({res['days']:,} days, online store materialized over them), quantiles one of "
                 f"{', '.join(str(list(q)) for q in SOAK_QUANTILES)}: {res['distinct']:,} (day, levels) keys, more "
                 f"than the cache holds, so it stays full, evicts and misses throughout. First the fill: every key "
                 f"once in random order (ended at {res['fill_end'] or float('nan'):.0f} s); then the load: "
                 f"{SOAK_HOT_SHARE:.0%} for one of the latest {SOAK_HOT_DAYS} days, the rest for any day. Misses are "
                 "counted by replaying the service's LRU on the keys as the answers came back.",
                 f"- RSS: `VmRSS` of the worker (the `bentoml serve` child) and of its `python -m serving.archiver` "
                 f"child, sampled every {args.soak_interval:g} s. Start: the worker ready, before any request. The "
                 f"warm-up ends after the fill and at least {args.soak_warmup if args.soak_warmup is not None else args.soak / 5:.0f} s "
                 f"(here {warmup:.0f} s); slopes are least-squares fits over the samples after it and over the last "
                 "half. The archiver compacts the partitions its flushes touch as it goes (docs/serving.md, small files): "
                 "each merge holds its files' rows in memory for a moment (at most 2 MiB of Parquet, ~2.3 KB a row) and "
                 "gives it back, so its RSS is a floor with peaks, and the slope of all its samples moves with where in "
                 "the run the merges fall. A leak raises the floor: the archiver's growth verdict is the slope of its "
                 "per-minute minima (the floor column); the peak is bounded by the merge size and reported on its own.",
                 "- Why RSS climbs in the first minute: BentoML 1.4's `TimeoutMiddleware` schedules a "
                 "`loop.call_later(timeout)` per request and never cancels it; each timer holds the request's "
                 "context (its OpenTelemetry span, a future) until it fires, `traffic.timeout` later. The "
                 "worker therefore keeps about 5 KB for every request of the last timeout (found on this machine "
                 "with BentoML's default 60 s: ~29,000 live timers and spans after a minute of no-op requests at "
                 "~500 req/s, RSS 397 -> 545 MiB). It is bounded, but it scales with the request rate and the "
                 "timeout, which the service therefore sets to 15 s."]
        record(SOAK_SECTION, command_line("bench_serving.py", argv), f"{args.soak:.0f} s, {args.soak_clients} clients",
               head, rows, notes)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, help="a home with SYN_NORTH served already (default: build one in a temp dir)")
    ap.add_argument("--requests", type=int, default=2000, help="sequential requests per endpoint (default 2000)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds per concurrent measurement (default 8)")
    ap.add_argument("--write-docs", action="store_true", help="record the table in docs/benchmarks.md")
    ap.add_argument("--soak", type=float, default=0, metavar="SECONDS",
                    help="instead: a sustained load of that many seconds against one worker, its RSS sampled "
                    "(make bench-soak: 600)")
    ap.add_argument("--soak-clients", type=int, default=4, help="concurrent clients of the soak (default 4)")
    ap.add_argument("--soak-interval", type=float, default=5.0, help="seconds between RSS samples (default 5)")
    ap.add_argument("--soak-samples", type=Path, help="also write every RSS sample of the soak to this CSV file")
    ap.add_argument("--soak-warmup", type=float, help="least seconds of warm-up before the slope (default a fifth of "
                    "--soak); the warm-up also lasts until every key was asked once")
    ap.add_argument("--soak-from", default=SOAK_DAYS[0], help=f"first delivery day of the soak (default {SOAK_DAYS[0]})")
    ap.add_argument("--soak-to", default=SOAK_DAYS[1], help=f"last delivery day of the soak (default {SOAK_DAYS[1]})")
    args = ap.parse_args(argv)
    if args.soak:
        return soak_main(args, argv)
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp) / "home"
        if args.home is None:
            print("preparing a synthetic market with an approved champion ...", file=sys.stderr)
            prepare(home)
        key = bench_key(home)
        base = {"AURUM_SERVING__ARCHIVE": os.environ.get("BENCH_ARCHIVE", "true")}
        results = [run_variant(home, key, "forecast cache on (default)", base, args),
                   run_variant(home, key, "caches off", {**base, "AURUM_SERVING__CACHE_SIZE": "0", "AURUM_SERVING__ONLINE_CACHE": "0"}, args),
                   run_variant(home, key, "no online plan (Feast imported)", {**base, "AURUM_SERVING__ONLINE_PLAN": "false"}, args),
                   run_variant(home, key, "archiver at the worker's priority", {**base, "AURUM_SERVING__ARCHIVER_NICE": "0"}, args),
                   run_variant(home, key, "archive without compaction", {**base, "AURUM_SERVING__ARCHIVE_COMPACT_EVERY": "0"}, args),
                   run_variant(home, key, "archive off", {"AURUM_SERVING__ARCHIVE": "false"}, args)]
    head = header_lines(PACKAGES)
    rows = [*table(results, args.clients), "", "Cold start by phase (seconds):", "", *breakdown(results)]
    print("\n".join(["", *head, "", *rows]))
    if args.write_docs:
        notes = [
            "- One service worker, client in another process on the same 2 cores; the no-op endpoint runs "
            "through the same BentoML stack and is measured in the same run as the reference.",
            "- A forecast includes the key check, the online feature lookup (SQLite online store, read "
            "directly in Feast's layout), the calendar computed at request time, the model (or the cache "
            "keyed by the exact feature values), the JSON response and the archive enqueue.",
            "- 'caches off' reads the online store and runs the model on every request: the cost of a forecast whose inputs just changed. 'no online plan' imports Feast at start-up to resolve the feature service.",
            "- 'archive without compaction' never merges the archive's small files (`serving.archive_compact_every` 0); "
            "'archive off' archives nothing: together they show what the archive and its merges cost the requests. "
            "By default the archiver child runs at niceness 5 (`serving.archiver_nice`); 'archiver at the worker's "
            "priority' sets 0.",
        ]
        record(SECTION, command_line("bench_serving.py", argv), f"{args.requests} sequential requests per endpoint, "
               f"{args.clients} clients x {args.seconds:.0f} s x 2 per endpoint", head, rows, notes)


if __name__ == "__main__":
    main()
