# Sluice: the two commands of the README, and the rest.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
LOCAL_DATA_DIR ?= $(shell $(PYTHON) -c 'import tempfile,os;print(os.path.join(tempfile.gettempdir(),"sluice-local"))')
export LOCAL_DATA_DIR

.PHONY: install run test unit functional integration lint typecheck bench soak migrate clean token infra deploy deploy-plan db-pair-start db-pair-stop

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# `make run` needs only the run-time packages and chalice: a fresh laptop is serving in a minute.
$(BIN)/.run-installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt "chalice>=1.31,<2"
	touch $@

install: $(BIN)/.installed

run: $(BIN)/.run-installed ## serve the API on http://127.0.0.1:8000 with the embedded defaults
	@echo "LOCAL_DATA_DIR=$(LOCAL_DATA_DIR)  (Firehose-layout objects and the SQLite file)"
	$(BIN)/chalice local --host 127.0.0.1 --port 8000

token: $(BIN)/.run-installed ## a development token: make token SUB=alice [GROUPS=admins]
	@$(PY) -m chalicelib.cli token --sub "$(or $(SUB),alice)" $(if $(GROUPS),--groups "$(GROUPS)")

test: install lint typecheck ## every tier; MariaDB and Redis tests skip (or fail in CI) without the services
	$(BIN)/pytest

unit: install
	$(BIN)/pytest tests/unit

functional: install
	$(BIN)/pytest tests/functional

integration: install
	$(BIN)/pytest tests/integration

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(PY) scripts/gen-openapi --check

typecheck: install
	$(BIN)/mypy chalicelib app.py deploy

migrate: install
	$(PY) -m chalicelib.cli migrate

bench: install
	$(PY) -m bench

soak: install ## random histories, real loader processes and server faults, until MINUTES are up: make soak MINUTES=30
	$(PY) -m tests.histories soak --minutes $(or $(MINUTES),10)

infra: install ## the stacks, then .chalice/ filled so that `chalice deploy --stage prod` works here
	$(PY) -m deploy.deploy infra --stage $(or $(STAGE),prod) $(DEPLOY_ARGS)

deploy: install ## infra + chalice deploy + what chalice cannot set: make deploy STAGE=prod [DEPLOY_ARGS=...]
	$(PY) -m deploy.deploy deploy --stage $(or $(STAGE),prod) $(DEPLOY_ARGS)

deploy-plan: install ## what make deploy would do, changing nothing
	$(PY) -m deploy.deploy deploy --stage $(or $(STAGE),prod) --dry-run $(DEPLOY_ARGS)

db-pair-start:
	scripts/db-pair start

db-pair-stop:
	scripts/db-pair stop

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
