# Two commands on a fresh clone (see README.md):
#   make reproduce   the main job: the whole pipeline on the embedded default (mini preset)
#   make test        the test suite
#   make mutate      mutation testing of the core modules (hours; before a release, not in CI);
#                    MUTANTS='eiou.metrics.*' runs one module's mutants
# Both create the virtual environment in .venv on first use and reuse it afterwards.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
PRESET ?= mini
MUTANTS ?=

.PHONY: reproduce test lint mutate venv clean-results

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[workflow,test]' --config-settings editable_mode=compat
	touch $(STAMP)

reproduce: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/$(PRESET).yaml --report-after-run \
		--report reports/report.html

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Each mutant of eiou/{metrics,losses,coders,heads,scoring,evaluate}.py runs against the unit
# tests that reach it ([tool.mutmut] in pyproject.toml), with a fixed set of hypothesis
# examples; reruns only what changed. Summary: python benchmarks/mutation_report.py
mutate: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[workflow,test,mutate]' --config-settings editable_mode=compat
	HYPOTHESIS_PROFILE=mutate nice -n 15 $(BIN)/mutmut run $(MUTANTS)
	$(BIN)/python benchmarks/mutation_report.py

# ruff (Python), snakemake --lint (workflow best practices), snakefmt (workflow format)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow

clean-results:
	rm -rf results/* reports/* .snakemake
