"""The ``aurum`` command line: one Typer app, a command per stage.

Commands are thin: build settings, call one library function, print what the next step needs.
Heavy imports happen inside commands so ``aurum --help`` stays fast. The later stages (training,
serving, monitoring) add their commands through the ``aurum.commands`` entry point.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from features.errors import AurumError

app = typer.Typer(
    name="aurum",
    help="Aurum: energy-market forecasting platform. Market data lands in Iceberg (ingest), is read "
    "and inspected (data), and feeds the later stages.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
ingest_app = typer.Typer(help="Load market data into the Iceberg lake: validated, atomic, idempotent.",
                         no_args_is_help=True)
data_app = typer.Typer(help="Read the lake: one market over a window, stats, quarantine.", no_args_is_help=True)
markets_app = typer.Typer(help="The market registry: codes, time zones, auction clocks, provenance.",
                          no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
app.add_typer(data_app, name="data")
features_app = typer.Typer(help="Derived feature tables (Iceberg namespace 'features') that the feature store reads.",
                           no_args_is_help=True)
app.add_typer(markets_app, name="markets")
app.add_typer(features_app, name="features")


def _lake():
    from features.lake import Lake
    from features.settings import AurumSettings

    return Lake.open(AurumSettings())


def _report(reports) -> None:
    for r in reports:
        typer.echo(r.render())


Force = Annotated[bool, typer.Option("--force", help="Ingest again even if this file was already committed.")]


@ingest_app.command("epf")
def ingest_epf(
    market: Annotated[str, typer.Argument(help="Market code of the file: NP, BE or FR.")],
    file: Annotated[Path, typer.Argument(help="EPF benchmark CSV (Date, Price, two exogenous forecasts).")],
    force: Force = False,
) -> None:
    """Ingest a file of the open EPF benchmark (Lago et al. 2021)."""
    from features.ingest import ingest_file

    _report([ingest_file(_lake(), "epf", market, file, force=force)])


@ingest_app.command("entsoe")
def ingest_entsoe(
    zone: Annotated[str, typer.Argument(help="Bidding zone code, such as DE_LU or NL.")],
    file: Annotated[Path, typer.Argument(help="ENTSO-E zone CSV (unnamed timestamp, Price_DA, Load_DA, …).")],
    force: Force = False,
) -> None:
    """Ingest an ENTSO-E transparency-platform zone file."""
    from features.ingest import ingest_file

    _report([ingest_file(_lake(), "entsoe", zone, file, force=force)])


@ingest_app.command("csv")
def ingest_csv(
    file: Annotated[Path, typer.Argument(help="Hourly or 15-minute CSV or Parquet file.")],
    mapping: Annotated[Path, typer.Option("--mapping", "-m", help="Column mapping (TOML or JSON), see docs/ingest.md.")],
    market: Annotated[str | None, typer.Option("--market", help="Market code; default: the mapping's 'market'.")] = None,
    force: Force = False,
) -> None:
    """Ingest any market file through a column mapping."""
    from features.errors import MappingError
    from features.ingest import ingest_file
    from features.sources import SourceMapping

    m = SourceMapping.load(mapping)
    code = market or m.market
    if not code:
        raise MappingError(f"no market: pass --market or set 'market' in {str(mapping)!r}")
    _report([ingest_file(_lake(), "csv", code, file, mapping=m, force=force)])


def _parse_day(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date; expected YYYY-MM-DD", param_hint=option) from None


@ingest_app.command("synthetic")
def ingest_synthetic(
    markets: Annotated[str, typer.Option(help="Comma-separated synthetic markets.")] = "SYN_NORTH,SYN_SOUTH,SYN_EAST",
    start: Annotated[str, typer.Option(help="First local delivery day, YYYY-MM-DD.")] = "2021-01-01",
    end: Annotated[str, typer.Option(help="Day after the last local delivery day, YYYY-MM-DD.")] = "2025-01-01",
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same market.")] = 7,
    shift_start: Annotated[str | None, typer.Option(help="First day of a regime shift (drift), YYYY-MM-DD.")] = None,
    shift_fuel_factor: Annotated[float, typer.Option(help="Fuel price factor of the regime shift.")] = 3.0,
    force: Force = False,
) -> None:
    """Generate and ingest the seeded synthetic market (the default demo data)."""
    from features.ingest import ingest_synthetic as run
    from features.synthetic import RegimeShift

    shift = (RegimeShift(start=_parse_day(shift_start, "--shift-start"), fuel_price_factor=shift_fuel_factor)
             if shift_start else None)
    codes = [c.strip() for c in markets.split(",") if c.strip()]
    _report(run(_lake(), codes, _parse_day(start, "--start"), _parse_day(end, "--end"), seed=seed, shift=shift,
                force=force))


@data_app.command("stats")
def data_stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Rows, covered range, gaps, last ingest and snapshot id per table and market."""
    from features.marketdata import MarketData, stats_json, stats_table

    lake = _lake()
    stats = MarketData(lake).stats()
    typer.echo(stats_json(stats) if as_json else stats_table(stats))
    if not as_json:
        typer.echo(f"catalog: {lake.settings.catalog_properties()['uri']}  namespace: {lake.namespace}")


@data_app.command("show")
def data_show(
    market: Annotated[str, typer.Argument(help="Market code.")],
    from_: Annotated[str | None, typer.Option("--from", help="First delivery start (UTC, ISO 8601), inclusive.")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Last delivery start (UTC, ISO 8601), exclusive.")] = None,
    table: Annotated[str, typer.Option(help="prices, fundamentals or both (side by side).")] = "both",
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
    limit: Annotated[int, typer.Option(help="Print at most this many rows (0: all).")] = 48,
) -> None:
    """Show one market over a time window (filters pushed into the Iceberg scan)."""
    import pandas as pd

    from features.marketdata import MarketData

    md = MarketData(_lake())
    readers = {"prices": md.prices, "fundamentals": md.fundamentals, "both": md.window}
    if table not in readers:
        raise typer.BadParameter(f"{table!r}; expected prices, fundamentals or both", param_hint="--table")
    frame = readers[table](market, from_, to)
    shown = frame.head(limit) if limit else frame
    if csv:
        typer.echo(shown.to_csv(index=False), nl=False)
    else:
        with pd.option_context("display.max_columns", None, "display.width", 250):
            typer.echo(shown.to_string(index=False))
        typer.echo(f"{len(frame):,} rows" + (f" (first {limit} shown)" if limit and len(frame) > limit else ""))


@data_app.command("quarantine")
def data_quarantine(
    market: Annotated[str | None, typer.Option(help="Only this market.")] = None,
    batch: Annotated[str | None, typer.Option(help="Only this batch id.")] = None,
    limit: Annotated[int, typer.Option(help="Print at most this many records (0: all).")] = 20,
) -> None:
    """Rejected rows and values with reason, file, line and batch."""
    import pandas as pd

    from features.marketdata import MarketData

    q = MarketData(_lake()).quarantine(market, batch)
    typer.echo(q.groupby(["market", "reason"]).size().rename("records").to_string() if not q.empty else "no records")
    cols = ["market", "source_line", "column", "reason", "detail", "batch_id"]
    with pd.option_context("display.max_colwidth", 80, "display.width", 250):
        typer.echo((q[cols].head(limit) if limit else q[cols]).to_string(index=False))


@features_app.command("compute")
def features_compute(
    markets: Annotated[str | None, typer.Option(help="Comma-separated markets; default: every market with data.")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="First delivery start (UTC, ISO 8601); default: all.")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Last delivery start (UTC, ISO 8601), exclusive.")] = None,
) -> None:
    """Compute price, exogenous and calendar-ready feature tables; re-runs add only changed versions."""
    from features.featuretables import compute_features
    from features.marketdata import MarketData

    lake = _lake()
    data = MarketData(lake)
    registry = data.registry()
    codes = ([c.strip() for c in markets.split(",") if c.strip()] if markets
             else sorted(set(data.batches()["market"])))
    for code in codes:
        typer.echo(compute_features(lake, registry.get(code), from_, to).render())


@features_app.command("apply")
def features_apply() -> None:
    """Register the feature repo (entities, sources, feature views, services) in the profile's registry."""
    from features import featurestore
    from features.lake import Lake
    from features.marketdata import MarketData
    from features.settings import AurumSettings

    settings = AurumSettings()
    store = featurestore.apply(settings)
    services = sorted(s.name for s in store.list_feature_services())
    typer.echo(f"feature services: {', '.join(services)}")
    markets = MarketData(Lake.open(settings)).registry().codes()
    for service in services:  # lets a forecast service start without importing Feast (features.online)
        featurestore.save_online_plan(settings, featurestore.OnlineFeatures(store, service), markets)


@features_app.command("plan")
def features_plan() -> None:
    """Show what `aurum features apply` would change, without changing it."""
    from features import featurestore
    from features.settings import AurumSettings

    featurestore.plan(AurumSettings())


@features_app.command("materialize")
def features_materialize(
    from_: Annotated[str | None, typer.Option("--from", help="Full load from this time (UTC, ISO 8601); "
                                              "default: incremental since the last run.")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Up to this time (UTC); default: now.")] = None,
) -> None:
    """Load the latest feature rows into the online store (full with --from, else incremental)."""
    from features import featurestore
    from features.marketdata import utc_bound
    from features.settings import AurumSettings

    start, end = utc_bound(from_), utc_bound(to)
    featurestore.materialize(featurestore.open_store(AurumSettings()),
                             start.to_pydatetime() if start is not None else None,
                             end.to_pydatetime() if end is not None else None)


@features_app.command("lookup")
def features_lookup(
    market: Annotated[str, typer.Argument(help="Market code.")],
    day: Annotated[str | None, typer.Option(help="Local delivery day, YYYY-MM-DD; default: the last day with all features.")] = None,
    service: Annotated[str, typer.Option(help="Feature service.")] = "day_ahead_v1",
) -> None:
    """Print the online feature vectors of one market's delivery day (23, 24 or 25 hours)."""
    import pandas as pd

    from features import featurestore
    from features.marketdata import MarketData
    from features.settings import AurumSettings

    settings = AurumSettings()
    lake = _lake()
    m = MarketData(lake).registry().get(market)
    if day is None:
        # The latest day with every feature group: forecasts (exogenous) lag price features by a day.
        lasts = []
        for table in ("features.price_features", "features.exogenous_features"):
            t = lake.scan(table, columns=("market", "delivery_start")).to_pandas()
            lasts.append(t.loc[t["market"] == market, "delivery_start"].max())
        if any(pd.isna(x) for x in lasts):
            raise typer.BadParameter(f"no features for {market!r}; run `aurum features compute`", param_hint="market")
        the_day = min(lasts).tz_convert(m.timezone).date()
    else:
        the_day = _parse_day(day, "--day")
    rows = featurestore.online_day(featurestore.open_store(settings), service, market, the_day, m.timezone,
                                   gate_closure=m.gate_closure)
    with pd.option_context("display.max_columns", None, "display.width", 250):
        typer.echo(f"{market} {the_day} ({len(rows)} delivery hours, service {service}):")
        typer.echo(rows.drop(columns=["market"]).to_string(index=False))
    typer.echo(f"freshness at issue time: oldest feature {rows['feature_age'].max()} old, "
               f"{int(rows['stale'].sum())} of {len(rows)} hours stale, "
               f"{int(rows['missing_features'].sum())} missing values")


@markets_app.command("list")
def markets_list() -> None:
    """Every market the platform knows, with its clock."""
    from features.marketdata import MarketData

    for m in MarketData(_lake()).registry():
        typer.echo(f"{m.code:<10} {m.timezone:<18} {m.currency} gate {m.gate_closure:%H:%M} "
                   f"prices {m.prices_published:%H:%M} forecasts {m.forecasts_issued:%H:%M}  {m.name} ({m.provenance})")


@markets_app.command("add")
def markets_add(
    code: Annotated[str, typer.Argument(help="New market code, upper case (A-Z, 0-9, _).")],
    name: Annotated[str, typer.Option(help="Human name.")],
    timezone: Annotated[str, typer.Option(help="IANA time zone of local delivery time.")],
    country: Annotated[str, typer.Option(help="ISO 3166-1 alpha-2 country (public holidays).")],
    currency: Annotated[str, typer.Option(help="ISO 4217 currency of prices.")] = "EUR",
    gate_closure: Annotated[str, typer.Option(help="Day-ahead gate closure, local HH:MM on D-1.")] = "12:00",
    prices_published: Annotated[str, typer.Option(help="Results public by, local HH:MM on D-1.")] = "13:00",
    forecasts_issued: Annotated[str, typer.Option(help="Day-ahead forecasts public by, local HH:MM on D-1.")] = "10:00",
    provenance: Annotated[str, typer.Option(help="Where the data comes from, and its licence.")] = "user-provided",
) -> None:
    """Register a market of your own, for `aurum ingest csv`."""
    from pydantic import ValidationError

    from features.errors import ConfigurationError
    from features.marketdata import MarketData
    from features.markets import Market

    try:
        m = Market(code=code, name=name, timezone=timezone, country=country, currency=currency,
                   gate_closure=gate_closure, prices_published=prices_published,
                   forecasts_issued=forecasts_issued, provenance=provenance)
    except ValidationError as exc:
        raise ConfigurationError("; ".join(e["msg"] for e in exc.errors())) from exc
    MarketData(_lake()).register_market(m)
    typer.echo(f"registered {m.code} ({m.timezone})")


def _load_stages(app: typer.Typer) -> None:
    """Let the later stages (training, serving, monitoring) add their commands.

    Each declares an ``aurum.commands`` entry point (``pyproject.toml``) naming a ``register(app)``
    function, so this package never imports them: dependencies stay one way.
    """
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group="aurum.commands"), key=lambda e: e.name):
        ep.load()(app)


_load_stages(app)


def main() -> None:
    """Entry point: run the app; domain errors print one line and exit with status 2.

    However the command ends, the objects it leaves are frozen out of the garbage collector
    (``gc.freeze``) on the way out. At exit CPython clears every module and then collects the cycles
    left, walking the whole heap of the libraries imported (MLflow, pandas, pyarrow, Feast): 0.9 s
    of a 5-s ``aurum score`` here (docs/benchmarks.md, batch scoring). Frozen objects are still
    released by reference counting, the exit handlers still run and the standard streams are still
    flushed; only those final cycle collections, whose garbage the process exit reclaims anyway, are
    skipped. Every command has finished its writes (commits, files) before it returns.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except AurumError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    finally:
        gc.freeze()


if __name__ == "__main__":
    main()
