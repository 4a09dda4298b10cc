"""Forecast API latency and throughput against a real ``bentoml serve`` on loopback (``make bench-serving``).

The service runs in its own process; this script is the client. Each measurement puts the forecast
endpoint beside the service's no-op endpoint (same process, same middleware, same auth-free path
otherwise) in the same run, because this 2-core machine is noisy: ratios travel, absolute times less so.

Measured, for the service as configured (forecast cache on) and with the forecast cache off:
- cold start: process start to ready, and to the first forecast answered;
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
        seq = sequential(service.url, key, args.requests)
        conc = concurrent(service.url, key, args.clients, args.seconds)
    finally:
        service.stop()
    return {"label": label, "ready": service.ready_after, "first": cold, "seq": seq, "conc": conc}


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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, help="a home with SYN_NORTH served already (default: build one in a temp dir)")
    ap.add_argument("--requests", type=int, default=2000, help="sequential requests per endpoint (default 2000)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds per concurrent measurement (default 8)")
    ap.add_argument("--write-docs", action="store_true", help="record the table in docs/benchmarks.md")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp) / "home"
        if args.home is None:
            print("preparing a synthetic market with an approved champion ...", file=sys.stderr)
            prepare(home)
        key = bench_key(home)
        base = {"AURUM_SERVING__ARCHIVE": os.environ.get("BENCH_ARCHIVE", "true")}
        results = [run_variant(home, key, "forecast cache on (default)", base, args),
                   run_variant(home, key, "caches off", {**base, "AURUM_SERVING__CACHE_SIZE": "0", "AURUM_SERVING__ONLINE_CACHE": "0"}, args)]
    head = header_lines(PACKAGES)
    rows = table(results, args.clients)
    print("\n".join(["", *head, "", *rows]))
    if args.write_docs:
        notes = [
            "- One service worker, client in another process on the same 2 cores; the no-op endpoint runs "
            "through the same BentoML stack and is measured in the same run as the reference.",
            "- A forecast includes the key check, the online feature lookup (SQLite online store, read "
            "directly in Feast's layout), the calendar computed at request time, the model (or the cache "
            "keyed by the exact feature values), the JSON response and the archive enqueue.",
            "- 'cache off' runs the model on every request: the cost of a forecast whose inputs just changed.",
        ]
        record(SECTION, command_line("bench_serving.py", argv), f"{args.requests} sequential requests per endpoint, "
               f"{args.clients} clients x {args.seconds:.0f} s x 2 per endpoint", head, rows, notes)


if __name__ == "__main__":
    main()
