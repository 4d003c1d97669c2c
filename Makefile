# The two commands the README starts with: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.strata-installed

.PHONY: run test install bench clean vendor

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall only when the dependency list changes. torch/torchvision are pinned in pyproject.toml.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test,experiments]'
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/strata run

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# TorchServe and its model archiver (the `bench` extra; Java 17+): bench/bench_serving.py serves the same
# model through TorchServe and through Strata.
BENCH_STAMP := $(VENV)/.strata-bench-installed
$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,experiments,bench]'
	touch $@

# Every CPU benchmark (bench/run_all.py) with small sizes, 10-35 min on 2 cores: one markdown table of
# figures, ratios to the bare baselines and aims in var/bench/results.md (raw JSON and logs beside it; the
# dashboard's benchmark needs /usr/bin/chromium). `make bench BENCH_ARGS=` runs docs/results.md's full
# commands instead (an hour or more); `make bench BENCH_ARGS='--quick --only segment-128,webhooks'` a few.
BENCH_ARGS ?= --quick
bench: $(STAMP) $(BENCH_STAMP)
	$(PY) bench/run_all.py $(BENCH_ARGS)

# The dashboard's front-end libraries: api/dashboard/package-lock.json pins them; their built files are
# committed under api/dashboard/static/vendor, so nothing is fetched at run time or by `make test`.
VENDOR := api/dashboard/static/vendor
vendor:
	cd api/dashboard && npm ci --no-audit --no-fund
	cp api/dashboard/node_modules/uplot/dist/uPlot.iife.min.js api/dashboard/node_modules/uplot/dist/uPlot.min.css $(VENDOR)/
	cp api/dashboard/node_modules/uplot/LICENSE $(VENDOR)/uPlot.LICENSE

clean:
	rm -rf var .pytest_cache
