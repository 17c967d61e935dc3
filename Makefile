# Confab: `make run` starts the platform, `make test` runs every test against real backends.
# Both install what is missing first (a virtual environment with the locked dependencies).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
MEMBERS := libs infra services/gateway services/identity services/messaging services/media services/fanout services/webhooks services/notifier
PYPROJECTS := pyproject.toml $(addsuffix /pyproject.toml,$(MEMBERS))
STAMP := $(VENV)/.confab-installed
OWN := $(foreach m,confab confab-infra confab-gateway confab-identity confab-messaging confab-media confab-fanout confab-webhooks confab-notifier,--no-emit-package $(m))

.PHONY: install run test test-fast lint format lock bench bench-peers fuzz clean

install: $(STAMP)

$(UV):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "uv>=0.5"

# Everything a developer needs: the runtime lock plus the embedded backends and the tools.
# Compiled to bytecode once here: with PYTHONDONTWRITEBYTECODE set (as in many containers)
# every process would compile its imports again, about 1.3 s of CPU per service start.
$(STAMP): requirements-dev.lock requirements.lock $(PYPROJECTS) | $(UV)
	$(UV) pip sync --quiet --compile-bytecode --python $(BIN)/python requirements-dev.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps $(addprefix -e ,$(MEMBERS))
	$(BIN)/python -m compileall -q -j 0 $(MEMBERS) tests >/dev/null
	@touch $(STAMP)

## lock: re-resolve the dependencies (pinned, hashed, no download addresses) into two locks:
##   requirements.lock      what the services run on; the images in deploy/ install only this
##   requirements-dev.lock  the same pins, plus the embedded backends (group local) and the
##                          test, benchmark and lint tools (group dev); `make install` uses it
LOCK_FLAGS := --python-version 3.11 --generate-hashes $(OWN) --quiet
lock: | $(UV)
	$(UV) pip compile pyproject.toml $(LOCK_FLAGS) -o requirements.lock
	$(UV) pip compile pyproject.toml --group local --group dev -c requirements.lock \
		$(LOCK_FLAGS) -o requirements-dev.lock

run: install
	$(BIN)/confab up

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not faults" -x -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## bench-peers: Soketi 1.6.1 from npm (in bench/peers), then the fanout and idle scenarios
##   against it and against Confab back to back, with Confab ÷ Soketi ratios (peers.json, peers.png)
bench-peers: install
	cd bench/peers && npm ci --no-audit --no-fund --ignore-scripts
	$(BIN)/confab bench peers
	$(BIN)/confab bench report

## bench: every scenario (latency over load at several rates), then the plots; see bench/README.md
bench: install
	$(BIN)/confab bench all --rates 250,500,1000,2000
	$(BIN)/confab bench report

## fuzz: schemathesis against a stack of its own (or CONFAB_FUZZ_STACK=.confab: the one `make run`
## serves), FUZZ_CASES generated cases per operation, 0 server errors allowed; not part of
## `make test` (which runs 25 per operation); figures in docs/hostile-input.md
FUZZ_CASES ?= 100
fuzz: install
	@mkdir -p test-artifacts
	CONFAB_FUZZ_CASES=$(FUZZ_CASES) CONFAB_FUZZ_REPORT=$(CURDIR)/test-artifacts/fuzz-report.json \
		$(BIN)/python -m pytest tests/test_api_fuzz.py -q

clean:
	rm -rf $(VENV) .confab .pytest_cache
