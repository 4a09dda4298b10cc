"""The forecast service over HTTP: BentoML 1.4 (``bentoml serve serving.service:ForecastService``).

This is the only module that imports BentoML. The work itself is in ``serving.runtime``; this module
adds the HTTP contract: typed requests (``serving.api``), API keys, request limits, errors as 4xx with
the field and what was expected, Prometheus metrics, readiness, and the registry reload loop.

Endpoints: ``POST /v1/forecast``, ``/v1/forecast/batch``, ``/v1/scenarios``, ``/v1/scenarios/saved``,
``/v1/admin/reload``, ``/v1/noop`` (the benchmark's reference), ``GET /v1/models``; BentoML's own
``/healthz``, ``/livez``, ``/readyz`` (ready only with every served market's champion loaded) and
``/metrics``. Keys (``Authorization: Bearer …`` or ``X-API-Key``) are never logged.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import logging
import os
import threading
import time
import uuid
from concurrent.futures import as_completed
from pathlib import Path

import bentoml
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from features.errors import (AccessDeniedError, AurumError, ForecastRequestError, ForecastUnavailableError,
                             OnlineStoreUnavailableError, QuantileError, ScenarioError, ScenarioNotFoundError,
                             UnknownMarketError)
from features.gctuning import batch_gc
from features.settings import AurumSettings
from serving import api

# Heavy imports (Feast, MLflow, the models) happen in ``ForecastService.__init__``, which runs only in the
# worker process: BentoML's supervisor imports this module too, and a light module halves the cold start.

log = logging.getLogger("aurum.serving")
BUNDLE_ENV = "AURUM_SERVING_BUNDLE"  # names a folder of bundled champions (a Bento finds its own bundle/)

REQUEST_SECONDS = bentoml.metrics.Histogram(
    name="aurum_request_seconds", documentation="Forecast API latency by endpoint and serving model version.",
    labelnames=["endpoint", "model_version"],
    buckets=(0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
REQUESTS = bentoml.metrics.Counter(name="aurum_requests_total", documentation="Forecast API requests by endpoint and status.",
                                   labelnames=["endpoint", "status"])
FEATURE_AGE = bentoml.metrics.Gauge(name="aurum_feature_age_seconds",
                                    documentation="Age of the oldest feature of the last forecast, per market.",
                                    labelnames=["market"], multiprocess_mode="mostrecent")
MODEL_VERSION = bentoml.metrics.Gauge(name="aurum_model_version", documentation="Registered version serving each market.",
                                      labelnames=["market", "alias"], multiprocess_mode="mostrecent")
REGISTRY_OK = bentoml.metrics.Gauge(name="aurum_registry_ok", multiprocess_mode="mostrecent",
                                    documentation="1 when the last registry check of the market succeeded, 0 when the last good model is kept.",
                                    labelnames=["market"])
DEGRADED = bentoml.metrics.Counter(name="aurum_degraded_forecasts_total", labelnames=["market", "reason"],
                                   documentation="Forecasts answered by the baseline, by reason: stale_features "
                                                 "(stale or missing), online_store_unavailable (no answer).")


class ApiError(Exception):
    """An error response: HTTP status, message, and the request field it is about."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field

    def response(self) -> JSONResponse:
        body = {"error": self.message}
        if self.field:
            body["field"] = self.field
        return JSONResponse(body, status_code=self.status)


def _process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``; None elsewhere)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 3)


def _api_error(exc: Exception) -> ApiError:
    """The HTTP status of a domain error (never a 5xx for something the caller sent)."""
    field = getattr(exc, "field", None) or getattr(exc, "column", None)
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, AccessDeniedError):
        return ApiError(403, str(exc), field)
    if isinstance(exc, (UnknownMarketError, ScenarioNotFoundError)):
        return ApiError(404, str(exc), field or ("market" if isinstance(exc, UnknownMarketError) else "saved"))
    if isinstance(exc, ForecastUnavailableError):
        return ApiError(404, str(exc), field)
    if isinstance(exc, OnlineStoreUnavailableError):  # ours, not the caller's, and passing: try again later
        return ApiError(503, str(exc), field)
    if isinstance(exc, (ForecastRequestError, QuantileError, ScenarioError)):
        return ApiError(422, str(exc), field or ("quantiles" if isinstance(exc, QuantileError) else None))
    if isinstance(exc, ValidationError):  # a scenario definition the domain model refuses
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return ApiError(422, f"{where or 'request'}: {first.get('msg', str(exc))}", where or None)
    if isinstance(exc, (ValueError, AurumError)):
        return ApiError(422, str(exc), field)
    raise exc


class BodyLimit:
    """ASGI middleware: a request body over the limit is a 413 before anything reads it."""

    def __init__(self, app, limit: int | None = None):
        self.app, self.limit = app, limit or AurumSettings().serving.max_request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await _too_large(send, self.limit)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ApiError(413, f"request body exceeds {self.limit} bytes")
            return message

        try:
            return await self.app(scope, counted, send)
        except ApiError:
            return await _too_large(send, self.limit)


async def _too_large(send, limit: int) -> None:
    body = json.dumps({"error": f"request body exceeds the limit of {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _models_view(request: Request) -> Response:
    service = bentoml.get_current_service()
    return JSONResponse(service.models_report())


models_app = Starlette(routes=[Route("/models", _models_view, methods=["GET"])])


# traffic timeout: BentoML's TimeoutMiddleware keeps a timer (and the request's tracing span) alive for this
# long after every request, answered or not; 60 s at ~800 req/s held ~48,000 spans (~4.8 KB each) in a worker.
# The slowest legitimate call (64 batch items or 32 what-if forecasts, all cache misses) takes ~2 s.
@bentoml.service(name="aurum-forecast", traffic={"timeout": 15},
                 workers=int(os.environ.get("AURUM_SERVING__WORKERS", "1")),  # `aurum serve --workers`
                 description="Day-ahead price forecasts of the approved champion per market, with scenarios.")
@bentoml.asgi_app(models_app, path="/v1")  # GET /v1/models; the POST routes of /v1 stay with the service
class ForecastService:
    """Loads every served market's champion and answers forecast requests (see the module docstring)."""

    def __init__(self) -> None:
        # The start-up allocates what lives as long as the process (Feast, MLflow, the models): collected
        # at the batch pace while it runs (features.gctuning), then frozen out of the collector.
        with batch_gc():
            self._start()

    def _start(self) -> None:
        began, before = time.perf_counter(), _process_age()
        self.settings = AurumSettings()
        from serving.runtime import ForecastRuntime

        imported = time.perf_counter()
        self.runtime = ForecastRuntime.open(self.settings, bundle=bundled_champions(), archive_process=True)
        self.key_store = self.scenario_store = None
        if self.settings.serving.auth:
            from serving.keys import KeyStore
            from serving.scenarios import ScenarioStore

            self.key_store = KeyStore.open(self.settings)
            self.scenario_store = ScenarioStore.open(self.settings)
        self._publish_models()
        # Everything loaded so far (Feast, MLflow, the models) lives as long as the process: moving it out of
        # the collector's generations keeps full collections from pausing requests for tens of milliseconds.
        gc.collect()
        gc.freeze()
        # The cold start's breakdown in seconds (``GET /v1/models``): the worker process up to this class
        # (interpreter, BentoML, this module), the heavy imports, each phase of ForecastRuntime.open, the rest.
        self.startup = {"worker_before_init": before, "imports": round(imported - began, 3), **self.runtime.startup,
                        "init_total": round(time.perf_counter() - began, 3)}
        self._stop = threading.Event()
        self._reloader = threading.Thread(target=self._reload_loop, name="champion-reload", daemon=True)
        self._reloader.start()
        log.info("serving %s", ", ".join(f"{m} v{self.runtime.book.champion(m).version}"
                                          for m in self.runtime.book.markets if self.runtime.book.champion(m)))

    # ------------------------------------------------------------ lifecycle

    def __is_ready__(self) -> bool:
        return self.runtime.ready()[0]

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self._stop.set()
        self.runtime.close()

    def _reload_loop(self) -> None:
        while not self._stop.wait(self.settings.serving.reload_interval_s):
            self.reload()

    def reload(self, markets: list[str] | None = None) -> dict[str, str]:
        outcome = self.runtime.book.refresh(markets)
        self.runtime.refresh_snapshots()
        self._publish_models()
        return outcome

    def _publish_models(self) -> None:
        for m, s in self.runtime.book.states.items():
            REGISTRY_OK.labels(market=m).set(1 if s.registry_ok else 0)
            for alias in ("champion", "challenger"):
                model = getattr(s, alias)
                if model is not None:
                    MODEL_VERSION.labels(market=m, alias=alias).set(float(model.version) if model.version.isdigit() else -1)

    def models_report(self) -> dict:
        ready, why = self.runtime.ready()
        return {"ready": ready, "reason": why, "markets": self.runtime.book.status(), "startup_seconds": self.startup,
                "feature_snapshots": self.runtime.snapshots,
                "limits": {k: getattr(self.settings.serving, k) for k in
                           ("max_days_ahead", "max_days_back", "max_batch_items", "max_scenarios", "max_request_bytes")}}

    # ------------------------------------------------------------ access

    def _principal(self, ctx: bentoml.Context, markets: list[str] = (), admin: bool = False):
        if self.key_store is None:
            from serving.keys import Principal

            return Principal(tenant="local", markets=("*",), admin=True, key_id="-")
        from serving.keys import bearer_token

        headers = ctx.request.headers
        principal = self.key_store.verify(bearer_token(headers.get("authorization"), headers.get("x-api-key")))
        if principal is None:
            raise ApiError(401, "missing or invalid API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        if admin and not principal.admin:
            raise ApiError(403, "this endpoint needs an admin key")
        for m in markets:
            if not principal.may_read(m):
                raise ApiError(403, f"the key of tenant {principal.tenant!r} may not read market {m!r}", "market")
        return principal

    def _respond(self, ctx: bentoml.Context, endpoint: str, work, version_of=lambda body: "-") -> Response:
        """Run ``work`` (returning a JSON-ready body, or one rendered already as bytes); map errors to statuses;
        record metrics."""
        start = time.perf_counter()
        try:
            body = work()
            status = 200
            response = Response(body, media_type="application/json") if isinstance(body, bytes) else JSONResponse(body)
            version = version_of(body)
        except Exception as exc:  # mapped below; anything unknown is re-raised by _api_error (a real 5xx)
            try:
                err = _api_error(exc)
            except Exception:
                REQUESTS.labels(endpoint=endpoint, status="500").inc()
                raise
            status, response, version = err.status, err.response(), "-"
        REQUEST_SECONDS.labels(endpoint=endpoint, model_version=version).observe(time.perf_counter() - start)
        REQUESTS.labels(endpoint=endpoint, status=str(status)).inc()
        ctx.response.status_code = status  # BentoML applies the context's status to any response
        return response

    def _observe(self, forecast) -> None:
        if forecast.max_age_s is not None:
            FEATURE_AGE.labels(market=forecast.market).set(forecast.max_age_s)
        if forecast.quality != "ok":
            DEGRADED.labels(market=forecast.market, reason=forecast.degraded_by or "stale_features").inc()

    # ------------------------------------------------------------ endpoints

    @bentoml.api(route="/v1/forecast", input_spec=api.ForecastRequest)
    async def forecast(self, market: str, delivery_day: dt.date | None, quantiles: list[float],
                       ctx: bentoml.Context) -> api.ForecastResponse:
        """One market's day-ahead forecast: every delivery hour (23/24/25 on DST days) with its quantiles."""
        served = []

        def work():
            who = self._principal(ctx, [market])
            rid = uuid.uuid4().hex
            f = self.runtime.forecast(market, delivery_day, tuple(quantiles))
            served.append(f.model_version)
            self._observe(f)
            self.runtime.archive(f, request_id=rid, tenant=who.tenant, source="api")
            if f.quality == "ok":
                self.runtime.shadow(market, f.delivery_day, tuple(quantiles), request_id=rid, tenant=who.tenant)
            return f.to_json(rid)

        return self._respond(ctx, "forecast", work, lambda body: served[0])

    @bentoml.api(route="/v1/forecast/batch", input_spec=api.BatchRequest)
    def forecast_batch(self, items: list[api.DayRef], quantiles: list[float], ctx: bentoml.Context) -> api.BatchResponse:
        """Many markets and days in one call; items that cannot be forecast are listed with their reason."""
        def work():
            limit = self.settings.serving.max_batch_items
            if len(items) > limit:
                raise ApiError(422, f"items holds {len(items)} entries; at most {limit} per call", "items")
            who = self._principal(ctx, sorted({i.market for i in items}))
            rid = uuid.uuid4().hex
            forecasts, errors = [], []
            for item in items:
                try:
                    f = self.runtime.forecast(item.market, item.delivery_day, tuple(quantiles))
                except Exception as exc:
                    err = _api_error(exc)
                    errors.append({"market": item.market, "delivery_day": _iso(item.delivery_day),
                                   "status": err.status, "error": err.message})
                    continue
                self._observe(f)
                self.runtime.archive(f, request_id=rid, tenant=who.tenant, source="api")
                forecasts.append(f.to_api(rid))
            return {"request_id": rid, "forecasts": forecasts, "errors": errors}

        return self._respond(ctx, "forecast_batch", work)

    @bentoml.api(route="/v1/scenarios", input_spec=api.ScenarioRequest)
    def scenarios(self, markets: list[str], delivery_days: list[dt.date], scenarios: list[api.ScenarioSpec],
                  saved: list[str], quantiles: list[float], ctx: bentoml.Context) -> api.ScenarioResponse:
        """What-if forecasts: every scenario on every market and day, beside the base case, in parallel."""
        def work():
            from serving.scenarios import Scenario

            total = len(scenarios) + len(saved)
            limit = self.settings.serving.max_scenarios
            if total == 0:
                raise ApiError(422, "give at least one scenario in 'scenarios' or 'saved'", "scenarios")
            if total > limit:
                raise ApiError(422, f"{total} scenarios requested; at most {limit} per call", "scenarios")
            if len(set(markets)) * max(1, len(set(delivery_days))) * total > 4 * limit:
                raise ApiError(422, f"{len(markets)} markets x {len(delivery_days)} days x {total} scenarios is "
                                    f"more than {4 * limit} what-if forecasts per call", "delivery_days")
            who = self._principal(ctx, sorted(set(markets)))
            defs = [Scenario.model_validate(s.model_dump()) for s in scenarios]
            for name in saved:
                if self.scenario_store is None:
                    raise ApiError(404, f"saved scenario {name!r}: this service keeps no saved scenarios", "saved")
                defs.append(self.scenario_store.get(who.tenant, name).scenario)
            rid = uuid.uuid4().hex
            jobs = {}
            for m in dict.fromkeys(markets):
                for d in (dict.fromkeys(delivery_days) or [None]):
                    for s in defs:
                        jobs[self.runtime.scenario_pool.submit(self._scenario, m, d, s, tuple(quantiles))] = (m, d, s)
            results, errors = [], []
            for fut in as_completed(jobs):
                m, d, s = jobs[fut]
                try:
                    base, what_if = fut.result()
                except Exception as exc:
                    err = _api_error(exc)
                    errors.append({"market": m, "delivery_day": _iso(d), "status": err.status,
                                   "error": f"scenario {s.name!r}: {err.message}"})
                    continue
                self.runtime.archive(what_if, request_id=rid, tenant=who.tenant, source="scenario")
                cols = base.columns()
                results.append({
                    "scenario": s.name, "market": m, "delivery_day": base.delivery_day.isoformat(),
                    "changed_inputs": [{"feature": c.feature, "hours": list(c.hours), "mean_before": c.old_mean,
                                        "mean_after": c.new_mean} for c in what_if.changes],
                    "base": base.to_api(rid), "forecast": what_if.to_api(rid),
                    "difference": [dict(zip(cols, row)) for row in (what_if.shown() - base.shown()).tolist()],
                })
            results.sort(key=lambda r: (r["market"], r["delivery_day"], r["scenario"]))
            return {"request_id": rid, "results": results, "errors": errors}

        return self._respond(ctx, "scenarios", work)

    def _scenario(self, market: str, day, scenario, quantiles):
        base = self.runtime.forecast(market, day, quantiles)
        if base.quality != "ok":  # a 503 while the online store is away, else a 404
            away = base.degraded_by == "online_store_unavailable"
            raise (OnlineStoreUnavailableError if away else ForecastUnavailableError)(
                f"no what-if for {market} {base.delivery_day}: {base.quality_reason}")
        return base, self.runtime.forecast(market, base.delivery_day, quantiles, scenario=scenario)

    @bentoml.api(route="/v1/scenarios/saved", input_spec=api.SaveScenarioRequest)
    def save_scenario(self, scenario: api.ScenarioSpec, ctx: bentoml.Context) -> api.SavedScenario:
        """Save (or replace, with a version bump) a scenario definition of the caller's tenant."""
        def work():
            from serving.scenarios import Scenario

            who = self._principal(ctx)
            if self.scenario_store is None:
                raise ApiError(404, "this service keeps no saved scenarios (authentication is off)")
            stored = self.scenario_store.save(who.tenant, Scenario.model_validate(scenario.model_dump()), saved_by=who.key_id)
            return {"name": stored.name, "version": stored.version, "tenant": who.tenant}

        return self._respond(ctx, "save_scenario", work)

    @bentoml.api(route="/v1/admin/reload", input_spec=api.ReloadRequest)
    def admin_reload(self, markets: list[str], ctx: bentoml.Context) -> dict:
        """Re-read the registry's champion (and challenger) now; an admin key is required."""
        def work():
            self._principal(ctx, admin=True)
            for m in markets:
                self.runtime.market(m)
            return {"reloaded": self.reload(list(markets) or None), "markets": self.runtime.book.status()}

        return self._respond(ctx, "admin_reload", work)

    @bentoml.api(route="/v1/noop")
    async def noop(self, ctx: bentoml.Context) -> dict:
        """Does nothing: the reference the latency benchmark compares the forecast endpoint with."""
        return {"ok": True}


def bundled_champions() -> Path | None:
    """The folder of champions packaged into this Bento (``bundle/`` beside the code), or None from source.

    ``AURUM_SERVING_BUNDLE`` names another folder explicitly.
    """
    named = os.environ.get(BUNDLE_ENV)
    if named:
        return Path(named).resolve()
    packaged = Path(__file__).resolve().parents[1] / "bundle"
    return packaged if packaged.is_dir() else None


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None


ForecastService.add_asgi_middleware(BodyLimit)


def build_bento(settings: AurumSettings, markets: list[str], *, root: Path) -> str:
    """Build a Bento that serves the current champions of ``markets`` without the registry.

    The champions are copied into the Bento (``bundle/<market>/``) beside the code of the packages the
    service imports and the exact versions of the installed dependencies; a service started from the
    Bento finds ``bundle/`` next to its code and loads them from there. Returns the Bento tag.
    """
    import shutil
    import tempfile
    from importlib.metadata import distributions

    from serving.champions import export_bundle

    with tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp)
        for package in ("features", "models", "serving", "feature_repo"):
            shutil.copytree(root / package, ctx / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        versions = export_bundle(settings, markets, ctx / "bundle")
        pins = sorted(f"{d.metadata['Name']}=={d.version}" for d in distributions()
                      if d.metadata["Name"] and d.metadata["Name"].lower() != "aurum")
        (ctx / "requirements.txt").write_text("\n".join(pins) + "\n")
        tools = root / ".tools" / "bin"  # BentoML locks the image's requirements with uv: use the project's own
        if (tools / "uv").exists() and str(tools) not in os.environ.get("PATH", ""):
            os.environ["PATH"] = f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"
        here = Path.cwd()
        os.chdir(ctx)  # BentoML resolves the requirements file against the working directory, never absolute
        try:
            bento = bentoml.bentos.build(
                "serving.service:ForecastService", name="aurum-forecast", build_ctx=str(ctx),
                include=["features/**/*.py", "feature_repo/**", "models/**/*.py", "serving/**/*.py", "bundle/**"],
                labels={"markets": ",".join(markets), **{f"champion_{m}": v for m, v in versions.items()}},
                description="Aurum day-ahead forecasts with the champions bundled: " +
                            ", ".join(f"{m} v{v}" for m, v in versions.items()),
                python={"requirements_txt": "requirements.txt", "lock_packages": False})  # already exact pins
        finally:
            os.chdir(here)
        return str(bento.tag)
