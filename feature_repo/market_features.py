"""Entities, sources, feature views and feature services of the day-ahead price forecasters.

Rows are keyed by market and delivery hour (two entities, one compound key), and their event
timestamp is ``known_at``: when every input of the row was public. A training set asks with the
issue time of each forecast as the entity timestamp, so it gets, per delivery hour, the latest
version known at that time. ``computed_at`` breaks ties between versions with the same
``known_at``.
"""

import os
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, ValueType
from feast.infra.data_sources.contrib.iceberg_catalog.iceberg_source import IcebergSource
from feast.types import Bool, Float64, Int64

from features.transforms import CalendarAdder, ExogenousAdder, ExogenousLagsAdder, PriceLagsAdder

# A day-ahead forecast for day D is issued on D-1; its inputs are at most ~2 days old then.
FRESHNESS = timedelta(days=2)

market = Entity(name="market", join_keys=["market"], value_type=ValueType.STRING,
                description="Bidding zone or market code, such as DE_LU.")
delivery = Entity(name="delivery", join_keys=["delivery_start"], value_type=ValueType.UNIX_TIMESTAMP,
                  description="Start of the delivery period (UTC).")


def _source(table: str) -> IcebergSource:
    return IcebergSource(
        name=f"{table}_source",
        catalog_type=os.environ["AURUM_ICEBERG_TYPE"],
        catalog_name=os.environ["AURUM_ICEBERG_CATALOG"],
        catalog_properties={"uri": os.environ["AURUM_ICEBERG_URI"]},
        warehouse=os.environ["AURUM_ICEBERG_WAREHOUSE"],
        namespace="features",
        table=table,
        timestamp_field="known_at",
        created_timestamp_column="computed_at",
        description=f"Iceberg table features.{table}, versioned by known_at.",
    )


FEAST_TYPES = {"double": Float64, "long": Int64, "boolean": Bool}


def _view(name: str, feature_kinds: dict[str, str], description: str) -> FeatureView:
    return FeatureView(
        name=name,
        entities=[market, delivery],
        ttl=FRESHNESS,
        schema=[Field(name=n, dtype=FEAST_TYPES[kind]) for n, kind in feature_kinds.items()],
        source=_source(name),
        online=True,
        description=description,
    )


price_features = _view("price_features", dict.fromkeys(PriceLagsAdder().feature_names, "double"),
                       "Same-hour price lags and previous-day/rolling statistics known before gate closure on D-1.")
exogenous_features = _view("exogenous_features", dict.fromkeys(ExogenousAdder().feature_names, "double"),
                           "Day-ahead load, wind, solar, generation and fuel forecasts of the delivery hour; residual load.")
exogenous_lag_features = _view("exogenous_lag_features",
                               dict.fromkeys(ExogenousLagsAdder().feature_names, "double"),
                               "Day-ahead load, wind, solar and generation forecasts of the same hour on D-1 and D-7.")
calendar_features = _view("calendar_features", CalendarAdder.feature_kinds,
                          "Local hour, weekday, month, cyclic hour and day of year, weekend, public holiday.")

day_ahead_v1 = FeatureService(
    name="day_ahead_v1",
    features=[price_features, exogenous_features, exogenous_lag_features, calendar_features],
    description="Features of the day-ahead price forecasters, version 1 (recorded with every MLflow run).",
)
