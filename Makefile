# Set-up is two commands: `make demo` and `make test`. Both create .venv and install the
# project from pyproject.toml first, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo
SCENARIO ?= paddy
SEED ?= 2026

.PHONY: venv demo test lint typecheck pytest bench clean browser fuzz

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# the federated tests run vantage6's MockAlgorithmClient: `make test` installs the extra
FEDERATED := $(VENV)/.federated
$(FEDERATED): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,federated]'
	touch $(FEDERATED)

demo: $(STAMP)
	$(BIN)/pooled demo --scenario $(SCENARIO) --seed $(SEED) --out $(DEMO_OUT) --overwrite

lint: $(STAMP)
	$(BIN)/ruff check harmonization pooled tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(FEDERATED)
	MPLBACKEND=Agg $(BIN)/python -m pytest -n 2 -q

test: lint typecheck browser pytest

# The report's browser test needs headless Chromium. Install it where we can (root with apt);
# elsewhere the test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } \
	  || echo "note: Chromium not installed; the report's browser test will be skipped"

# Property tests of uploads at full strength: 1,000 corrupted uploads per file type (csv, xlsx,
# sav), new random examples each run (make test runs 100 per type, derandomised).
fuzz: $(STAMP)
	POOLED_FUZZ_EXAMPLES=1000 POOLED_FUZZ_RANDOM=1 $(BIN)/python -m pytest -n 2 -q \
	  tests/harmonization/test_fuzz_uploads.py

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
