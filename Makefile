# cosign: `make run` and `make test` are the whole quick start.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test demo lint typecheck check clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cosign run

demo: $(STAMP)
	$(BIN)/cosign demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check bot handlers tests bench

typecheck: $(STAMP)
	$(BIN)/mypy bot handlers

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python bench/compile.py
	$(BIN)/python bench/slack_sign.py
	$(BIN)/python bench/matrix_sign.py
	$(BIN)/python bench/memory.py

clean:
	rm -rf $(VENV) out *.db *.db-wal *.db-shm
