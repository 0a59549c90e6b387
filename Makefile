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

# Every bench runs even after one misses its target; make fails if any did.
bench: $(STAMP)
	@status=0; \
	for name in compile copies slack_sign matrix_sign memory; do \
		echo "== bench/$$name.py"; \
		$(BIN)/python bench/$$name.py || { echo "== bench/$$name.py: MISS (exit $$?)"; status=1; }; \
	done; \
	exit $$status

clean:
	rm -rf $(VENV) out *.db *.db-wal *.db-shm
