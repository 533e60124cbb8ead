# The two commands that matter: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export OPENBLAS_NUM_THREADS ?= 1
export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install demo test bench services stop status clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: install        ## services up, the 12k-SKU world, content vectors, consumer, Ray Serve, a load test
	$(BIN)/recsys demo $(ARGS)

test: install        ## the test suite against real Postgres+pgvector, Redis, the broker and Ray
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install       ## measure ingestion and HTTP latency; writes docs/benchmarks.md and .json
	$(BIN)/recsys bench $(ARGS)

services: install    ## start Postgres, Redis, the broker and a Ray head (idempotent)
	$(BIN)/recsys services up $(ARGS)

status: install
	$(BIN)/recsys services status $(ARGS)

stop: install        ## stop everything recsys started
	$(BIN)/recsys services down $(ARGS)

clean: stop          ## also delete the project state (.recsys/: databases, logs)
	rm -rf .recsys
