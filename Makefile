# The two commands of the README: `make run` and `make test`.
# Both create .venv and install exactly what poetry.lock pins (see ARCHITECTURE.md 6).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test bench lint check clean

$(STAMP): pyproject.toml poetry.lock .ci/constraints.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "pip>=25.1"
	$(BIN)/python .ci/constraints.py poetry.lock > $(VENV)/constraints.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c $(VENV)/constraints.txt -e . --group dev
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/notefly up --demo

test: install
	$(BIN)/python -m pytest

# The benchmark suite (README "Performance"); BENCH_FLAGS=--quick for smaller sizes.
# wrk drives the ingest scenario: installed from Debian when we are root.
bench: install
	@command -v wrk >/dev/null || \
		{ [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq wrk; } || \
		echo "wrk is missing (apt-get install wrk as root): the ingest scenario will FAIL"
	$(BIN)/notefly bench $(BENCH_FLAGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

check: lint test

clean:
	rm -rf $(VENV) .notefly .pytest_cache .mypy_cache .ruff_cache
