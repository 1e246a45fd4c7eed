# Set-up and entry points. Needs only Python 3.11 (or 3.10+) on the PATH; everything else goes into .venv.
#   make demo   install, then train induction heads on the CPU and print its length-extrapolation table
#   make test   install, then run the test suite (what CI runs: .ci/run)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin
PYTEST_ARGS ?= -m "not slow" -q

.PHONY: install demo test test-all clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $@

demo: install
	$(BIN)/seqmamba run task=induction_heads

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# also the slow tests (training to the accuracy targets; several minutes on a laptop CPU)
test-all: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
