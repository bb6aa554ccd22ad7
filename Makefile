# The two commands a fresh clone needs (README): `make demo` and `make test`.
# Each creates the virtual environment on first use and checks the system packages.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test system-packages clean

demo: $(STAMP) system-packages
	$(BIN)/edgetune demo $(DEMO_ARGS)

test: $(STAMP) system-packages
	$(BIN)/python -m pytest $(PYTEST_ARGS)

system-packages:
	@scripts/ensure-system-packages espeak-ng mosquitto

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
