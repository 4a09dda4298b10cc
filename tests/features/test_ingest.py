"""Ingestion into a real Iceberg SQL catalog (SQLite): idempotency, atomicity, quarantine, bad input."""

import json
import multiprocessing as mp

import pandas as pd
import pytest

from features.errors import IngestAbortedError, MappingError, SourceFormatError, UnknownMarketError
from features.ingest import ingest_file
from features.lake import Lake
from features.marketdata import MarketData
from features.sources import SourceMapping

MAPPING = SourceMapping(
    market="SYN_NORTH", timestamp="time", convention="wallclock",
    columns={"price": "price", "load": "load_forecast_mw", "wind": "wind_forecast_mw", "actual": "load_actual_mw"},
)


def write_csv(path, start="2021-01-04 00:00", hours=48, price=lambda i: 40.0 + i, rows=None):
    """An hourly local-time CSV; ``rows`` replaces the generated data rows when given."""
    if rows is None:
        ts = pd.date_range(start, periods=hours, freq="h")
        rows = [f"{t:%Y-%m-%d %H:%M},{price(i)},{30000 + i},{5000 + i},{30100 + i}" for i, t in enumerate(ts)]
    path.write_text("time,price,load,wind,actual\n" + "\n".join(rows) + "\n")
    return path


def table_state(lake: Lake) -> dict[str, list]:
    return {t: sorted(map(str, lake.scan(t).to_pylist())) for t in ("prices", "fundamentals", "quarantine", "ingest_batches")}


def test_ingest_writes_every_table_with_known_times(lake, tmp_path):
    r = ingest_file(lake, "csv", "SYN_NORTH", write_csv(tmp_path / "a.csv"), mapping=MAPPING)
    assert (r.prices_accepted, r.fundamentals_accepted, r.quarantined) == (48, 48, 0)
    md = MarketData(lake)
    p = md.prices("SYN_NORTH")
    assert len(p) == 48 and p["delivery_start"].is_unique
    # 2021-01-04 00:00 Berlin is 2021-01-03 23:00 UTC; the prices of that day were published on D-1 13:00 local.
    first = p.iloc[0]
    assert first["delivery_start"] == pd.Timestamp("2021-01-03 23:00", tz="UTC")
    assert first["delivery_end"] - first["delivery_start"] == pd.Timedelta(hours=1)
    assert first["published_at"] == pd.Timestamp("2021-01-03 12:00", tz="UTC")
    f = md.fundamentals("SYN_NORTH")
    assert (f["issued_at"] < f["delivery_start"]).all()
    assert (f["load_actual_known_at"] == f["delivery_end"] + pd.Timedelta(hours=1)).all()
    assert str(p["delivery_start"].dtype) == "datetime64[us, UTC]"
    batches = md.batches("SYN_NORTH")
    assert len(batches) == 1 and batches.iloc[0]["source_sha256"] == r.source_sha256
    assert batches.iloc[0]["rows_read"] == 48


def test_same_file_twice_is_a_no_op_and_force_keeps_one_row_per_period(lake, tmp_path):
    f = write_csv(tmp_path / "a.csv")
    ingest_file(lake, "csv", "SYN_NORTH", f, mapping=MAPPING)
    before = lake.snapshot_id("prices")
    again = ingest_file(lake, "csv", "SYN_NORTH", f, mapping=MAPPING)
    assert again.skipped and "already ingested" in again.skipped
    assert lake.snapshot_id("prices") == before
    ingest_file(lake, "csv", "SYN_NORTH", f, mapping=MAPPING, force=True)
    p = MarketData(lake).prices("SYN_NORTH")
    assert len(p) == 48 and p["delivery_start"].is_unique


def test_overlapping_file_newer_value_wins_and_rows_outside_the_overlap_stay(lake, tmp_path):
    ingest_file(lake, "csv", "SYN_NORTH", write_csv(tmp_path / "a.csv", hours=48), mapping=MAPPING)
    # A revision: the second day again, plus a third day, with other prices.
    ingest_file(lake, "csv", "SYN_NORTH", write_csv(tmp_path / "b.csv", start="2021-01-05 00:00", hours=48,
                                                     price=lambda i: 500.0 + i), mapping=MAPPING)
    p = MarketData(lake).prices("SYN_NORTH")
    assert len(p) == 72 and p["delivery_start"].is_unique
    assert p["price"].iloc[:24].tolist() == [40.0 + i for i in range(24)]
    assert p["price"].iloc[24:].tolist() == [500.0 + i for i in range(48)]


def test_one_snapshot_per_changed_table_per_batch(lake, tmp_path):
    ingest_file(lake, "csv", "SYN_NORTH", write_csv(tmp_path / "a.csv"), mapping=MAPPING)
    tables = ("markets", "prices", "fundamentals", "quarantine", "ingest_batches")
    counts = {t: len(lake.table(t).snapshots()) for t in tables}
    ingest_file(lake, "csv", "SYN_NORTH", write_csv(tmp_path / "b.csv", start="2021-01-05"), mapping=MAPPING)
    after = {t: len(lake.table(t).snapshots()) for t in tables}
    # The market row is unchanged and nothing was quarantined: those tables get no snapshot.
    assert after == counts | {t: counts[t] + 1 for t in ("prices", "fundamentals", "ingest_batches")}
    assert lake.snapshot_summary("prices")["aurum.batch_id"] == MarketData(lake).batches().iloc[-1]["batch_id"]


def test_history_is_bounded_to_the_newest_snapshots(tmp_path):
    from features.settings import AurumSettings

    lake = Lake.open(AurumSettings(home=tmp_path / "h", snapshot_keep_last=3))
    for day in range(6):
        ingest_file(lake, "csv", "SYN_NORTH", write_csv(tmp_path / f"{day}.csv", start=f"2021-01-{4 + day:02d}", hours=24),
                    mapping=MAPPING)
    assert len(lake.table("prices").snapshots()) == 3
    assert len(MarketData(lake).prices("SYN_NORTH")) == 6 * 24
    oldest_kept = lake.table("prices").snapshots()[0].snapshot_id
    assert len(MarketData(lake).prices("SYN_NORTH", snapshot_id=oldest_kept)) == 4 * 24  # time travel still works


def test_failure_mid_batch_leaves_every_table_unchanged(lake, tmp_path, monkeypatch):
    ingest_file(lake, "csv", "SYN_NORTH", write_csv(tmp_path / "a.csv"), mapping=MAPPING)
    before = table_state(lake)
    real_swap = Lake._swap
    swapped = []

    def failing_swap(self, table, removed, new, properties):
        swapped.append(table.name()[-1])
        if table.name()[-1] == "fundamentals":  # prices (and markets) are already committed by then
            raise OSError("disk full (injected)")
        return real_swap(self, table, removed, new, properties)

    monkeypatch.setattr(Lake, "_swap", failing_swap)
    with pytest.raises(IngestAbortedError, match="undone"):
        ingest_file(lake, "csv", "SYN_NORTH", write_csv(tmp_path / "b.csv", start="2021-01-05", price=lambda i: -1.0),
                    mapping=MAPPING)
    assert swapped == ["prices", "fundamentals"]  # prices had been committed when the failure came
    assert table_state(lake) == before


def test_bad_rows_go_to_quarantine_with_reason_line_and_raw_values(lake, tmp_path):
    rows = [
        "2021-01-04 00:00,40,30000,5000,30100",
        "2021-01-04 01:00,41,0,5001,30101",        # zero load forecast: missing
        "2021-01-04 02:00,9999,30002,5002,30102",  # price above the plausible bound
        "2021-01-04 03:00,abc,30003,5003,30103",   # price not a number
        "2021-01-04 04:00,44,30004,5004,30104",
        "2021-01-04 04:00,44,30004,5004,30104",    # identical duplicate: first kept
        "2021-01-04 05:00,45,30005,5005,30105",
        "2021-01-04 05:00,46,30005,5005,30105",    # conflicting duplicate: none kept
        "not-a-time,47,1,1,1",
        ",,,,",                                    # empty row
        "2021-01-04 09:00,49,30009,5009,30109",    # after a gap of 06:00-08:00
    ]
    r = ingest_file(lake, "csv", "SYN_NORTH", write_csv(tmp_path / "bad.csv", rows=rows), mapping=MAPPING)
    assert r.quarantine_by_reason == {
        "duplicate_conflict": 2, "duplicate_timestamp": 1, "empty_row": 1, "out_of_bounds": 1,
        "unparseable_timestamp": 1, "unparseable_value": 1, "zero_as_missing": 1,
    }
    q = MarketData(lake).quarantine("SYN_NORTH")
    zero = q[q["reason"] == "zero_as_missing"].iloc[0]
    assert zero["source_line"] == 3 and zero["column"] == "load_forecast_mw"
    assert json.loads(zero["raw"])["load"] == "0"
    assert "9999" in q[q["reason"] == "out_of_bounds"].iloc[0]["detail"]
    p = MarketData(lake).prices("SYN_NORTH")
    # kept prices: 00, 01, 04, 09 (02 out of bounds, 03 unparseable, 05 conflicting)
    assert p["price"].tolist() == [40.0, 41.0, 44.0, 49.0]
    f = MarketData(lake).fundamentals("SYN_NORTH")
    assert f.set_index(f["delivery_start"].dt.hour)["load_forecast_mw"].isna().loc[0]  # 01:00 local = 00 UTC
    assert r.gaps == 4  # 05:00 (conflict), 06:00, 07:00, 08:00 local


def test_reingest_replaces_the_files_quarantine_records(lake, tmp_path):
    rows = ["2021-01-04 00:00,40,0,5000,30100", "2021-01-04 01:00,41,30001,5001,30101"]
    f = write_csv(tmp_path / "q.csv", rows=rows)
    ingest_file(lake, "csv", "SYN_NORTH", f, mapping=MAPPING)
    ingest_file(lake, "csv", "SYN_NORTH", f, mapping=MAPPING, force=True)
    assert len(MarketData(lake).quarantine("SYN_NORTH")) == 1


def test_unknown_market_fails_and_writes_nothing(lake, tmp_path):
    with pytest.raises(UnknownMarketError, match="'XX'.*expected one of"):
        ingest_file(lake, "csv", "XX", write_csv(tmp_path / "a.csv"), mapping=MAPPING)
    assert all(not rows for rows in table_state(lake).values())


def test_unparseable_file_names_file_and_line_and_writes_nothing(lake, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text('time,price,load,wind,actual\n2021-01-04 00:00,1,2,3,4\n"unclosed,1,2,3,4\n2021-01-04 01:00,1,2,3,4,5,6\n')
    with pytest.raises(SourceFormatError, match=r"bad\.csv, line \d"):
        ingest_file(lake, "csv", "SYN_NORTH", bad, mapping=MAPPING)
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00\x01garbage")
    with pytest.raises(SourceFormatError, match="not a UTF-8 text file"):
        ingest_file(lake, "csv", "SYN_NORTH", binary, mapping=MAPPING)
    with pytest.raises(SourceFormatError, match="no such file"):
        ingest_file(lake, "csv", "SYN_NORTH", tmp_path / "absent.csv", mapping=MAPPING)
    assert all(not rows for rows in table_state(lake).values())


def test_timestamps_that_never_parse_fail_the_file_with_the_first_bad_value(lake, tmp_path):
    f = write_csv(tmp_path / "dates.csv", rows=["04.01.2021 00:00,1,2,3,4", "04.01.2021 01:00,1,2,3,4"])
    with pytest.raises(SourceFormatError, match=r"line 2, column 'time'.*'04.01.2021 00:00'"):
        ingest_file(lake, "csv", "SYN_NORTH", f, mapping=MAPPING)


def test_wrong_mapping_names_missing_columns(lake, tmp_path):
    m = MAPPING.model_copy(update={"columns": {"price": "price", "solar": "solar_forecast_mw"}})
    with pytest.raises(MappingError, match=r"\['solar'\].*the file has"):
        ingest_file(lake, "csv", "SYN_NORTH", write_csv(tmp_path / "a.csv"), mapping=m)
    assert all(not rows for rows in table_state(lake).values())


def test_mapping_file_errors_name_the_problem(tmp_path):
    bad = tmp_path / "m.toml"
    bad.write_text('timestamp = "t"\n[columns]\np = "prize"\n')
    with pytest.raises(MappingError, match="unknown target columns.*'prize'"):
        SourceMapping.load(bad)
    broken = tmp_path / "m.json"
    broken.write_text("{not json")
    with pytest.raises(MappingError, match="not valid json"):
        SourceMapping.load(broken)
    good = tmp_path / "ok.toml"
    good.write_text('market = "SYN_NORTH"\ntimestamp = "t"\nresolution = "PT15M"\n[columns]\np = "price"\n')
    assert SourceMapping.load(good).resolution == "PT15M"


def test_quarter_hour_file_with_utc_offsets(lake, tmp_path):
    ts = pd.date_range("2024-03-31 00:00", periods=16, freq="15min", tz="Europe/Berlin")
    rows = "\n".join(f"{t.isoformat()},{i}" for i, t in enumerate(ts))
    f = tmp_path / "q.csv"
    f.write_text("t,p\n" + rows + "\n")
    m = SourceMapping(timestamp="t", resolution="PT15M", columns={"p": "price"})
    r = ingest_file(lake, "csv", "SYN_NORTH", f, mapping=m)
    p = MarketData(lake).prices("SYN_NORTH")
    assert r.prices_accepted == 16 and r.gaps == 0
    assert (p["delivery_end"] - p["delivery_start"] == pd.Timedelta(minutes=15)).all()
    assert (p["resolution"] == "PT15M").all()


def _ingest_in_process(home, market, path):
    from features.settings import AurumSettings

    lake = Lake.open(AurumSettings(home=home))
    ingest_file(lake, "csv", market, path, mapping=MAPPING)


def test_two_processes_ingesting_two_markets_at_once_both_land(settings, lake, tmp_path):
    a = write_csv(tmp_path / "a.csv", hours=24 * 30)
    b = write_csv(tmp_path / "b.csv", hours=24 * 30, price=lambda i: 7.0)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_ingest_in_process, args=(settings.home, m, f))
             for m, f in (("SYN_NORTH", a), ("SYN_SOUTH", b))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    md = MarketData(lake)
    assert len(md.prices("SYN_NORTH")) == 720 and len(md.prices("SYN_SOUTH")) == 720
    assert set(md.batches()["market"]) == {"SYN_NORTH", "SYN_SOUTH"}


def test_parquet_file_through_a_mapping(lake, tmp_path):
    ts = pd.date_range("2022-06-01", periods=24, freq="h", tz="UTC")
    pd.DataFrame({"ts": ts, "px": [float(i) for i in range(24)], "sun": [0.0] * 6 + [100.0] * 18}).to_parquet(
        tmp_path / "d.parquet")
    m = SourceMapping(timestamp="ts", convention="utc", columns={"px": "price", "sun": "solar_forecast_mw"})
    r = ingest_file(lake, "csv", "SYN_SOUTH", tmp_path / "d.parquet", mapping=m)
    assert (r.prices_accepted, r.fundamentals_accepted, r.quarantined) == (24, 24, 0)
    f = MarketData(lake).fundamentals("SYN_SOUTH")
    assert f["delivery_start"].iloc[0] == ts[0] and f["solar_forecast_mw"].iloc[0] == 0.0
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(SourceFormatError, match="not a readable Parquet file"):
        ingest_file(lake, "csv", "SYN_SOUTH", tmp_path / "broken.parquet", mapping=m)


def test_revised_and_late_values_are_known_only_from_their_arrival(lake, tmp_path):
    rows = [f"2021-01-04 {h:02d}:00,{40 + h},{30000 + h},{5000 + h},{30100 + h}" for h in range(4)]
    rows[3] = "2021-01-04 03:00,43,30003,0,30103"  # wind missing (zero) at first
    ingest_file(lake, "csv", "SYN_NORTH", write_csv(tmp_path / "a.csv", rows=rows), mapping=MAPPING)
    first = MarketData(lake).fundamentals("SYN_NORTH").set_index("delivery_start")
    revised = list(rows)
    revised[1] = "2021-01-04 01:00,41,99999,5001,30101"  # a revised load forecast
    revised[3] = "2021-01-04 03:00,43,30003,5003,30103"  # the late wind value
    r = ingest_file(lake, "csv", "SYN_NORTH", write_csv(tmp_path / "b.csv", rows=revised), mapping=MAPPING)
    f = MarketData(lake).fundamentals("SYN_NORTH").set_index("delivery_start")
    batch = MarketData(lake).batches().set_index("batch_id").loc[r.batch_id]
    late = f.index[[1, 3]]
    assert (f.loc[late, "issued_at"] == f.loc[late, "ingested_at"]).all()
    assert (f.loc[late, "issued_at"] > first.loc[late, "issued_at"]).all()
    assert f.loc[late[0], "load_forecast_mw"] == 99999 and f.loc[late[1], "wind_forecast_mw"] == 5003
    same = f.index[[0, 2]]
    assert (f.loc[same, "issued_at"] == first.loc[same, "issued_at"]).all()  # unchanged values keep their time
    assert batch["started_at"] <= f.loc[late[0], "issued_at"]
    # prices were not revised: their publication times stand
    p = MarketData(lake).prices("SYN_NORTH")
    assert (p["published_at"] < p["delivery_start"]).all()


def test_a_file_with_fundamentals_only_or_prices_only(lake, tmp_path):
    f = tmp_path / "load.csv"
    f.write_text("time,load\n2021-01-04 00:00,30000\n2021-01-04 01:00,30001\n")
    r = ingest_file(lake, "csv", "SYN_NORTH", f, mapping=SourceMapping(timestamp="time", columns={"load": "load_forecast_mw"}))
    assert (r.prices_accepted, r.fundamentals_accepted) == (0, 2)
    p = tmp_path / "price.csv"
    p.write_text("time,px\n2021-01-04 00:00,50\n")
    r = ingest_file(lake, "csv", "SYN_NORTH", p, mapping=SourceMapping(timestamp="time", columns={"px": "price"}))
    assert (r.prices_accepted, r.fundamentals_accepted) == (1, 0)
    assert len(MarketData(lake).fundamentals("SYN_NORTH")) == 2 and len(MarketData(lake).prices("SYN_NORTH")) == 1
