"""The archiver process (serving.archiver): the service worker's Iceberg commits in a child process.

Real child processes (``python -m serving.archiver``) writing a real Iceberg table in a temporary
SQLite catalog; the worker's side killed with SIGKILL, and the child killed under it.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
import time

import numpy as np
import pandas as pd
import pytest

from features.lake import Lake
from features.settings import AurumSettings
from serving import archiver
from serving.archive import ensure_forecasts_table, read_forecasts, to_forecast_table

DAY = dt.date(2024, 3, 5)


def make_record(request_id: str, shift: float = 0.0) -> tuple:
    starts = pd.date_range(pd.Timestamp(DAY).tz_localize("Europe/Berlin"), periods=24, freq="h").tz_convert("UTC")
    issued = pd.Timestamp("2024-03-04 11:00", tz="UTC")
    values = np.column_stack([np.arange(24.0) + shift - 5, np.arange(24.0) + shift, np.arange(24.0) + shift + 5])
    scalars = (request_id, None, "api", "t1", "SYN_NORTH", DAY, issued, issued + pd.Timedelta(seconds=1),
               (0.1, 0.5, 0.9), "aurum_SYN_NORTH", "3", "champion", False, None, "day_ahead_v1", 42,
               issued - pd.Timedelta(hours=2), "ok", None)
    return archiver.record(scalars, starts.as_unit("us").asi8, values)


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "home"
    ensure_forecasts_table(Lake.open(AurumSettings(home=home)))
    return home


def archived(home) -> pd.DataFrame:
    return read_forecasts(Lake.open(AurumSettings(home=home)), columns=("request_id", "delivery_start", "forecast"))


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
    return value


def env_of(home) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("AURUM_")}, "AURUM_HOME": str(home)}


def test_records_become_rows_that_meet_the_archive_contract():
    table = to_forecast_table(archiver.archive_rows([make_record("a"), make_record("b", shift=100.0)]))
    frame = table.to_pandas()
    assert len(frame) == 48 and list(frame["request_id"].unique()) == ["a", "b"]
    assert frame["forecast"].tolist() == [*np.arange(24.0), *(np.arange(24.0) + 100)]  # the median column
    assert frame["values"].iloc[25].tolist() == [96.0, 101.0, 106.0] and frame["levels"].iloc[0].tolist() == [0.1, 0.5, 0.9]
    assert frame["delivery_start"].is_monotonic_increasing is False  # two forecasts of one day
    assert frame["delivery_start"].iloc[0] == pd.Timestamp("2024-03-04 23:00", tz="UTC")


def test_the_child_archives_what_it_was_sent_and_exits_when_the_stream_ends(home):
    proc = archiver.ArchiverProcess(env_of(home), nice=5)
    # its commits and merges yield the CPU to the worker: niceness (field 19 of stat) 5 above ours
    assert int(Path(f"/proc/{proc.process.pid}/stat").read_text().rsplit(")", 1)[1].split()[16]) == \
        min(19, os.getpriority(os.PRIO_PROCESS, 0) + 5)
    environ = dict(item.split("=", 1) for item in
                   Path(f"/proc/{proc.process.pid}/environ").read_text().split("\0") if "=" in item)
    # allocators that return memory: the child's RSS otherwise grows under a steady load
    assert environ["ARROW_DEFAULT_MEMORY_POOL"] == "system" and environ["MALLOC_ARENA_MAX"] == "2"
    assert environ["MALLOC_MMAP_THRESHOLD_"] == environ["MALLOC_TRIM_THRESHOLD_"] == "131072"
    proc.write([make_record(f"r{i}") for i in range(10)])
    proc.write([make_record("r10")])
    proc.close()
    assert proc.process.returncode == 0
    rows = archived(home).groupby("request_id").size()
    assert len(rows) == 11 and (rows == 24).all()


def test_the_child_takes_its_compaction_cadence_from_the_settings(home):
    from pydantic import ValidationError

    for settings, expected in ((AurumSettings(home=home), 16),
                               (AurumSettings(home=home, serving={"archive_compact_every": 0}), 0)):
        archive = archiver.open_archive(settings)
        archive.close()
        assert archive.compact_every == expected
    with pytest.raises(ValidationError, match="archive_compact_every 1 would merge after every flush"):
        AurumSettings(home=home, serving={"archive_compact_every": 1})


@pytest.mark.slow
def test_a_killed_worker_loses_nothing_it_had_sent_and_a_killed_child_is_replaced(home, tmp_path):
    # the worker: sends 20 batches, says so, then dies by SIGKILL without closing anything
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys
        from serving import archiver
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_archiver import make_record
        proc = archiver.ArchiverProcess()
        for i in range(20):
            proc.write([make_record(f"w{{i}}-{{j}}") for j in range(5)])
        print(proc.process.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """))
    worker = subprocess.run([sys.executable, str(script)], env={**env_of(home), "PYTHONPATH": str(archiver.ROOT)},
                            capture_output=True, text=True, timeout=120, cwd=archiver.ROOT)
    assert worker.returncode == -signal.SIGKILL, worker.stderr[-2000:]
    child = int(worker.stdout.split()[0])
    wait_for(lambda: not _alive(child), 60, "the orphaned archiver to flush and exit")
    rows = archived(home).groupby("request_id").size()
    assert len(rows) == 100 and (rows == 24).all(), "every forecast sent before the kill is archived, once"

    # the child killed under a live worker: the next send starts a new one and nothing sent after is lost
    proc = archiver.ArchiverProcess(env_of(home))
    proc.write([make_record("before")])
    first = proc.process
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    proc.write([make_record("after")])
    assert proc.restarts == 1 and proc.process.pid != first.pid
    proc.close()
    ids = set(archived(home)["request_id"])
    assert "after" in ids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped by init) counts as gone
        return f.read().split()[2] != "Z"
