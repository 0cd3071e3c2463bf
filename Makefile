# Shortcuts for the commands in README.md and docs/development.md.
#   make demo       install with the demo extra, then fetch, build, bench and report (runs/demo/report/index.html)
#   make test       install with the test extra, then the whole suite (what CI runs, without the lint)
#   make test-fast  the fast loop: every test not marked slow
#   make lint       ruff check and format check (as CI);  make format  fix what ruff can
PYTHON ?= python3

.PHONY: install demo test test-fast lint format

install:
	$(PYTHON) -m pip install -e .

demo:
	$(PYTHON) -m pip install -e '.[demo]'
	wflwv demo run --out runs/demo

test:
	$(PYTHON) -m pip install -e '.[test]'
	$(PYTHON) -m pytest -q

test-fast:
	$(PYTHON) -m pytest -q -m "not slow"

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .
