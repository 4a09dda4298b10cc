"""DST conversion: 23- and 25-hour days, padded sources, skipped and repeated hours."""

import pandas as pd
import pytest

from features.timeutil import gap_ranges, to_utc


def _local(*texts):
    return pd.Series(pd.to_datetime(list(texts)))


def test_padded24_spring_day_rejects_the_skipped_hour_and_keeps_23_real_hours():
    day = pd.Series(pd.date_range("2019-03-31 00:00", periods=24, freq="h"))
    utc, reason, repeat = to_utc(day, "Europe/Berlin", "padded24")
    assert reason.tolist().count("dst_nonexistent_hour") == 1
    assert reason[2] == "dst_nonexistent_hour" and pd.isna(utc[2])
    placed = utc.dropna()
    assert len(placed) == 23 and placed.is_unique
    assert placed.iloc[0] == pd.Timestamp("2019-03-30 23:00", tz="UTC")  # 00:00 CET
    assert placed.iloc[2] == pd.Timestamp("2019-03-31 01:00", tz="UTC")  # 03:00 CEST
    assert not repeat.any()


def test_padded24_autumn_day_marks_the_averaged_hour_for_both_real_hours():
    day = pd.Series(pd.date_range("2019-10-27 00:00", periods=24, freq="h"))
    utc, reason, repeat = to_utc(day, "Europe/Berlin", "padded24")
    assert reason.isna().all()
    assert repeat.tolist() == [i == 2 for i in range(24)]
    assert utc[2] == pd.Timestamp("2019-10-27 00:00", tz="UTC")  # 02:00 CEST, the first of the two
    assert utc[3] == pd.Timestamp("2019-10-27 02:00", tz="UTC")  # 03:00 CET: the hour in between is the repeat
    assert str(utc.dtype) == "datetime64[us, UTC]"


def test_wallclock_autumn_day_has_25_distinct_hours_in_order():
    hours = [f"2021-10-31 {h:02d}:00" for h in range(24)]
    hours.insert(3, "2021-10-31 02:00")  # the repeated hour appears twice in a true local series
    utc, reason, _ = to_utc(_local(*hours), "Europe/Paris", "wallclock")
    assert reason.isna().all()
    assert len(utc) == 25 and utc.is_unique and utc.is_monotonic_increasing
    assert (utc.diff().dropna() == pd.Timedelta(hours=1)).all()


def test_wallclock_spring_day_rejects_a_time_that_does_not_exist():
    utc, reason, _ = to_utc(_local("2021-03-28 01:00", "2021-03-28 02:30", "2021-03-28 03:00"), "Europe/Paris", "wallclock")
    assert reason.tolist() == [None, "dst_nonexistent_hour", None]
    assert utc[2] - utc[0] == pd.Timedelta(hours=1)


def test_explicit_offsets_are_honoured_whatever_the_convention():
    ts = pd.Series(pd.to_datetime(["2021-10-31T02:00:00+02:00", "2021-10-31T02:00:00+01:00"], utc=True))
    utc, reason, _ = to_utc(ts, "Europe/Paris", "wallclock")
    assert utc.tolist() == [pd.Timestamp("2021-10-31 00:00", tz="UTC"), pd.Timestamp("2021-10-31 01:00", tz="UTC")]


def test_unknown_convention_names_the_value():
    with pytest.raises(ValueError, match="'local'"):
        to_utc(_local("2021-01-01"), "Europe/Paris", "local")


def test_gap_ranges_lists_each_hole():
    s = pd.Series(pd.to_datetime(["2021-01-01 00:00", "2021-01-01 01:00", "2021-01-01 04:00", "2021-01-01 06:00"], utc=True))
    assert gap_ranges(s, "PT60M") == [
        (pd.Timestamp("2021-01-01 02:00", tz="UTC"), pd.Timestamp("2021-01-01 03:00", tz="UTC")),
        (pd.Timestamp("2021-01-01 05:00", tz="UTC"), pd.Timestamp("2021-01-01 05:00", tz="UTC")),
    ]
