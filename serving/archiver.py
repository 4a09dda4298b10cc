"""The forecast archive's writer process: Iceberg commits out of the service worker.

A pyiceberg commit (conversion, Parquet, manifests, catalog update) takes 70-150 ms of Python that
holds the GIL; in the worker that answers requests it stalls every request that arrives meanwhile and
takes a tenth of the worker's CPU under load. So each service worker starts one archiver, a plain
child process (``python -m serving.archiver``, the worker's own interpreter and settings), and sends
it compact forecast records (:func:`record`) over its stdin as pickled batches, a few times a second.
The child turns them into archive rows (:func:`archive_rows`) and appends them through a
:class:`~serving.archive.ForecastArchive`, which commits at least once a second.

Crash behaviour:
- the worker killed: the child reads to the end of the pipe (EOF when the kernel closes the worker's
  end), flushes everything it got and exits; lost is only what the worker had not sent yet (at most
  one send interval);
- the child killed: the worker notices on its next send (a broken pipe), starts a new child and sends
  that batch again; lost is what the old child held unflushed (at most one flush interval). Iceberg
  commits are atomic, so neither corrupts the table.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger("aurum.serving.archiver")

# The per-forecast fields of an archive row, in the order a record carries them.
SCALARS = ("request_id", "batch_id", "source", "tenant", "market", "delivery_day", "issued_at", "served_at",
           "levels", "model_name", "model_version", "model_alias", "shadow", "scenario", "feature_service",
           "feature_snapshot", "feature_known_at", "quality", "quality_reason")
ROOT = Path(__file__).resolve().parents[1]  # the folder that holds the ``serving`` package (a checkout or a Bento)


def record(scalars: tuple, delivery_start: np.ndarray, values: np.ndarray) -> tuple:
    """One forecast as the archiver takes it: the ``SCALARS`` values, the delivery hours as UTC epoch
    microseconds and the hours x levels values (levels as in ``scalars``)."""
    return scalars, delivery_start, values


def archive_rows(records: list[tuple]) -> pd.DataFrame:
    """The archive frame of many forecast records: a row per delivery hour, built column by column."""
    cols: dict[str, list] = {c: [] for c in SCALARS}
    starts, values, forecast = [], [], []
    levels_at = SCALARS.index("levels")
    for scalars, start, vals in records:
        n = len(start)
        for c, v in zip(SCALARS, scalars):
            cols[c].extend([v] * n)
        levels = list(scalars[levels_at])
        starts.append(start)
        values.extend(vals.tolist())
        forecast.extend(vals[:, levels.index(0.5)].tolist())
    cols["levels"] = [list(v) for v in cols["levels"]]
    frame = pd.DataFrame(cols)
    at = list(frame.columns).index("issued_at")
    stamps = np.concatenate(starts) if starts else np.array([], dtype=np.int64)
    frame.insert(at, "delivery_start", pd.DatetimeIndex(stamps.view("M8[us]")).tz_localize("UTC"))
    frame.insert(list(frame.columns).index("model_name"), "values", values)
    frame.insert(list(frame.columns).index("model_name"), "forecast", forecast)
    return frame


class ArchiverProcess:
    """The worker's side: starts the child, sends it batches of records, restarts it if it died."""

    def __init__(self, env: dict[str, str] | None = None, python: str = sys.executable, nice: int = 0):
        self.env = dict(env or os.environ)
        self.nice = int(nice)
        # Allocators that give memory back: with Arrow's default mimalloc pool and glibc's per-thread
        # arenas the child's RSS grew without bound under a steady load (freed Parquet and Avro buffers kept);
        # with these it stays flat (docs/benchmarks.md, memory). A deployment's own setting wins.
        # A fixed mmap threshold keeps glibc from raising it after large frees (so large buffers go back to
        # the system at once) and the trim threshold returns freed heap tops.
        for name, value in (("ARROW_DEFAULT_MEMORY_POOL", "system"), ("MALLOC_ARENA_MAX", "2"),
                            ("MALLOC_MMAP_THRESHOLD_", "131072"), ("MALLOC_TRIM_THRESHOLD_", "131072")):
            self.env.setdefault(name, value)
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), self.env.get("PYTHONPATH")) if p)
        self.python = python
        self.lock = threading.Lock()
        self.restarts = 0
        self.process = self._start()

    def _start(self) -> subprocess.Popen:
        process = subprocess.Popen([self.python, "-m", "serving.archiver"], stdin=subprocess.PIPE, cwd=ROOT,
                                   env=self.env)
        if self.nice:  # a lower priority than the worker's (allowed without privileges): off the request path
            try:
                os.setpriority(os.PRIO_PROCESS, process.pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + self.nice))
            except OSError as exc:  # the child already gone: write() will notice and restart it
                log.warning("forecast archiver: could not lower its priority: %s", exc)
        return process

    def write(self, records: list[tuple]) -> None:
        """Send one batch; a dead child is replaced and the batch sent to the new one."""
        blob = pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)
        with self.lock:
            for attempt in range(2):
                try:
                    self.process.stdin.write(blob)
                    self.process.stdin.flush()
                    return
                except (BrokenPipeError, ValueError, OSError) as exc:
                    if attempt:
                        raise
                    log.error("forecast archiver (pid %s) is gone (%s, exit %s); starting a new one",
                              self.process.pid, type(exc).__name__, self.process.poll())
                    self.restarts += 1
                    self.process = self._start()

    def close(self, timeout: float = 60.0) -> None:
        """End the stream; the child flushes what it holds and exits."""
        with self.lock:
            try:
                self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("forecast archiver (pid %s) did not finish within %.0f s; stopping it", self.process.pid,
                          timeout)
                self.process.kill()


class InProcessArchiver:
    """The same interface in the calling process (tests, tools): rows straight into a ForecastArchive."""

    def __init__(self, archive):
        self.archive = archive

    def write(self, records: list[tuple]) -> None:
        self.archive.append(archive_rows(records))

    def close(self) -> None:
        self.archive.close()


def open_archive(settings, lake=None):
    """The :class:`~serving.archive.ForecastArchive` of the serving settings on ``lake`` (default: the home's)."""
    from features.lake import Lake
    from serving.archive import ForecastArchive

    return ForecastArchive(lake or Lake.open(settings), compact_every=settings.serving.archive_compact_every)


def main() -> int:
    """The child: read pickled batches from stdin until EOF, archive them, flush, exit.

    SIGTERM and SIGINT are ignored: a service stopped as a whole (its process group signalled, Ctrl-C)
    would otherwise kill the archiver before its worker has sent the last batch. The end of the stream
    is the one signal to finish, and it comes when the worker closes the pipe or dies.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from features.errors import ArchiveBacklogError
    from features.settings import AurumSettings

    archive = open_archive(AurumSettings())
    stream = sys.stdin.buffer
    taken = 0
    t0 = time.monotonic()
    try:
        while True:
            try:
                records = pickle.load(stream)
            except EOFError:
                break
            except Exception as exc:  # noqa: BLE001 - a batch cut off by the worker's death: keep what came before
                log.error("forecast archiver: unreadable batch at the end of the stream (%s); stopping", exc)
                break
            try:
                taken += archive.append(archive_rows(records))
            except ArchiveBacklogError as exc:
                log.error("forecast archive: %d forecasts not archived: %s", len(records), exc)
    finally:
        archive.close()
    log.info("forecast archiver: %d rows in %.0f s, exiting", taken, time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
