"""Column roles of a drift check, from the champion's feature service (never a hand-kept list).

Every feature of the service (``featurestore.service_features``) that the champion reads gets one role:

- ``calendar``: features of the feature view computed from the calendar (the feature group whose
  source is ``calendar`` in ``features.featuretables.GROUPS``: hour, weekday, month, holidays, cyclic
  encodings). They describe *when* a row is, which the seasonal matching already holds equal, so they
  are not tested for drift;
- ``categorical``: integer or boolean features;
- ``numerical``: every other feature.

A feature missing in every reference row (solar in a market without solar forecasts) cannot be
compared and is listed as ``unmonitored``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from features import featurestore
from features.featuretables import GROUPS
from monitoring.drift import CATEGORICAL, NUMERICAL


@dataclass(frozen=True)
class ColumnRoles:
    service: str
    numerical: tuple[str, ...]
    categorical: tuple[str, ...]
    calendar: tuple[str, ...]
    unmonitored: tuple[str, ...]

    @property
    def monitored(self) -> dict[str, str]:
        """Monitored feature -> ``numerical`` or ``categorical``, in the service's order."""
        return {**{c: NUMERICAL for c in self.numerical}, **{c: CATEGORICAL for c in self.categorical}}

    @property
    def features(self) -> list[str]:
        return [*self.numerical, *self.categorical, *self.calendar, *self.unmonitored]

    def as_dict(self) -> dict[str, object]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> ColumnRoles:
        return cls(str(d["service"]), *(tuple(d[k]) for k in ("numerical", "categorical", "calendar", "unmonitored")))

    @classmethod
    def of_service(cls, store, service: str, reference: pd.DataFrame, inputs: list[str] | None = None) -> ColumnRoles:
        """Roles of the service's features (those in ``inputs`` when given: what the model reads) from
        their feature view and their dtype in ``reference`` (a frame the service returned)."""
        calendar_views = {g.table for g in GROUPS if g.source == "calendar"}
        numerical, categorical, calendar, unmonitored = [], [], [], []
        for ref in featurestore.service_features(store, service):
            view, name = ref.split(":", 1)
            if inputs is not None and name not in inputs:
                continue
            column = reference[name]
            if view in calendar_views:
                calendar.append(name)
            elif column.isna().all():
                unmonitored.append(name)
            elif pd.api.types.is_bool_dtype(column) or pd.api.types.is_integer_dtype(column):
                categorical.append(name)
            else:
                numerical.append(name)
        return cls(service, tuple(numerical), tuple(categorical), tuple(calendar), tuple(unmonitored))
