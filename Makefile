# The two commands a fresh clone needs (README): `make demo` and `make test`.
# Each creates the virtual environment on first use and checks the system packages.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test clean

# espeak-ng synthesises speech, mosquitto is the MQTT broker; the tests also drive the
# dashboard in a headless Chromium.
demo: $(STAMP)
	@scripts/ensure-system-packages espeak-ng mosquitto
	$(BIN)/edgetune demo $(DEMO_ARGS)

test: $(STAMP)
	@scripts/ensure-system-packages espeak-ng mosquitto chromium alsa-utils
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
