# lossbench — the two commands a user needs:
#   make compare   train every loss of experiments/default.yaml and write reports/default/
#   make test      run the test suite
# Each target creates .venv (and reinstalls into it) when it is missing or older than
# pyproject.toml / constraints.txt.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= experiments/default.yaml
REPORT ?= reports/default
OUT    ?= runs/default
ARGS   ?=
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: install test compare report bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; run 'make PYTHON=python3 ...' with a Python >= 3.10"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	-$(PY) -m pip install --quiet --upgrade pip  # optional: the bundled pip also works
	$(PY) -m pip install -c constraints.txt -e ".[dev,bench]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

compare: $(STAMP)
	$(VENV)/bin/lossbench compare --config $(CONFIG) --out $(OUT) --report $(REPORT) $(ARGS)

report: $(STAMP)
	$(VENV)/bin/lossbench report --out $(OUT) --report $(REPORT)

bench: $(STAMP)
	$(PY) -m lossbench.bench --report reports/bench $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
