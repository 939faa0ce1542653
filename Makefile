# Two commands on a fresh clone (see README.md):
#   make reproduce   the main job: the whole pipeline on the embedded default (mini preset)
#   make test        the test suite
# Both create the virtual environment in .venv on first use and reuse it afterwards.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
PRESET ?= mini

.PHONY: reproduce test lint venv clean-results

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

# ruff (Python), snakemake --lint (workflow best practices), snakefmt (workflow format)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow

clean-results:
	rm -rf results/* reports/* .snakemake
