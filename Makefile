# `make demo`: install, fetch the demo videos, build the demo dataset, bench the shipped LDEQ with and without RwR
# and the UNet baseline with an EMA sweep, and write the report to runs/demo/report/index.html.
PYTHON ?= python3

.PHONY: demo test install

install:
	$(PYTHON) -m pip install -e .

demo: install
	wflwv demo run --out runs/demo

test:
	$(PYTHON) -m pip install -e '.[test]'
	$(PYTHON) -m pytest -q
