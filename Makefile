# The two commands of the README: `make run` and `make test`.
# Both create .venv on first use; re-running is fast when pyproject.toml is unchanged.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/miml-scene
OUT ?= runs/default
ARGS ?=

.PHONY: run test install install-test clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test,lite2]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(VENV)/bin/scenetag run --data $(DATA) --out $(OUT) $(ARGS)

# pytest exits 5 when it collects no test: that fails here like any other error.
test: install-test
	$(PY) -m pytest -q $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
