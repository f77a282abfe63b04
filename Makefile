# Keel: the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST := $(PY) -m pytest -q -p no:cacheprovider

.PHONY: run test lint typecheck layers promtool alertmanager unit proto bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m keel.localfleet --state-dir .keel --workload examples/web.yaml $(if $(REPLICAS),--replicas $(REPLICAS))

# The whole suite: the static checks first (quick, and they name the line), then every test.
# The tests spend most of their time waiting on the processes they start, so two pytest
# workers (pytest-xdist; each its own Postgres, servers on ports the kernel picks) take about
# half the time even on two cores; a file's tests stay together, in one worker, in order.
# `make test XDIST=` runs them in one process.
XDIST ?= -n 2 --dist loadfile
test: lint typecheck layers promtool alertmanager
	$(PYTEST) $(XDIST)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The import-layering contracts in pyproject.toml ([tool.importlinter]).
layers: $(STAMP)
	$(VENV)/bin/lint-imports

# tests/unit/test_prometheus_rules.py runs promtool on deploy/prometheus/; ensure-promtool
# installs it from Debian's prometheus package where it can, else says how.
promtool:
	sh deploy/prometheus/ensure-promtool

# amtool check-config on deploy/alertmanager/ and the end-to-end deploy-freeze webhook test use
# Alertmanager; ensure-alertmanager installs Debian's prometheus-alertmanager where it can (as
# root with apt-get), else says how (those tests then skip, saying why).
alertmanager:
	sh deploy/alertmanager/ensure-alertmanager

unit: $(STAMP) promtool
	$(PYTEST) tests/unit

proto: $(STAMP)
	$(PY) -m keel.protogen

# Every scenario of the scale issue with a hollow fleet (about 12 minutes on 2 cores); QUICK=1
# runs a small version (under 2 minutes). More flags in ARGS (`$(PY) -m bench --help`), e.g.
# `make bench ARGS="--only 2,5 --keep"`.
bench: $(STAMP)
	$(PY) -m bench $(if $(QUICK),--profile quick) $(ARGS)

clean:
	rm -rf $(VENV) .keel .import_linter_cache
