# Keel: the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit proto bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m keel.localfleet --state-dir .keel --workload examples/web.yaml

# The suite runs promtool on deploy/prometheus/ (tests/unit/test_prometheus_rules.py);
# ensure-promtool installs it from Debian's prometheus package where it can, else says how.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	sh deploy/prometheus/ensure-promtool
	$(PY) -m pytest -q -p no:cacheprovider

proto: $(STAMP)
	$(PY) -m keel.protogen

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .keel
