# The README's two commands are `make run` and `make test`; each sets up what it needs first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.anomrec-installed

.PHONY: run test lint bench broker clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	@touch $(STAMP)

run: $(STAMP)     ## the processor, embedded on the bundled sample stream (no broker needed)
	$(BIN)/anomrec run

test: $(STAMP)    ## the whole suite, against a real Kafka broker that it obtains itself
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	@for script in benchmarks/[!_]*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

broker: $(STAMP)  ## a local Apache Kafka on 127.0.0.1:9092, in the foreground
	$(BIN)/anomrec broker

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
