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
OUT    ?=
REPORT ?=
ARGS   ?=
# Runs go to runs/<suite> and the report to reports/<suite> (<suite>: the config's suite name, else
# its file name) unless OUT / REPORT say otherwise. W&B logs online for a logged-in user (wandb
# login or WANDB_API_KEY), offline otherwise; WANDB_MODE or the config's wandb.mode decide if set.
export WANDB_SILENT ?= true
FOLDERS = $(if $(OUT),--out $(OUT)) $(if $(REPORT),--report $(REPORT))

.PHONY: install test test-slurm compare report probe tune bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; run 'make PYTHON=python3 ...' with a Python >= 3.10"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	-$(PY) -m pip install --quiet --upgrade pip  # optional: the bundled pip also works
	$(PY) -m pip install -c constraints.txt -e ".[dev,bench,volumes]"
	touch $(STAMP)

# Two pytest workers, each taking the next test when it is free (the slow tests mostly wait on one
# run process: two of them keep both cores of a 2-core machine busy).
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist worksteal --durations=15

# The SLURM tests on a one-node cluster of this machine (root; installs slurm-wlm and munge if missing).
test-slurm: $(STAMP)
	scripts/slurm-up.sh
	$(PY) -m pytest -q -m slurm

compare: $(STAMP)
	$(VENV)/bin/lossbench compare --config $(CONFIG) $(FOLDERS) $(ARGS)

report: $(STAMP)
	$(VENV)/bin/lossbench report --config $(CONFIG) $(FOLDERS)

# Does the default comparison hold with 3× the training? Five of its losses, seed 0, at 8 and 24
# epochs, compared by the report per budget (flag budget-bound): reports/default-probe/. ~7 min on 2 cores.
probe: $(STAMP)
	$(VENV)/bin/lossbench compare --config experiments/default.yaml --losses ce,dice,focal,generalized_dice,lovasz_softmax \
		--set 'seeds=[0]' 'budgets=[8, 24]' 'race=null' --out runs/default-probe --report reports/default-probe $(ARGS)

# A fair fight: every loss of the default suite searched over the learning rate and its own parameters
# with the same budget, selected on validation, judged on test beside its default settings: reports/tuned/.
tune: $(STAMP)
	$(VENV)/bin/lossbench compare --config experiments/tuned.yaml $(FOLDERS) $(ARGS)

bench: $(STAMP)
	$(PY) -m lossbench.bench --report reports/bench $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
