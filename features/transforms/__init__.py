"""Pure feature transforms: market data in, one feature row per (market, delivery_start) out.

Every transform returns a frame with ``market``, ``delivery_start`` (UTC), its feature columns
and ``known_at``: the instant from which every value of the row was public. A forecast issued at
time T may use a row only when ``known_at <= T``; the feature store enforces this by using
``known_at`` as the event timestamp.
"""

from features.transforms.calendar import CalendarAdder
from features.transforms.exogenous import ExogenousAdder, ExogenousLagsAdder
from features.transforms.price_lags import PriceLagsAdder

__all__ = ["CalendarAdder", "ExogenousAdder", "ExogenousLagsAdder", "PriceLagsAdder"]
