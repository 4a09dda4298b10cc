# Two commands do all set-up on a fresh machine with Python >= 3.11 and make:
#   make run    create the environment, then run the main job on the embedded default
#   make test   create the environment, then run the tests
# The environment is installed exactly from uv.lock by uv, which is itself bootstrapped with pip.

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
AURUM := $(VENV)/bin/aurum

export UV_PYTHON_DOWNLOADS := never
export UV_COMPILE_BYTECODE := 1
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: setup run test bench-lake bench-features bench-epf bench-serving bench-soak bench-scoring bench-entsoe bench-monitoring clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

setup: $(VENV)/.synced  ## create .venv from the lock file

SYNTHETIC := SYN_NORTH SYN_SOUTH SYN_EAST

run: setup  ## synthetic markets under AURUM_HOME (default ./.aurum): ingest, features, online lookup, train + approve a model per market
	$(AURUM) ingest synthetic
	$(AURUM) features compute
	$(AURUM) data stats
	$(AURUM) features apply
	$(AURUM) features materialize --from 2020-01-01
	$(AURUM) features lookup SYN_NORTH
	for m in $(SYNTHETIC); do $(AURUM) train --market $$m --model lgbm --backtest-days 14 --train-days 365 || exit 1; done
	$(AURUM) score --market SYN_NORTH --from 2024-12-01 --to 2024-12-31
	$(AURUM) score --market SYN_NORTH --from 2023-12-04 --to 2023-12-31
	$(AURUM) monitor run --market SYN_NORTH --window 7d --end 2024-01-01 --windows 4; test $$? -ne 2
	$(AURUM) serve --detach
	@KEY=$$($(AURUM) keys create --tenant demo --markets SYN_NORTH,SYN_SOUTH,SYN_EAST --name make-run | sed -n 's/^API key: //p'); \
	echo ""; echo "The forecast service runs on http://127.0.0.1:3000 (stop it: $(AURUM) serve --stop). Try:"; \
	echo "  curl -s -X POST http://127.0.0.1:3000/v1/forecast -H 'Authorization: Bearer $$KEY' -H 'Content-Type: application/json' -d '{\"market\": \"SYN_NORTH\", \"delivery_day\": \"2024-12-31\"}'"
	@echo "Review the runs and models in the MLflow UI: $(AURUM) ui  ->  http://127.0.0.1:5000"
	@echo "Monitoring dashboards and reports (4 weekly drift and performance checks of SYN_NORTH): $(AURUM) monitor ui  ->  http://127.0.0.1:8000"

test: setup  ## run the test suite
	$(VENV)/bin/python -m pytest

bench-lake: setup  ## ingest rate and 30-day window read as the lake grows from 1 to 20 years
	$(VENV)/bin/python benchmarks/bench_lake.py --write-docs

bench-features: setup  ## feature store: training sets vs a DuckDB ASOF join, online lookups, materialization
	$(VENV)/bin/python benchmarks/bench_features.py --write-docs

bench-epf: setup  ## EPF benchmark (NP, BE, FR; ../shared/data) through ingest, feature store and aurum backtest
	$(VENV)/bin/python benchmarks/bench_epf.py --train-days 1456 --param lear_recalibrate=true --param feature_fraction=0.5 \
		--market-param NP:target_transform=level --market-param NP:exogenous_lags=day_stats \
		--market-param NP:lgbm_weight=2 --market-param 'NP:lear_exogenous_lag_days=[1]' \
		--market-param NP:median_objective=quantile+l2 --write-docs

bench-entsoe: setup  ## the unchanged pipeline on the nine ENTSO-E zones (../shared/data): 8 weeks of the last year, 4 of 2022
	$(VENV)/bin/python benchmarks/bench_entsoe.py --crisis --train-days 1456 --write-docs

bench-serving: setup  ## forecast API: sequential and 16-client latency and throughput against a no-op endpoint, cold start
	$(VENV)/bin/python benchmarks/bench_serving.py --write-docs

bench-soak: setup  ## forecast API: one worker's RSS (and its archiver's) over a 10-minute mixed load
	$(VENV)/bin/python benchmarks/bench_serving.py --soak 600 --write-docs

bench-scoring: setup  ## aurum score: rows/s of the local and Ray engines at 1 and 10 market-years, with phases
	$(VENV)/bin/python benchmarks/bench_scoring.py --profile --write-docs

bench-monitoring: setup  ## drift of 1 million rows x 50 features: time and peak memory
	$(VENV)/bin/python benchmarks/bench_monitoring.py --write-docs

clean:  ## remove the environments and the local lake (stops a service started by make run)
	-[ -x $(AURUM) ] && $(AURUM) serve --stop
	rm -rf $(VENV) $(TOOLS) .aurum
