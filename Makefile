# Fresh-clone entry points. `make run` writes depth maps for the bundled examples with the bundled
# model; `make test` runs the test suite. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PIP_FLAGS ?= -q --disable-pip-version-check
# constraints.txt pins torch for CPU-only installs (see README); override for CUDA machines.
CONSTRAINTS ?= constraints.txt

.PHONY: run test lint test-all test-browser test-gpu test-min install install-dev clean

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_FLAGS) -c $(CONSTRAINTS) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install $(PIP_FLAGS) -c $(CONSTRAINTS) -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: $(VENV)/.installed
	$(VENV)/bin/apdepth predict assets/examples --output outputs

# Lint (pyflakes, pycodestyle, import order, docstrings of the public API) and formatting: configured in
# pyproject.toml; `$(PY) -m ruff check --fix . && $(PY) -m ruff format .` fixes most findings.
lint: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest -q

# The web demo driven by headless Chromium (installs Debian's chromium if missing).
test-browser: $(VENV)/.installed-dev
	bash scripts/install_browser_deps.sh
	$(PIP) install $(PIP_FLAGS) -c $(CONSTRAINTS) -e ".[browser]"
	$(PY) -m pytest -q -m browser tests/test_demo_browser.py

# Slow tests too (multi-process training, longer runs); GPU tests skip themselves without CUDA.
test-all: $(VENV)/.installed-dev
	$(PY) -m pytest -q -m "not browser"

# GPU checks of the fast paths (tests/test_gpu.py); they skip themselves without CUDA.
test-gpu: $(VENV)/.installed-dev
	$(PY) -m pytest -q -m gpu tests/test_gpu.py

# The test suite on the lowest dependency versions pyproject.toml allows (constraints-min.txt), in its own venv.
test-min:
	$(PYTHON) -m venv .venv-min
	.venv-min/bin/python -m pip install $(PIP_FLAGS) -c constraints-min.txt -e ".[dev]"
	.venv-min/bin/python -m pytest -q

clean:
	rm -rf $(VENV) .venv-min outputs .pytest_cache
