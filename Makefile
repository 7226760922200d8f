# Two commands from a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BENCH_RUNS ?= 1000
SOAK_S ?= 60

.PHONY: demo test test-fast lint bench bench-dashboard soak screenshot clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("runsmon needs Python 3.10+") if sys.version_info < (3, 10) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/runsmon demo

test: $(VENV)/.installed
	$(PY) -m ruff check runsmon tests benchmarks sample_projects
	$(PY) -m pytest -q

# The unit layer: no TensorBoard, browser, soak or slow test (markers in pyproject.toml),
# spread over the machine's cores (pytest-xdist).
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -n auto -m "not tb and not browser and not soak and not slow"

lint: $(VENV)/.installed
	$(PY) -m ruff check runsmon tests benchmarks sample_projects
	$(PY) -m ruff format --check runsmon tests benchmarks sample_projects

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py --runs $(BENCH_RUNS) --plain-install
	$(MAKE) bench-dashboard

# Time to a full dashboard: runsmon serve (and guild tensorboard up to 1,000 runs), end to end.
bench-dashboard: $(VENV)/.installed
	$(PY) benchmarks/dashboard.py --runs $(BENCH_RUNS)

soak: $(VENV)/.installed
	$(PY) -m pytest -q tests/soak -k soak --soak-seconds $(SOAK_S)

screenshot: $(VENV)/.installed
	$(PY) -m pytest -q tests/test_browser.py --screenshot docs/img/hparams-table.png

clean:
	rm -rf $(VENV) .bench
