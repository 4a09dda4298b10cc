"""Forecast quality of archived forecasts against the prices published later: the performance engine.

Inputs are rows of the forecast archive (``serving.forecasts``, :mod:`monitoring.forecastlog`) and the
market's prices (``market.prices``) with their ``published_at``. The rules, in order:

1. **What counts.** What-if rows (``scenario`` set or ``source`` = ``scenario``) never count: their
   inputs were changed on purpose. The champion's performance is that of the rows of the champion's
   version that were served (``shadow`` false). Shadow rows and challenger rows (computed beside the
   served forecast, the point of shadow mode) are judged separately, one group per model version, and
   compared with the champion on the hours both forecast. Rows of earlier champion versions are
   counted, not judged.
2. **One forecast per model version and delivery hour.** A service answers the same hour several
   times (clients ask again; a batch job backfills), so duplicates of (model name, version, delivery
   start) are reduced to one: **the latest issued** (``issued_at``, the knowledge cut-off), because
   that is the most informed forecast available by gate closure, the one a trader would have bid on;
   among equal issue times (a batch row and API answers after gate closure are all capped at gate
   closure) **the first served**, which is what clients received first. Rows issued after gate
   closure on D-1 are not day-ahead forecasts and are dropped (counted). The choice does not depend
   on how often a client asked.
3. **Actuals.** An hour is judged once its price is published (``published_at`` at or before the
   check's ``as_of``); a forecast hour without a published price is ``pending`` (counted).
4. **Metrics** (``models.metrics``, as the backtest computes them): MAE, RMSE, sMAPE, rMAE (weekly naive
   denominator: the price of the same local hour a week earlier, ``models.naive.weekly_lag``, which
   interpolates the spring-DST hour), pinball loss per archived quantile level, coverage of the 80 %
   interval (q10..q90). Overall, per local hour of delivery, and per lead time (``delivery_start -
   issued_at``, in bins of ``LEAD_BIN_HOURS`` hours: a batch forecast issued at gate closure has lead
   times of 12-35 hours; an API forecast asked a day earlier, longer ones).
5. **Against the expectation** (:mod:`monitoring.expectation`): ``error_ratio`` = live MAE / backtest
   MAE (the ``error_ratio`` rule), ``rmae_ratio``, ``pinball_ratio_qNN``, ``coverage_gap`` = live
   coverage - backtest coverage, and per local hour the MAE ratio.

Invariants: every judged hour has exactly one forecast per group and a published price; scenario rows
never enter a metric; the champion's numbers come from the champion's version alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.errors import MonitoringDataError
from features.markets import Market
from features.transforms.localtime import local_day_and_hour
from models import metrics as m
from models.forecaster import quantile_column
from models.naive import WeeklyNaive, weekly_lag
from monitoring.expectation import Expectation

LEAD_BIN_HOURS = 6
NOMINAL = 0.8  # the interval the coverage rule judges (q10..q90)
COVERAGE = f"coverage_{NOMINAL:g}"


# ---------------------------------------------------------------- selection


@dataclass
class Selection:
    """Which archived rows of a window count, and why the others do not."""

    rows_read: int
    scenario_rows: int
    issued_after_gate_closure: int
    champion: pd.DataFrame = field(repr=False)  # deduplicated rows of the champion's version, served
    challengers: dict[tuple[str, str, str], pd.DataFrame] = field(repr=False)  # (name, version, alias) -> rows
    champion_duplicates: int = 0
    challenger_duplicates: int = 0
    earlier_champions: dict[str, int] = field(default_factory=dict)  # "name vV" -> served rows (not judged)

    def counts(self) -> dict[str, object]:
        return {"rows_read": self.rows_read, "scenario_rows": self.scenario_rows,
                "issued_after_gate_closure": self.issued_after_gate_closure,
                "champion_rows": len(self.champion), "champion_duplicates_dropped": self.champion_duplicates,
                "shadow_or_challenger_rows": int(sum(len(r) for r in self.challengers.values())),
                "shadow_or_challenger_duplicates_dropped": self.challenger_duplicates,
                "earlier_champion_rows": self.earlier_champions}


def deduplicate(rows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per (model name, version, delivery start): the latest issued, then the first served.

    Ties beyond that (the same issue and serving time) fall to the source, tenant and request id, so
    the choice is deterministic. Returns the rows (sorted by delivery start) and how many were dropped.
    """
    if rows.empty:
        return rows, 0
    order = rows.assign(_neg_issued=-rows["issued_at"].astype("int64")).sort_values(
        ["model_name", "model_version", "delivery_start", "_neg_issued", "served_at", "source", "tenant",
         "request_id"], kind="stable")
    kept = order.drop_duplicates(["model_name", "model_version", "delivery_start"], keep="first")
    kept = kept.drop(columns="_neg_issued").sort_values("delivery_start", kind="stable").reset_index(drop=True)
    return kept, len(rows) - len(kept)


def select(rows: pd.DataFrame, market: Market, model_name: str, version: str) -> Selection:
    """Split a window's archive rows into the champion's, each shadow/challenger version's and the rest."""
    scenario = rows["scenario"].notna() | (rows["source"] == "scenario")
    gate = market.on_day_before(rows["delivery_start"], market.gate_closure)
    late = ~scenario & (rows["issued_at"] > gate).to_numpy()
    base = rows[~scenario & ~late]
    shadow = base["shadow"].astype(bool)
    mine = (base["model_name"] == model_name) & (base["model_version"] == version) & ~shadow
    champion, dropped = deduplicate(base[mine])
    others = base[~mine & (shadow | (base["model_alias"] != "champion"))]
    earlier = base[~mine & ~shadow & (base["model_alias"] == "champion")]
    challengers, other_dropped = {}, 0
    for key, group in others.groupby(["model_name", "model_version", "model_alias"], sort=True):
        challengers[tuple(map(str, key))], n = deduplicate(group)
        other_dropped += n
    earlier_counts = {f"{n} v{v}": int(c) for (n, v), c in earlier.groupby(["model_name", "model_version"]).size().items()}
    return Selection(len(rows), int(scenario.sum()), int(late.sum()), champion, challengers, dropped, other_dropped,
                     earlier_counts)


# ---------------------------------------------------------------- actuals and the naive denominator


def judged_frame(forecasts: pd.DataFrame, prices: pd.DataFrame, market: Market, as_of: pd.Timestamp
                 ) -> tuple[pd.DataFrame, int]:
    """Forecast rows joined with their published price, with every column the metrics need.

    ``prices``: the market's rows with ``delivery_start``, ``price``, ``published_at`` covering the
    forecast hours and the week before them (for the weekly naive forecast). Returns the joined rows
    (columns ``delivery_start``, ``day``, ``hour``, ``lead_hours``, ``lead_bin``, ``actual``, ``naive``,
    one ``qNN`` column per archived level, ``forecast``, ``quality``) and the number of pending hours
    (no price published by ``as_of``).
    """
    published = prices[pd.to_datetime(prices["published_at"], utc=True) <= as_of]
    actual = published.set_index("delivery_start")["price"]
    f = forecasts.copy()
    f["actual"] = actual.reindex(f["delivery_start"]).to_numpy()
    pending = int(f["actual"].isna().sum())
    f = f[f["actual"].notna()].reset_index(drop=True)
    day, hour = local_day_and_hour(f["delivery_start"], market.timezone)
    f["day"], f["hour"] = day.to_numpy(), hour.to_numpy()
    lead = (f["delivery_start"] - f["issued_at"]) / pd.Timedelta(hours=1)
    f["lead_hours"] = lead.to_numpy()
    f["lead_bin"] = (np.floor(lead.to_numpy() / LEAD_BIN_HOURS) * LEAD_BIN_HOURS).astype(np.int64)
    f["naive"] = naive_forecast(f[["delivery_start", "day", "hour"]], prices, market)
    quantiles = quantile_columns(f)
    return pd.concat([f, quantiles], axis=1), pending


def naive_forecast(hours: pd.DataFrame, prices: pd.DataFrame, market: Market) -> np.ndarray:
    """The weekly naive forecast of each hour (``day``, ``hour`` local): the price of the same local hour
    seven days earlier; a spring-DST hour that did not exist then is interpolated within its day
    (``models.naive.weekly_lag``, as the backtest's rMAE does). Prices a week old are long published."""
    if hours.empty:
        return np.array([], dtype=float)
    pday, phour = local_day_and_hour(pd.to_datetime(prices["delivery_start"], utc=True), market.timezone)
    by_hour = pd.Series(prices["price"].to_numpy(), index=pd.MultiIndex.from_arrays([pday, phour]))
    by_hour = by_hour[~by_hour.index.duplicated(keep="first")]  # autumn: the first repeated hour, as the feature
    src = pd.MultiIndex.from_arrays([hours["day"] - pd.Timedelta(days=7), hours["hour"]])
    frame = pd.DataFrame({"market": market.code, "delivery_start": hours["delivery_start"].to_numpy(),
                          "hour": hours["hour"].to_numpy(), WeeklyNaive.column: by_hour.reindex(src).to_numpy()})
    return weekly_lag(frame)


def quantile_columns(rows: pd.DataFrame) -> pd.DataFrame:
    """One column ``qNN`` per quantile level found in ``levels`` (NaN where a row lacks that level), and
    ``q50`` from ``forecast`` (always present: the archived median)."""
    values: dict[float, np.ndarray] = {}
    for i, (levels, vals) in enumerate(zip(rows["levels"], rows["values"])):
        for q, v in zip(levels, vals):
            values.setdefault(float(q), np.full(len(rows), np.nan))[i] = v
    out = pd.DataFrame({quantile_column(q): values[q] for q in sorted(values)}, index=rows.index)
    out[quantile_column(0.5)] = rows["forecast"].to_numpy(dtype=float)
    return out[sorted(out.columns, key=m.quantile_level)]


# ---------------------------------------------------------------- metrics


@dataclass
class GroupPerformance:
    """The performance of one model version's forecasts over the judged hours of a window."""

    model_name: str
    model_version: str
    alias: str
    shadow: bool
    rows: pd.DataFrame = field(repr=False)  # judged rows (see judged_frame)
    pending_hours: int
    duplicates_dropped: int

    @property
    def quantiles(self) -> list[str]:
        return sorted((c for c in self.rows.columns if c.startswith("q") and c[1:].replace(".", "").isdigit()),
                      key=m.quantile_level)

    @property
    def hours(self) -> int:
        return len(self.rows)

    @property
    def days(self) -> int:
        return int(self.rows["day"].nunique()) if len(self.rows) else 0

    def _score(self, key: str | None) -> pd.DataFrame:
        r = self.rows
        return m.score(r["actual"], r[self.quantiles], naive=r["naive"], hour=None if key is None else r[key])

    def overall(self) -> dict[str, float]:
        s = self._score(None)
        return dict(zip(s["metric"], s["value"].astype(float)))

    def by(self, key: str) -> pd.DataFrame:
        """Metrics per value of ``key`` (``hour`` or ``lead_bin``): columns ``key``, one column per metric."""
        s = self._score(key)
        s = s[s["hour"] != "all"]
        wide = s.pivot(index="hour", columns="metric", values="value").rename_axis(index=key, columns=None)
        wide.index = wide.index.astype(int)
        wide.insert(0, "hours", self.rows.groupby(key).size().reindex(wide.index).to_numpy())
        return wide.reset_index()

    def per_row(self) -> pd.DataFrame:
        """Per judged hour: absolute error, whether the 80 % interval covered the price, the pinball loss of
        each level (their means are the overall metrics: what the Evidently report averages)."""
        r = self.rows
        out = pd.DataFrame({"actual": r["actual"].to_numpy(), "forecast": r["q50"].to_numpy(),
                            "hour": r["hour"].to_numpy(), "lead_bin": r["lead_bin"].to_numpy()})
        out["abs_error"] = (out["actual"] - out["forecast"]).abs()
        lo, hi = quantile_column((1 - NOMINAL) / 2), quantile_column((1 + NOMINAL) / 2)
        if lo in r.columns and hi in r.columns:
            inside = (r["actual"] >= r[lo]) & (r["actual"] <= r[hi])
            out[COVERAGE] = inside.astype(float).where(r[lo].notna() & r[hi].notna()).to_numpy()
        for q in self.quantiles:
            d = (r["actual"] - r[q]).to_numpy()
            level = m.quantile_level(q)
            out[f"pinball_{q}"] = np.maximum(level * d, (level - 1) * d)
        return out


@dataclass
class PerformanceAssessment:
    """The champion's performance over a window against its backtest, and its challengers'."""

    champion: GroupPerformance
    expectation: Expectation
    challengers: list[GroupPerformance]
    selection: Selection
    window_days: int
    as_of: pd.Timestamp

    def ratios(self) -> dict[str, float]:
        """Live over backtest: ``error_ratio`` (MAE), ``rmae_ratio``, ``pinball_ratio_qNN``; ``coverage_gap``."""
        live, exp = self.champion.overall(), self.expectation.metrics
        out = {"error_ratio": _ratio(live.get("mae"), exp.get("mae")),
               "rmae_ratio": _ratio(live.get("rmae"), exp.get("rmae"))}
        for k, v in live.items():
            if k.startswith("pinball_"):
                out[f"pinball_ratio_{k[len('pinball_'):]}"] = _ratio(v, exp.get(k))
        if COVERAGE in live and COVERAGE in exp:
            out["coverage_gap"] = live[COVERAGE] - exp[COVERAGE]
        return out

    def hourly_ratios(self) -> dict[int, float]:
        """Live MAE per local hour over the backtest's MAE of that hour."""
        expected = self.expectation.hourly("mae")
        live = self.champion.by("hour").set_index("hour")["mae"]
        return {int(h): _ratio(v, expected.get(int(h))) for h, v in live.items()}

    def versus_champion(self, group: GroupPerformance) -> dict[str, float]:
        """A challenger's MAE over the champion's on the hours both forecast."""
        both = group.rows.merge(self.champion.rows[["delivery_start", "q50"]], on="delivery_start",
                                suffixes=("", "_champion"))
        if both.empty:
            return {"common_hours": 0.0, "mae_vs_champion": math.nan}
        return {"common_hours": float(len(both)),
                "mae_vs_champion": _ratio(m.mae(both["actual"], both["q50"]), m.mae(both["actual"], both["q50_champion"]))}

    def metrics(self) -> dict[str, float]:
        """Every number of the assessment by metric name (what rules, the table and MLflow receive)."""
        c = self.champion
        out = {**c.overall(), **self.ratios()}
        out |= {f"expected.{k}": v for k, v in self.expectation.metrics.items()}
        out |= {"hours": float(c.hours), "days": float(c.days), "window_days": float(self.window_days),
                "pending_hours": float(c.pending_hours), "duplicates_dropped": float(c.duplicates_dropped),
                "scenario_rows": float(self.selection.scenario_rows),
                "issued_after_gate_closure": float(self.selection.issued_after_gate_closure),
                "degraded_share": float((c.rows["quality"] == "degraded").mean()) if c.hours else math.nan}
        by_hour = c.by("hour").set_index("hour")
        out |= {f"mae.hour_{h:02d}": float(v) for h, v in by_hour["mae"].items()}
        out |= {f"error_ratio.hour_{h:02d}": v for h, v in self.hourly_ratios().items()}
        by_lead = c.by("lead_bin").set_index("lead_bin")
        for column in [k for k in ("mae", COVERAGE) if k in by_lead.columns]:
            out |= {f"{column}.lead_{h}h": float(v) for h, v in by_lead[column].items()}
        for g in self.challengers:
            prefix = f"challenger.v{g.model_version}"
            live = g.overall()
            out |= {f"{prefix}.{k}": live[k] for k in ("mae", "rmae", COVERAGE) if k in live}
            out |= {f"{prefix}.hours": float(g.hours), **{f"{prefix}.{k}": v for k, v in self.versus_champion(g).items()}}
        return out


def _ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b == 0:
        return math.nan
    return float(a / b)


def assess(rows: pd.DataFrame, prices: pd.DataFrame, market: Market, model_name: str, version: str,
           expectation: Expectation, *, window_days: int, as_of: pd.Timestamp, where: str,
           days: tuple[object, object] | None = None) -> PerformanceAssessment:
    """The performance of a window's archived forecasts (see the module docstring).

    ``rows``: the archive rows of the window; ``prices``: the market's prices from a week before the
    window to its end; ``where``: the market and window, for messages; ``days``: its first and last local
    day, for the hint of how to fill the archive.

    Raises:
        MonitoringDataError: the champion's version has no forecast in the window (the message lists what
            the archive holds), or none of its hours has a published price yet.
    """
    from monitoring.forecastlog import versions_present

    selection = select(rows, market, model_name, version)
    if selection.champion.empty:
        held = versions_present(rows)
        have = (", ".join(f"{k}: {v} rows" for k, v in held.items()) if held else "no forecast at all")
        raise MonitoringDataError(
            f"{where}: the archive holds no served forecast of {model_name} version {version} (the champion); it "
            f"has {have}; score the window with the champion first (aurum score --market {market.code} --from "
            f"{days[0] if days else '…'} --to {days[1] if days else '…'}) or choose a window it served")
    champion_rows, pending = judged_frame(selection.champion, prices, market, as_of)
    if champion_rows.empty:
        published = prices[pd.to_datetime(prices["published_at"], utc=True) <= as_of]
        last = published["delivery_start"].max() if len(published) else None
        raise MonitoringDataError(
            f"{where}: none of the {pending} forecast hours of {model_name} version {version} has a price published "
            f"by {as_of.isoformat()}; " + (f"the latest published price is for {last.isoformat()}" if last is not None
                                           else "no price of the window's weeks is published")
            + "; wait for the auction results or choose an earlier --end")
    champion = GroupPerformance(model_name, version, "champion", False, champion_rows, pending,
                                selection.champion_duplicates)
    challengers = []
    for (name, ver, alias), group in selection.challengers.items():
        judged, waiting = judged_frame(group, prices, market, as_of)
        if len(judged):
            challengers.append(GroupPerformance(name, ver, alias, bool(group["shadow"].any()), judged, waiting, 0))
    return PerformanceAssessment(champion, expectation, challengers, selection, window_days, as_of)
