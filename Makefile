# Entry points. `make run` is the main job (set up, train what is missing, serve); `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; override (e.g. TORCH_SPEC="torch==2.13.0 --index-url ...") for CUDA hosts.
TORCH_SPEC ?= torch==2.13.0
# Which tasks `make run` prepares and serves, and the preset it trains missing models with.
TASKS ?= sentiment,translation,generation
PRESET ?= quick
ARTIFACTS ?= artifacts
CACHE ?= .cache
STAMP := $(VENV)/.installed

.PHONY: run test test-all install train serve bench lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[train,dev]'
	touch $(STAMP)

install: $(STAMP)

## Main job: install, fetch data/weights, train each missing task with $(PRESET), then serve.
run: $(STAMP)
	$(BIN)/python -m training.ensure --tasks $(TASKS) --preset $(PRESET) --output-dir $(ARTIFACTS) --cache-dir $(CACHE)
	NLP_ARTIFACTS_DIR=$(ARTIFACTS) NLP_TASKS='$(shell echo $(TASKS) | sed 's/[ ,]\+/,/g')' $(BIN)/python -m service

## The default test suite: offline, tiny random models, a few minutes on 2 cores.
test: $(STAMP)
	$(BIN)/python -m pytest -q

## Everything, including tests that need the fetched data and long runs.
test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

train: $(STAMP)
	$(BIN)/python -m training.ensure --tasks $(TASKS) --preset $(PRESET) --output-dir $(ARTIFACTS) --cache-dir $(CACHE)

serve: $(STAMP)
	NLP_ARTIFACTS_DIR=$(ARTIFACTS) $(BIN)/python -m service

bench: $(STAMP)
	$(BIN)/python -m bench.loadgen --artifacts-dir $(ARTIFACTS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
