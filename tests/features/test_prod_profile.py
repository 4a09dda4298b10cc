"""The prod profile against the real PostgreSQL on 127.0.0.1:5432: same code, other catalog."""

import pandas as pd
import pytest

from features.errors import CatalogUnavailableError
from features.ingest import ingest_synthetic
from features.lake import Lake
from features.marketdata import MarketData
from features.settings import AurumSettings

pytestmark = pytest.mark.postgres


def test_ingest_and_read_through_the_postgresql_catalog(pg_settings):
    import datetime as dt

    lake = Lake.open(pg_settings)
    assert lake.catalog.properties["uri"].startswith("postgresql")
    [r] = ingest_synthetic(lake, ["SYN_EAST"], dt.date(2022, 1, 1), dt.date(2022, 3, 1), seed=3)
    assert r.prices_accepted == 59 * 24
    again = ingest_synthetic(Lake.open(pg_settings), ["SYN_EAST"], dt.date(2022, 1, 1), dt.date(2022, 3, 1), seed=3)
    assert again[0].skipped
    p = MarketData(Lake.open(pg_settings)).prices("SYN_EAST", "2022-02-01", "2022-02-02")
    assert len(p) == 24 and p["delivery_start"].iloc[0] == pd.Timestamp("2022-02-01", tz="UTC")


def test_unreachable_catalog_is_a_clear_error(tmp_path):
    s = AurumSettings(profile="prod", postgres_url="postgresql+psycopg2://postgres@127.0.0.1:1/none",
                      catalog={"warehouse": (tmp_path / "w").as_uri()})
    with pytest.raises(CatalogUnavailableError, match=r"127\.0\.0\.1:1/none.*unreachable"):
        Lake.open(s)
