# Two entry points (see README): `make build TARGET=watch` and `make test`.
# Both create .venv and install the project on first use (re-install when pyproject.toml changes).
PYTHON ?= python3.11
VENV   ?= .venv
TARGET ?= watch
ARGS   ?=

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c requirements.lock -e ".[test]"
	touch $@

.PHONY: install build test
install: $(VENV)/.installed

build: $(VENV)/.installed
	$(VENV)/bin/pipeline build --target $(TARGET) $(ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check pipeline tests examples
	$(VENV)/bin/python -m pytest -q $(ARGS)
