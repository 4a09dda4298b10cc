"""The forecast archive (serving.forecasts): contract, buffered appends, crashes, concurrent writers, compaction.

Real Iceberg tables in a temporary SQLite catalog; writers in real subprocesses where a process boundary
matters (a SIGKILL mid-stream, two processes committing to one table).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.errors import ArchiveBacklogError, CommitConflictError, ForecastArchiveError
from features.lake import FORECASTS_TABLE, Lake, forecast_table_layout
from features.settings import AurumSettings
from serving import archive as arc
from serving.archive import (
    FORECAST_COLUMNS,
    ForecastArchive,
    compact,
    compact_small,
    forecast_frame,
    partition_files,
    read_forecasts,
    to_forecast_table,
    write_days,
    write_forecasts,
)

ROOT = Path(__file__).resolve().parents[2]
HOURS = pd.date_range("2024-03-04 23:00", periods=24, freq="h", tz="UTC")  # local day 2024-03-05, Berlin


def frame(request_id: str = "r1", *, hours: pd.DatetimeIndex = HOURS, **overrides) -> pd.DataFrame:
    """One 24-hour forecast of SYN_NORTH as the service would archive it."""
    base = np.linspace(40.0, 80.0, len(hours))
    predictions = pd.DataFrame({"q10": base - 10, "q50": base, "q90": base + 15})
    args = dict(market="SYN_NORTH", timezone="Europe/Berlin", delivery_start=hours,
                issued_at=pd.Timestamp("2024-03-04 11:00", tz="UTC"), predictions=predictions,
                levels=[0.1, 0.5, 0.9], model_name="day_ahead_SYN_NORTH", model_version="3",
                request_id=request_id, tenant="acme", feature_service="day_ahead_v1")
    return forecast_frame(**(args | overrides))


@pytest.fixture
def archive_lake(tmp_path) -> Lake:
    lake = Lake.open(AurumSettings(home=tmp_path / "home"))
    arc.ensure_forecasts_table(lake)
    return lake


def wait_for(condition, timeout: float, what: str, interval: float = 0.05):
    """Poll ``condition`` until it returns a truthy value or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------- the contract


def test_schema_is_the_contract_the_service_relies_on():
    schema, spec, order = forecast_table_layout()
    assert FORECASTS_TABLE == "serving.forecasts"
    assert FORECAST_COLUMNS == (
        "request_id", "batch_id", "source", "tenant", "market", "delivery_day", "delivery_start", "issued_at",
        "served_at", "levels", "values", "forecast", "model_name", "model_version", "model_alias", "shadow",
        "scenario", "feature_service", "feature_snapshot", "feature_known_at", "quality", "quality_reason")
    nullable = {f.name for f in schema.fields if not f.required}
    assert nullable == {"batch_id", "scenario", "feature_snapshot", "feature_known_at", "quality_reason"}
    arrow = schema.as_arrow()
    assert arrow.field("delivery_day").type == pa.date32()
    for c in ("delivery_start", "issued_at", "served_at", "feature_known_at"):
        assert arrow.field(c).type == pa.timestamp("us", tz="UTC"), c
    assert pa.types.is_large_list(arrow.field("levels").type) and arrow.field("values").type.value_type == pa.float64()
    assert arrow.field("feature_snapshot").type == pa.int64() and arrow.field("shadow").type == pa.bool_()
    assert all(f.doc for f in schema.fields), "every column is documented"
    assert [(f.name, str(f.transform)) for f in spec.fields] == [
        ("market", "identity"), ("delivery_month", "month"), ("source", "identity")]
    assert [schema.find_field(f.source_id).name for f in order.fields] == ["market", "delivery_start"]


def test_forecast_frame_builds_conforming_rows():
    f = frame()
    t = to_forecast_table(f)
    assert t.schema.equals(arc.ARROW_SCHEMA) and t.num_rows == 24
    row = t.slice(0, 1).to_pylist()[0]
    assert row["delivery_day"] == dt.date(2024, 3, 5)  # local day in Berlin, not the UTC date
    assert row["levels"] == [0.1, 0.5, 0.9] and row["forecast"] == row["values"][1] == 40.0
    assert row["source"] == "api" and row["batch_id"] is None and row["quality"] == "ok"


def _mutations():
    def drop(c):
        return lambda f: f.drop(columns=c)

    def put(c, v):
        return lambda f: f.assign(**{c: v})

    return {
        "missing column": (drop("tenant"), "tenant"),
        "unknown column": (lambda f: f.assign(price=1.0), "price"),
        "null in a required column": (put("model_version", None), "model_version"),
        "naive timestamp": (lambda f: f.assign(issued_at=f["issued_at"].dt.tz_localize(None)), "issued_at"),
        "unknown source": (put("source", "web"), "source"),
        "unknown alias": (put("model_alias", "latest"), "model_alias"),
        "unknown quality": (put("quality", "bad"), "quality"),
        "batch id on an api row": (put("batch_id", "b1"), "batch_id"),
        "batch row without batch id": (put("source", "batch"), "batch_id"),
        "degraded without reason": (put("quality", "degraded"), "quality_reason"),
        "levels not increasing": (put("levels", [[0.5, 0.1, 0.9]] * 24), "levels"),
        "levels without the median": (put("levels", [[0.1, 0.4, 0.9]] * 24), "levels"),
        "values of another length": (put("values", [[1.0, 2.0]] * 24), "values"),
        "decreasing values": (put("values", [[3.0, 2.0, 1.0]] * 24), "values"),
        "forecast not the median": (lambda f: f.assign(forecast=f["forecast"] + 1), "forecast"),
        "issued after served": (put("served_at", pd.Timestamp("2024-03-01", tz="UTC")), "issued_at"),
        "text in a number column": (put("forecast", "high"), "forecast"),
    }


@pytest.mark.parametrize("case", list(_mutations()))
def test_a_frame_that_breaks_the_contract_is_refused_naming_the_column(case):
    mutate, column = _mutations()[case]
    with pytest.raises(ForecastArchiveError) as err:
        to_forecast_table(mutate(frame()))
    assert err.value.column == column
    assert repr(column) in str(err.value)


# ---------------------------------------------------------------- the buffered writer


def test_append_only_enqueues_and_one_flush_is_one_append(archive_lake, monkeypatch):
    """append() returns while a flush is stuck in the lake; what was queued lands in one commit."""
    release, entered = threading.Event(), threading.Event()
    real = arc.write_forecasts
    commits = []

    def slow_write(lake, rows, **kw):
        entered.set()
        assert release.wait(10), "test did not release the commit"
        commits.append(rows.num_rows)
        return real(lake, rows, **kw)

    monkeypatch.setattr(arc, "write_forecasts", slow_write)
    with ForecastArchive(archive_lake, flush_interval=2.0) as archive:
        for i in range(5):
            archive.append(frame(f"a{i}"))
        wait_for(entered.is_set, 5, "the first flush to start")
        t0 = time.perf_counter()
        for i in range(5, 10):  # the flush thread is blocked inside the commit: appends still return at once
            archive.append(frame(f"a{i}"))
        assert time.perf_counter() - t0 < 0.3
        assert archive.stats().pending_rows == 120
        release.set()
        wait_for(lambda: archive.stats().flushed_rows == 240, 10, "both batches to be committed")
        assert commits == [120, 120]  # the five appends queued before the flush went in as one append
    got = read_forecasts(archive_lake, "SYN_NORTH")
    assert len(got) == 240 and got.groupby("request_id").size().eq(24).all()


def test_rows_are_committed_within_the_flush_interval(archive_lake):
    with ForecastArchive(archive_lake, flush_interval=1.0) as archive:
        t0 = time.monotonic()
        archive.append(frame("x"))
        wait_for(lambda: len(read_forecasts(archive_lake, columns=("request_id",))) == 24, 5, "the flush")
        assert time.monotonic() - t0 < 1.0 + 0.5  # flushed after half the interval; the poll adds a read
        assert archive.stats().flushes == 1 and archive.stats().last_flush_seconds is not None


def test_a_failed_flush_keeps_its_rows_and_retries(archive_lake, monkeypatch):
    real, calls = arc.write_forecasts, []

    def flaky(lake, rows, **kw):
        calls.append(rows.num_rows)
        if len(calls) == 1:
            raise CommitConflictError("commit to 'serving.forecasts' still conflicted after 8 retries")
        return real(lake, rows, **kw)

    monkeypatch.setattr(arc, "write_forecasts", flaky)
    with ForecastArchive(archive_lake, flush_interval=0.2) as archive:
        archive.append(frame("k"))
        wait_for(lambda: archive.stats().failed_flushes == 1, 5, "the failing flush")
        assert "still conflicted" in archive.stats().last_error
        wait_for(lambda: archive.stats().flushed_rows == 24, 5, "the retry")
        assert archive.stats().last_error is None
    assert calls == [24, 24]
    assert len(read_forecasts(archive_lake)) == 24


def test_a_full_backlog_or_a_closed_archive_refuses_rows(archive_lake, monkeypatch):
    def refuse(lake, rows, **kw):
        raise CommitConflictError("the catalog refused")

    monkeypatch.setattr(arc, "write_forecasts", refuse)
    archive = ForecastArchive(archive_lake, flush_interval=60, max_rows=48)
    archive.append(frame("a"))
    archive.append(frame("b"))
    with pytest.raises(ArchiveBacklogError, match="48 unflushed rows"):
        archive.append(frame("c"))
    assert archive.stats().refused_rows == 24
    with pytest.raises(CommitConflictError):
        archive.close()  # the last flush fails: said, not swallowed
    with pytest.raises(ArchiveBacklogError, match="closed"):
        archive.append(frame("d"))
    assert archive.stats().pending_rows == 48


def test_append_names_a_missing_column_at_once_and_bad_values_are_rejected_at_the_flush(archive_lake):
    with ForecastArchive(archive_lake, flush_interval=0.2) as archive:
        with pytest.raises(ForecastArchiveError, match="'quality'"):
            archive.append(frame("m").drop(columns="quality"))
        archive.append(frame("good"))
        archive.append(frame("bad", source="web"))
        archive.append(frame("also good"))
        wait_for(lambda: archive.stats().flushed_rows == 48, 5, "the flush of the good rows")
        stats = archive.stats()
    assert stats.rejected_rows == 24 and "'source'" in stats.last_error and "'web'" in stats.last_error
    assert sorted(read_forecasts(archive_lake)["request_id"].unique()) == ["also good", "good"]


def test_close_flushes_what_is_queued(archive_lake):
    archive = ForecastArchive(archive_lake, flush_interval=3600)
    archive.append(frame("late"))
    archive.close()
    assert len(read_forecasts(archive_lake)) == 24


# ---------------------------------------------------------------- crashes and concurrent writers


WRITER = r"""
import logging, os, sys, time
import numpy as np, pandas as pd
from features.lake import Lake
from features.settings import AurumSettings
from serving.archive import ForecastArchive, forecast_frame

home, log_path, interval, name, count, go = sys.argv[1:7]
logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
logging.getLogger("features.lake").setLevel(logging.INFO)  # "commit to ... conflicted; retry ..."
logging.getLogger("pyiceberg.table").setLevel(logging.INFO)  # "Commit failed due to a concurrent update, retrying"
lake = Lake.open(AurumSettings(home=home))
archive = ForecastArchive(lake, flush_interval=float(interval))
hours = pd.date_range("2024-03-04 23:00", periods=24, freq="h", tz="UTC")
pred = pd.DataFrame({"q10": np.arange(24.0), "q50": np.arange(24.0) + 1, "q90": np.arange(24.0) + 2})
log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
os.write(log, b"ready\n")
while go != "-" and not os.path.exists(go):
    time.sleep(0.01)
i = 0
while int(count) < 0 or i < int(count):
    archive.append(forecast_frame(market="SYN_NORTH", timezone="Europe/Berlin", delivery_start=hours,
                                  issued_at=pd.Timestamp("2024-03-04 11:00", tz="UTC"), predictions=pred,
                                  levels=[0.1, 0.5, 0.9], model_name="m", model_version="1",
                                  request_id=f"{name}-{i}", tenant="t", feature_service="day_ahead_v1"))
    os.write(log, f"{name}-{i} {time.time():.6f}\n".encode())
    i += 1
    time.sleep(0.01)
archive.close()
import json
s = archive.stats()
os.write(log, ("stats " + json.dumps({"flushed": s.flushed_rows, "failed": s.failed_flushes}) + "\n").encode())
"""


def _writer(home: Path, log: Path, interval: float, name: str, count: int, go: str = "-") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AURUM_")}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(home), str(log), str(interval), name, str(count), go],
                            cwd=ROOT, env=env | {"PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _appended(log: Path) -> dict[str, float]:
    lines = log.read_text().splitlines() if log.exists() else []
    return {p[0]: float(p[1]) for p in (line.split() for line in lines) if len(p) == 2 and p[0] != "stats"}


@pytest.mark.slow
def test_a_writer_killed_mid_stream_loses_at_most_the_last_interval(archive_lake, tmp_path):
    interval = 1.0
    log = tmp_path / "writer.log"
    proc = _writer(archive_lake.settings.home, log, interval, "w", -1)
    try:
        # Several flushes have been committed, and the writer is still appending.
        wait_for(lambda: len(read_forecasts(archive_lake, columns=("request_id",))) >= 24 * 30, 60,
                 "the writer's first flushes")
        n = len(_appended(log))
        wait_for(lambda: len(_appended(log)) >= n + 40, 20, "more appends after the last read")
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    appended = _appended(log)
    table = read_forecasts(archive_lake, columns=("request_id", "delivery_start"))  # reads fine after the crash
    rows = table.groupby("request_id").size()
    assert (rows == 24).all(), "a forecast is all or nothing, never duplicated"
    assert set(rows.index) <= set(appended), "nothing is in the table that was not appended"
    old_enough = {r for r, t in appended.items() if t < killed_at - interval}
    assert old_enough and old_enough <= set(rows.index), (
        f"lost rows appended more than {interval} s before the kill: {sorted(old_enough - set(rows.index))[:5]}")
    assert len(rows) < len(appended), "the kill should have caught some rows in the buffer"
    with ForecastArchive(archive_lake, flush_interval=0.2) as archive:  # the table takes new commits
        archive.append(frame("after-crash"))
    assert (read_forecasts(archive_lake, columns=("request_id",))["request_id"] == "after-crash").sum() == 24


@pytest.mark.slow
def test_two_processes_append_to_one_table_and_conflicts_are_retried(archive_lake, tmp_path):
    go = tmp_path / "go"
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [_writer(archive_lake.settings.home, log, 0.1, name, 60, str(go)) for log, name in zip(logs, "ab")]
    try:
        wait_for(lambda: all(log.exists() and log.read_text().startswith("ready") for log in logs), 60,
                 "both writers to start")
        go.touch()  # both start appending at once: their commits overlap
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    stats = [json.loads(log.read_text().splitlines()[-1].removeprefix("stats ")) for log in logs]
    assert stats == [{"flushed": 60 * 24, "failed": 0}] * 2
    table = read_forecasts(archive_lake, columns=("request_id", "delivery_start"))
    assert len(table) == 2 * 60 * 24 and not table.duplicated().any()
    assert table["request_id"].str[0].value_counts().to_dict() == {"a": 1440, "b": 1440}
    # A collision is redone by pyiceberg's own retry of an append, or failing that by Lake.rewrite's.
    retries = sum(err.count("concurrent update, retrying") + err.count("conflicted; retry") for _, err in outputs)
    assert retries >= 1, "the two writers never collided: the retry path was not exercised"


# ---------------------------------------------------------------- batch days, reads, compaction


def _batch_rows(days: list[dt.date], version: str = "1", batch: str = "b1") -> pa.Table:
    parts = []
    for d in days:
        hours = pd.date_range(pd.Timestamp(d).tz_localize("Europe/Berlin"),
                              pd.Timestamp(d + dt.timedelta(days=1)).tz_localize("Europe/Berlin"),
                              freq="h", inclusive="left").tz_convert("UTC")
        parts.append(frame(f"{batch}/{d}", hours=hours, source="batch", batch_id=batch, model_version=version,
                           tenant="internal", issued_at=pd.Timestamp(d - dt.timedelta(days=1), tz="UTC")))
    return to_forecast_table(pd.concat(parts, ignore_index=True))


def _race(lake: Lake, rows: list[pa.Table], monkeypatch) -> list:
    """``write_days`` of each table at once, from threads with their own catalog connections; each
    thread's first commit waits until every thread has read the table, so the commits do collide."""
    lakes = [Lake.open(lake.settings) for _ in rows]
    barrier, first = threading.Barrier(len(rows)), set()
    swap = Lake._swap

    def colliding_swap(self, *args, **kwargs):
        if threading.get_ident() not in first:
            first.add(threading.get_ident())
            barrier.wait(30)
        return swap(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Lake, "_swap", colliding_swap)
        return _run_threads(lakes, rows)


def _run_threads(lakes: list[Lake], rows: list[pa.Table]) -> list:
    results: list = [None] * len(rows)
    errors: list[BaseException] = []

    def run(i):
        try:
            results[i] = write_days(lakes[i], rows[i])
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(rows))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


@pytest.mark.parametrize("history", [False, True], ids=["empty window", "window with files"])
def test_write_days_archives_a_day_once_even_when_runs_race(archive_lake, history, monkeypatch, caplog):
    """Whichever run commits second finds the first's days inside its own commit and skips them."""
    caplog.set_level(logging.INFO, logger="features.lake")
    days = [dt.date(2024, 3, 30), dt.date(2024, 3, 31), dt.date(2024, 4, 1)]  # 24 + 23 + 24 hours
    if history:
        first = write_days(archive_lake, _batch_rows(days[:2]))
        assert first.written == tuple(days[:2]) and first.rows == 47
    results = _race(archive_lake, [_batch_rows(days, batch=f"race{i}") for i in range(2)], monkeypatch)
    new = days[2:] if history else days
    assert sorted(r.written for r in results) == [(), tuple(new)]
    assert sorted(r.skipped for r in results) == [tuple(days[:2]) if history else (), tuple(days)]
    got = read_forecasts(archive_lake, source="batch", model_version="1")
    assert len(got) == 24 + 23 + 24 and not got.duplicated(["delivery_start"]).any()
    assert "conflicted" in caplog.text  # the loser's commit failed and was redone from the new state
    other = write_days(archive_lake, _batch_rows(days[:1], version="2"))  # another version is another key
    assert other.written == (days[0],)


def test_read_forecasts_filters_by_window_and_columns(archive_lake):
    write_forecasts(archive_lake, to_forecast_table(frame("one")))
    later = HOURS + pd.Timedelta(days=40)
    write_forecasts(archive_lake, to_forecast_table(frame("two", hours=later, model_alias="challenger",
                                                          shadow=True)))
    assert len(read_forecasts(archive_lake)) == 48
    window = read_forecasts(archive_lake, "SYN_NORTH", "2024-03-05", "2024-03-05T06:00")
    assert len(window) == 6 and window["delivery_start"].min() == pd.Timestamp("2024-03-05", tz="UTC")
    assert set(read_forecasts(archive_lake, model_alias="challenger")["request_id"]) == {"two"}
    assert read_forecasts(archive_lake, market="SYN_SOUTH").empty
    assert list(read_forecasts(archive_lake, columns=("request_id", "forecast")).columns) == ["request_id", "forecast"]
    with pytest.raises(ForecastArchiveError, match="'price'"):
        read_forecasts(archive_lake, columns=("price",))


def test_compact_merges_a_partitions_small_files_and_keeps_every_row(archive_lake):
    for i in range(5):
        write_forecasts(archive_lake, to_forecast_table(frame(f"c{i}")))
    write_forecasts(archive_lake, to_forecast_table(frame("april", hours=HOURS + pd.Timedelta(days=30))))
    write_days(archive_lake, _batch_rows([dt.date(2024, 3, 5)]))  # batch rows keep to files of their own
    before = read_forecasts(archive_lake)
    assert partition_files(archive_lake) == {("SYN_NORTH", "2024-03", "api"): 5, ("SYN_NORTH", "2024-04", "api"): 1,
                                             ("SYN_NORTH", "2024-03", "batch"): 1}
    assert compact(archive_lake, min_files=2) == {("SYN_NORTH", "2024-03", "api"): 5}
    assert partition_files(archive_lake) == {("SYN_NORTH", "2024-03", "api"): 1, ("SYN_NORTH", "2024-04", "api"): 1,
                                             ("SYN_NORTH", "2024-03", "batch"): 1}
    after = read_forecasts(archive_lake)
    pd.testing.assert_frame_equal(before.drop(columns=["levels", "values"]), after.drop(columns=["levels", "values"]))
    assert [list(v) for v in before["values"]] == [list(v) for v in after["values"]]
    assert compact(archive_lake, min_files=2) == {}


def file_sizes(lake: Lake, month: str, source: str = "api") -> list[int]:
    """Sizes of the data files of SYN_NORTH's (month, source) partition of the archive, smallest first."""
    files = lake.table(FORECASTS_TABLE).inspect.files().select(["file_path", "file_size_in_bytes"]).to_pylist()
    return sorted(f["file_size_in_bytes"] for f in files
                  if f"delivery_month={month}/source={source}/" in f["file_path"])


def test_a_merge_is_bounded_in_bytes_and_the_archive_merges_again_while_small_files_are_left(archive_lake):
    """With a bound that fits about two flush files, one merge cannot take the four files a partition got
    from four flushes; the archive merges again (each merge within the bound) rather than leave them."""
    with ForecastArchive(archive_lake, flush_interval=3600, compact_every=4) as archive:
        archive.append(frame("r0"))
        archive.flush()
        one = file_sizes(archive_lake, "2024-03")[0]
        archive.compact_bytes = int(2.5 * one)
        for i in range(1, 4):
            archive.append(frame(f"r{i}"))
            archive.flush()
        assert archive.stats().compactions >= 2  # a single bounded merge would leave 3 files
    sizes = file_sizes(archive_lake, "2024-03")
    assert len(sizes) <= 2 and max(sizes) <= 2.5 * one
    got = read_forecasts(archive_lake)
    assert sorted(got["request_id"].unique()) == ["r0", "r1", "r2", "r3"] and len(got) == 4 * 24


def test_the_archive_compacts_what_its_flushes_touch_so_files_stay_bounded(archive_lake):
    """Every flush leaves a small file per partition; after ``compact_every`` flushes into a partition the
    archive merges that partition's small files, so a long-running service does not pile up files (and the
    ever longer manifests every later commit reads). Rows are unchanged."""
    april = HOURS + pd.Timedelta(days=30)
    with ForecastArchive(archive_lake, flush_interval=3600, compact_every=3) as archive:
        counts = []
        for i in range(7):
            archive.append(frame(f"m{i}"))
            if i % 2:
                archive.append(frame(f"a{i}", hours=april))  # April is touched every other flush
            assert archive.flush() == 24 * (1 + i % 2)
            counts.append(partition_files(archive_lake).get(("SYN_NORTH", "2024-03", "api")))
        assert counts == [1, 2, 1, 2, 3, 1, 2]  # merged after the 3rd and 6th flush into March
        assert partition_files(archive_lake)[("SYN_NORTH", "2024-04", "api")] == 1  # its 3rd flush merged it
        assert archive.stats().compactions == 3
    got = read_forecasts(archive_lake)
    assert len(got) == 24 * 10 and got.groupby("request_id").size().eq(24).all()
    for i in range(2):
        write_forecasts(archive_lake, to_forecast_table(frame(f"late{i}", hours=april)))
    assert compact_small(archive_lake, "SYN_NORTH", "2024-03", "api", max_bytes=1) == 0  # no file is that small
    assert partition_files(archive_lake)[("SYN_NORTH", "2024-03", "api")] == 2
    april = file_sizes(archive_lake, "2024-04")
    assert len(april) == 3
    # one merge takes the smallest files while their sizes fit in max_bytes: the bound on its memory
    assert compact_small(archive_lake, "SYN_NORTH", "2024-04", "api", max_bytes=april[0] + april[1]) == 2
    assert partition_files(archive_lake)[("SYN_NORTH", "2024-04", "api")] == 2
    assert compact_small(archive_lake, "SYN_NORTH", "2024-04", "api") == 2
    assert partition_files(archive_lake)[("SYN_NORTH", "2024-04", "api")] == 1
    with pytest.raises(ValueError, match="compact_every 1"):
        ForecastArchive(archive_lake, compact_every=1)
