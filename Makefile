# `make search` and `make test` set up .venv on first use (pip install -e '.[dev]').
VENV ?= .venv
BIN := $(VENV)/bin
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE := disabled

.PHONY: search test bench clean-runs

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -e '.[dev]'
	touch $@

search: $(VENV)/.installed
	$(BIN)/nas search --space elasticvit --device pixel6

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_latency.py
	$(BIN)/python benchmarks/bench_search.py

clean-runs:
	rm -rf runs/2*
