# Two entry points: `make demo` (a live local cluster) and `make test` (the whole suite).
# Both bootstrap their own virtualenv in .venv the first time.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= .demo-cluster
DEMO_NODES ?= 5

.PHONY: venv test lint typecheck unit demo demo-down bench bench-quick bench-loopback bench-cli bench-core bench-store bench-repair clean docs completions

venv: $(STAMP)

# editable_mode=compat: the checkout goes on sys.path through a plain .pth line; the
# default editable finder cost every python start in the venv 24 ms of imports (each
# plumctl call, each TAB)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy plumtree plumctl bench

unit: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile -q

test: lint typecheck unit

demo: $(STAMP)
	$(BIN)/plumctl cluster up -n $(DEMO_NODES) --dir $(DEMO_DIR)
	@echo
	@echo "plumctl lives in $(BIN); to use it directly:  export PATH=\"$$PWD/$(BIN):\$$PATH\""
	@echo "stop the demo cluster with:  make demo-down"

demo-down: $(STAMP)
	$(BIN)/plumctl cluster down --dir $(DEMO_DIR)

# Benchmarks print measured vs target (bench/*.py --help); they never fail the build.
bench: $(STAMP)
	$(BIN)/python bench/sim.py

bench-quick: $(STAMP)
	$(BIN)/python bench/sim.py --quick

bench-loopback: $(STAMP)
	$(BIN)/python bench/loopback.py --repeat 3

bench-cli: $(STAMP)
	$(BIN)/python bench/cli.py

bench-core: $(STAMP)
	$(BIN)/python bench/core.py
	$(BIN)/python bench/node.py

# the durable store's commits, and a node catching up after 60 s away at 200/s
bench-store: $(STAMP)
	$(BIN)/python bench/store.py

bench-repair: $(STAMP)
	$(BIN)/python bench/repair.py

docs: $(STAMP)
	$(BIN)/python -m plumctl.docs > docs/cli.md

# completion scripts and the tables behind fast TAB and --help (tests check they are current)
completions: $(STAMP)
	$(BIN)/python -m plumctl.completions_gen

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
