"""The forecast service over HTTP: a real ``bentoml serve`` on loopback, real keys, real Feast and MLflow."""

import datetime as dt
import json

import pytest

from serving.keys import KeyStore

from serving import launcher

MARKET = "SYN_NORTH"
DAY = "2024-04-12"


@pytest.fixture(scope="module")
def live(served_env, tmp_path_factory):
    """The service on the shared served market, with a tenant key (SYN_NORTH) and an admin key."""
    with KeyStore.open(served_env.settings) as keys:
        tenant = keys.create("acme", [MARKET]).token
        admin = keys.create("ops", "*", admin=True).token
    service = launcher.start(served_env.settings.home_dir, tmp_path_factory.mktemp("live") / "serve.log")
    yield service, tenant, admin
    service.stop()


def test_forecast_with_metadata(live, served_env):
    service, key, _ = live
    with service.client(key) as c:
        r = c.post("/v1/forecast", json={"market": MARKET, "delivery_day": DAY})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["quality"] == "ok" and len(body["hours"]) == 24
    assert body["model"] == {"name": f"day_ahead_{MARKET}", "version": served_env.champions[MARKET],
                             "alias": "champion", "feature_service": "day_ahead_v1"}
    assert body["features"]["snapshot_id"] and body["features"]["stale_hours"] == 0
    assert len(body["request_id"]) == 32
    hour = body["hours"][0]
    assert hour["values"]["q10"] <= hour["values"]["q50"] <= hour["values"]["q90"]


def test_keys_and_tenants(live):
    service, key, admin = live
    with service.client() as anon:
        r = anon.post("/v1/forecast", json={"market": MARKET, "delivery_day": DAY})
        assert r.status_code == 401 and "API key" in r.json()["error"]
        assert anon.post("/v1/forecast", json={"market": MARKET}, headers={"X-API-Key": "aurum_bad_key"}).status_code == 401
        assert anon.get("/healthz").status_code == 200 and anon.get("/readyz").status_code == 200
        assert anon.get("/metrics").status_code == 200
    with service.client(key) as c:
        r = c.post("/v1/forecast", json={"market": "SYN_SOUTH", "delivery_day": DAY})
        assert r.status_code == 403 and "SYN_SOUTH" in r.json()["error"]
        assert c.post("/v1/admin/reload", json={}).status_code == 403
    with service.client(admin) as c:
        r = c.post("/v1/admin/reload", json={})
        assert r.status_code == 200 and r.json()["reloaded"] == {MARKET: "unchanged"}
    assert key not in service.log_text() and admin not in service.log_text()


def test_batch_reports_items_it_cannot_forecast(live):
    service, key, _ = live
    with service.client(key) as c:
        r = c.post("/v1/forecast/batch", json={"items": [
            {"market": MARKET, "delivery_day": DAY}, {"market": MARKET, "delivery_day": "2024-04-18"},
            {"market": MARKET, "delivery_day": "2020-01-10"}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [f["quality"] for f in body["forecasts"]] == ["ok", "degraded"]
        assert "weekly-naive baseline" in body["forecasts"][1]["quality_reason"]
        assert len(body["errors"]) == 1 and body["errors"][0]["status"] == 404
        assert body["errors"][0]["delivery_day"] == "2020-01-10"
        too_many = [{"market": MARKET, "delivery_day": DAY}] * 65
        r = c.post("/v1/forecast/batch", json={"items": too_many})
        assert r.status_code == 422 and r.json()["field"] == "items"


def test_scenarios_inline_and_saved(live):
    service, key, _ = live
    with service.client(key) as c:
        saved = c.post("/v1/scenarios/saved", json={"scenario": {
            "name": "calm", "overrides": [{"feature": "wind_forecast_mw", "op": "scale", "value": 0.5}]}})
        assert saved.status_code == 200 and saved.json()["version"] >= 1
        r = c.post("/v1/scenarios", json={
            "markets": [MARKET], "delivery_days": [DAY, "2024-04-11"], "saved": ["calm"],
            "scenarios": [{"name": "high-load", "overrides": [
                {"feature": "load_forecast_mw", "op": "scale", "value": 1.05, "hours": [17, 18, 19]}]}]})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert len(results) == 4 and not r.json()["errors"]
        high = next(x for x in results if x["scenario"] == "high-load" and x["delivery_day"] == DAY)
        assert {c["feature"]: c["hours"] for c in high["changed_inputs"]} == {
            "load_forecast_mw": [17, 18, 19], "residual_load_mw": [17, 18, 19]}
        for base, what_if, diff in zip(high["base"]["hours"], high["forecast"]["hours"], high["difference"]):
            assert diff["q50"] == pytest.approx(what_if["values"]["q50"] - base["values"]["q50"])
        calm = next(x for x in results if x["scenario"] == "calm" and x["delivery_day"] == DAY)
        assert [c["feature"] for c in calm["changed_inputs"]] == ["wind_forecast_mw", "residual_load_mw"]
        assert any(abs(d["q50"]) > 1e-6 for d in calm["difference"])
        r = c.post("/v1/scenarios", json={"markets": [MARKET], "saved": ["nope"]})
        assert r.status_code == 404 and "nope" in r.json()["error"]
        r = c.post("/v1/scenarios", json={"markets": [MARKET], "scenarios": [
            {"name": "bad", "overrides": [{"feature": "price_lag_P1D", "op": "set", "value": 1}]}]})
        assert r.status_code == 422 and "price_lag_P1D" in r.text


@pytest.mark.parametrize("payload, status, field", [
    (b'{"market": "SYN_NORTH",', 400, None),  # malformed JSON
    (json.dumps({"market": 7}), 400, "market"),
    (json.dumps({"market": MARKET, "quantiles": [0.5, 1.5]}), 400, "quantiles"),
    (json.dumps({"market": MARKET, "quantiles": [0.5, 0.5]}), 400, "quantiles"),
    (json.dumps({"market": MARKET, "delivery_day": "tomorrow"}), 400, "delivery_day"),
    (json.dumps({"market": MARKET, "colour": "red"}), 400, "colour"),
    (json.dumps({"market": MARKET, "delivery_day": "2099-01-01"}), 422, "delivery_day"),
    (json.dumps({"market": MARKET, "delivery_day": DAY, "quantiles": [0.25]}), 422, "quantiles"),
    (json.dumps({"market": "NOWHERE", "delivery_day": DAY}), 404, "market"),
    (b"[" * 70000, 413, None),
])
def test_bad_input_is_a_4xx_naming_the_field(live, payload, status, field):
    service, _, admin = live
    with service.client(admin) as c:  # the admin key reads every market: an unknown one is a 404
        r = c.post("/v1/forecast", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    if field:
        assert field in r.text


def test_models_and_metrics(live, served_env):
    service, key, _ = live
    with service.client(key) as c:
        c.post("/v1/forecast", json={"market": MARKET, "delivery_day": DAY})
        models = c.get("/v1/models").json()
        metrics = c.get("/metrics").text
    champion = models["markets"][MARKET]["champion"]
    assert champion["version"] == served_env.champions[MARKET] and champion["approval"]["decision"] == "approved"
    assert models["ready"] and models["markets"][MARKET]["registry_ok"]
    assert 'aurum_request_seconds_bucket{endpoint="forecast"' in metrics
    assert 'aurum_requests_total{endpoint="forecast",status="200"}' in metrics
    assert f'aurum_model_version{{alias="champion",market="{MARKET}"}} {float(served_env.champions[MARKET])}' in metrics
    assert 'aurum_feature_age_seconds{market="SYN_NORTH"}' in metrics


def test_fuzzing_the_openapi_schema_finds_no_server_error(live):
    """Every operation of the published schema, with generated valid and invalid bodies: never a 5xx."""
    import hypothesis
    import schemathesis

    service, key, _ = live
    schema = schemathesis.openapi.from_url(f"{service.url}/docs.json")
    failures = []
    operations = [op.ok() for op in schema.get_all_operations()]
    assert {o.path for o in operations} >= {"/v1/forecast", "/v1/forecast/batch", "/v1/scenarios"}
    statuses = set()
    for op in operations:
        modes = [schemathesis.GenerationMode.POSITIVE]
        if op.method.upper() == "POST" and op.path != "/v1/noop":  # bodies to break
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        for mode in modes:
            @hypothesis.settings(max_examples=30, deadline=None, database=None, derandomize=True,
                                 suppress_health_check=list(hypothesis.HealthCheck))
            @hypothesis.given(case=op.as_strategy(generation_mode=mode))
            def check(case):
                response = case.call(base_url=service.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
                statuses.add(response.status_code)
                if response.status_code >= 500:
                    failures.append((case.method, case.path, case.body, response.status_code, response.text[:300]))

            check()
    assert not failures, failures[:5]
    assert 200 in statuses and 400 in statuses  # the fuzzer reached both valid and refused requests
    with service.client() as c:
        assert c.get("/readyz").status_code == 200  # still up


def test_forecast_days_default_to_tomorrow(live):
    service, key, _ = live
    with service.client(key) as c:
        r = c.post("/v1/forecast", json={"market": MARKET})
    # The synthetic market ends in 2024: tomorrow has neither features nor prices, which is a 404, not a guess.
    assert r.status_code == 404
    tomorrow = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).date()
    assert str(tomorrow.year) in r.json()["error"]


def test_served_forecasts_reach_the_archive(live, served_env):
    """Every answer is archived off the request path, within about a second, with its request id."""
    import time

    from serving.archive import read_forecasts

    service, key, _ = live
    with service.client(key) as c:
        r = c.post("/v1/forecast", json={"market": MARKET, "delivery_day": "2024-04-09", "quantiles": [0.1, 0.9]})
    assert r.status_code == 200 and set(r.json()["hours"][0]["values"]) == {"q10", "q90"}
    rid = r.json()["request_id"]
    deadline = time.monotonic() + 30
    while True:
        rows = read_forecasts(served_env.lake, MARKET)
        rows = rows[rows["request_id"] == rid]
        if len(rows) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(rows) == 24 and set(rows["tenant"]) == {"acme"} and set(rows["source"]) == {"api"}
    assert list(rows["levels"].iloc[0]) == [0.1, 0.5, 0.9]  # the median is archived even when not asked for
    assert (rows["model_version"] == served_env.champions[MARKET]).all() and not rows["shadow"].any()
    by_hour = {h["delivery_start"]: h["values"]["q90"] for h in r.json()["hours"]}
    for ts, values in zip(rows["delivery_start"], rows["values"]):
        assert values[2] == pytest.approx(by_hour[ts.isoformat()])
