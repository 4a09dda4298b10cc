"""Price features known at forecast time: same-hour lags, previous-day and rolling statistics.

The day-ahead rule: a forecast for local delivery day D is issued before gate closure on D-1,
when the prices of every day up to D-1 are public (they were auctioned on D-2). So the features
of day D use prices of days D-1 and earlier only, and a row's ``known_at`` is the latest
``published_at`` of the prices it used, which is before gate closure on D-1.

Lags are on the local calendar: ``price_lag_P7D`` of hour h on day D is the price of hour h
(wall clock) on day D-7. Where that hour did not exist (the skipped spring hour) the lag is
missing; on an autumn day the first of the two repeated hours is used.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.markets import Market
from features.transforms.localtime import days_back, delivery_hours, local_day_and_hour

LAG_DAYS: tuple[int, ...] = (1, 2, 3, 7)
ROLLING_DAYS = 7


class PriceLagsAdder:
    """Builds the price features of every delivery hour of the days after those with prices.

    Output columns: ``price_lag_P{k}D`` for k in ``LAG_DAYS``, ``price_prev_day_min``,
    ``price_prev_day_max``, ``price_prev_day_mean``, ``price_rolling_mean_P7D``,
    ``price_rolling_std_P7D`` (over all hours of days D-7 … D-1), and ``known_at``.
    """

    lag_days = LAG_DAYS
    rolling_days = ROLLING_DAYS

    @property
    def feature_names(self) -> list[str]:
        return [f"price_lag_P{k}D" for k in self.lag_days] + [
            "price_prev_day_min", "price_prev_day_max", "price_prev_day_mean",
            f"price_rolling_mean_P{self.rolling_days}D", f"price_rolling_std_P{self.rolling_days}D",
        ]

    def transform(self, prices: pd.DataFrame, market: Market) -> pd.DataFrame:
        """``prices``: one market's rows with ``delivery_start``, ``price``, ``published_at``."""
        if prices.empty:
            return pd.DataFrame(columns=["market", "delivery_start", *self.feature_names, "known_at"])
        p = prices[["delivery_start", "price", "published_at"]].sort_values("delivery_start")
        day, hour = local_day_and_hour(p["delivery_start"], market.timezone)
        p = p.assign(day=day.to_numpy(), hour=hour.to_numpy())
        by_hour = p.drop_duplicates(["day", "hour"], keep="first").set_index(["day", "hour"])["price"]
        daily = p.groupby("day").agg(
            day_min=("price", "min"), day_max=("price", "max"), day_mean=("price", "mean"),
            day_sum=("price", "sum"), day_sq=("price", lambda s: float(np.square(s).sum())),
            day_n=("price", "size"), published=("published_at", "max"),
        )
        one_day = pd.Timedelta(days=1)
        out = delivery_hours(daily.index + one_day, market.timezone)
        for k in self.lag_days:
            out[f"price_lag_P{k}D"] = days_back(by_hour, out, k)
        prev = daily.reindex(out["day"] - one_day)
        out["price_prev_day_min"] = prev["day_min"].to_numpy()
        out["price_prev_day_max"] = prev["day_max"].to_numpy()
        out["price_prev_day_mean"] = prev["day_mean"].to_numpy()

        # Rolling statistics over the hours of the last `rolling_days` local days, from daily sums.
        full = pd.date_range(daily.index.min(), daily.index.max(), freq="D")
        sums = daily.reindex(full)[["day_sum", "day_sq", "day_n"]].fillna(0.0)
        window = sums.rolling(self.rolling_days, min_periods=1).sum()
        n = window["day_n"]
        mean = window["day_sum"] / n
        var = (window["day_sq"] - n * mean**2) / (n - 1)
        roll = pd.DataFrame({"mean": mean, "std": np.sqrt(var.clip(lower=0))}, index=full)
        r = roll.reindex(out["day"] - one_day)
        out[f"price_rolling_mean_P{self.rolling_days}D"] = r["mean"].to_numpy()
        out[f"price_rolling_std_P{self.rolling_days}D"] = r["std"].to_numpy()

        # Every value of day D comes from days <= D-1, all public once D-1's prices were published.
        out["known_at"] = pd.to_datetime(prev["published"].to_numpy(), utc=True).astype("datetime64[us, UTC]")
        out.insert(0, "market", market.code)
        return out.drop(columns=["day", "hour"]).reset_index(drop=True)
