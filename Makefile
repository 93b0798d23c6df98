# `make search` and `make test` set up .venv on first use (pip install -e '.[dev]').
VENV ?= .venv
BIN := $(VENV)/bin
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE := disabled

.PHONY: search test bench clean-runs fashion-mnist chromium

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -e '.[dev]'
	@$(MAKE) --no-print-directory fashion-mnist chromium
	touch $@

# Fashion-MNIST for supernet training and its tests: Debian's package, where apt is available.
fashion-mnist:
	@test -d /usr/share/datasets/fashion-mnist \
	  || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
	       && apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; } \
	  || echo "note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); training tests will be skipped"

# Headless Chromium renders report.html in its test (tests/test_run_report.py), where apt is available.
chromium:
	@command -v chromium >/dev/null \
	  || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
	       && apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } \
	  || echo "note: chromium not installed (apt-get install chromium); the report rendering test will be skipped"

search: $(VENV)/.installed
	$(BIN)/nas search --space elasticvit --device pixel6

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_latency.py
	$(BIN)/python benchmarks/bench_mpc.py
	$(BIN)/python benchmarks/bench_deepmad.py
	$(BIN)/python benchmarks/bench_search.py
	$(BIN)/python benchmarks/bench_supernet.py
	$(BIN)/python benchmarks/bench_resnas.py
	$(BIN)/python benchmarks/bench_ray.py
	$(BIN)/python benchmarks/bench_lut.py --space nb201
	$(BIN)/python benchmarks/bench_lut.py --space elasticvit-tiny --max-blocks 120

clean-runs:
	rm -rf runs/2*
