# Entry points. `make run` is the main job (set up, train what is missing, serve); `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; override (e.g. TORCH_SPEC="torch==2.13.0 --index-url ...") for CUDA hosts.
TORCH_SPEC ?= torch==2.13.0
# Which tasks `make run` trains when they have no artifact (it serves every model under ARTIFACTS), and the preset.
TASKS ?= sentiment,translation,generation
PRESET ?= quick
ARTIFACTS ?= artifacts
CACHE ?= .cache
STAMP := $(VENV)/.installed

.PHONY: run test test-all install train serve bench soak security audit lint screenshots clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[train,dev]'
	touch $(STAMP)

install: $(STAMP)

## Main job: install, then serve at once while each missing task of $(TASKS) trains with $(PRESET) in the background
## (fetching its data/weights first; log in $(TRAIN_LOG)). The server serves every model under $(ARTIFACTS) as soon as
## its artifact is written (GET /models shows ready / training / failed); Ctrl-C stops the server and the training.
TRAIN_LOG ?= logs/train.log
run: $(STAMP)
	@mkdir -p $(dir $(TRAIN_LOG))
	@$(BIN)/python -m training.ensure --tasks $(TASKS) --preset $(PRESET) --output-dir $(ARTIFACTS) \
	    --cache-dir $(CACHE) > $(TRAIN_LOG) 2>&1 & train=$$!; \
	trap 'kill $$train 2>/dev/null; wait $$train 2>/dev/null' EXIT INT TERM; \
	echo "[run] training what $(ARTIFACTS)/ lacks of $(TASKS) in the background: tail -f $(TRAIN_LOG)"; \
	echo "[run] serving meanwhile; each model answers once ready: curl -s localhost:8000/models"; \
	NLP_ARTIFACTS_DIR=$(ARTIFACTS) $(BIN)/python -m service

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

## Soak at 2x the saturating rate for SOAK_SECONDS on a tiny random model (bench/README.md); exits 1 on a loss.
SOAK_SECONDS ?= 120
soak: $(STAMP)
	$(BIN)/python -m bench.soak --tiny --seconds $(SOAK_SECONDS) --mc-samples 64

## Style and likely-bug lint (ruff, configured in pyproject.toml); tests/test_lint.py runs the same check in `make test`.
lint: $(STAMP)
	$(BIN)/python -m ruff check .

## Static security lint: bandit over the packages, failing on medium or high severity (also a default test).
security: $(STAMP)
	$(BIN)/python -m bandit -r models training service --severity-level medium -q

## Dependency audit against the PyPI/OSV vulnerability databases: NEEDS NETWORK ACCESS (not part of `make test`).
## --strict fails when a package cannot be audited, so an offline run fails instead of reporting "no known vulnerabilities".
audit: $(STAMP)
	$(BIN)/python -m pip_audit --strict --progress-spinner off

## Refresh docs/playground.png (the README's picture) from the browser test (needs chromium + chromium-driver).
screenshots: $(STAMP)
	SAVE_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/browser

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
