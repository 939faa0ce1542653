# Shared helpers: config validation, the experiment plan, resources and output lists.
# All logic lives in the eiou library (eiou.experiments, eiou.figures); this file only
# adapts it to Snakemake.
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from eiou import evaluate, experiments, figures, tables

# The preset is checked against the package's schema (eiou/schemas/preset.schema.yaml),
# which also fills in the defaults; an error names the offending key. Relative dataset
# paths resolve against the preset file's folder.
try:
    config.update(
        experiments.validate_config(
            config,
            base_dir=experiments.preset_folder(
                workflow.configfiles, f"{workflow.basedir}/config"
            ),
        )
    )
except experiments.ConfigError as err:
    raise WorkflowError(str(err)) from None

# The plan: every unique run (content-hashed id) and every table row. Missing dataset
# roots fail here, before any job is scheduled.
try:
    PLAN = experiments.build_plan(config)
except experiments.ConfigError as err:
    raise WorkflowError(str(err)) from None

# Every rule calls `python -m eiou.cli <verb>`. With --software-deployment-method conda
# the rule's environment (envs/eiou.yaml) provides python and the checkout provides eiou;
# otherwise the Python running Snakemake (e.g. .venv) is first on PATH, activated or not.
if any("conda" in str(m).lower() for m in workflow.deployment_settings.deployment_method):
    shell.prefix(
        "set -euo pipefail; "
        f"export PYTHONPATH={shlex.quote(workflow.basedir)}${{PYTHONPATH:+:$PYTHONPATH}}; "
    )
else:
    shell.prefix(
        f"set -euo pipefail; export PATH={shlex.quote(os.path.dirname(sys.executable))}:$PATH; "
    )
EIOU = "python -m eiou.cli"

RUNS = PLAN["runs"]
EVALUATED = experiments.evaluated_runs(PLAN)
VALIDATED = experiments.validated_runs(PLAN)
SERVER_SCORED = [rid for rid in RUNS if rid not in EVALUATED]
DATASETS = PLAN["datasets"]
TOY = config["toy"]["enabled"]
RESOURCES = config["resources"]


wildcard_constraints:
    run="[A-Za-z0-9_-]+",
    dataset="[A-Za-z0-9_]+",


localrules:
    all,
    plan,
    run_spec,
    select,
    server_results,


def res(rule_name, key):
    """One resource of one rule, from the config (schema defaults filled in)."""
    return RESOURCES[rule_name][key]


def runtime_with_retries(rule_name):
    """Runtime in minutes, doubled on each retry (--retries N) after a timeout."""
    return lambda wildcards, attempt: res(rule_name, "runtime") * 2 ** (attempt - 1)


def launcher(wildcards, resources):
    """`python -m eiou.cli`, or `torchrun --nproc_per_node N -m eiou.cli` for N > 1 GPUs."""
    gpus = int(resources.get("gpu", 0) or 0)
    if gpus > 1:
        return f"torchrun --standalone --nproc_per_node {gpus} -m eiou.cli"
    return EIOU


def run_dir(run):
    return f"results/runs/{run}"


def run_dataset(wildcards):
    """The prepared-data folder a run reads."""
    return f"results/data/{RUNS[wildcards.run]['data']['name']}"


def dataset_ground_truth(wildcards):
    """The COCO ground truth of a run's test split (written by `eiou data`)."""
    data = RUNS[wildcards.run]["data"]
    return f"results/data/{data['name']}/{data['test_split']}.json"


def write_logged(writer, path, obj, log_path):
    """Write ``obj`` to ``path`` with ``writer`` and note it in the job's log."""
    writer(path, obj)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    Path(log_path).write_text(f"wrote {path}\n")


def check_runs_deeply(runs):
    """Build each run's losses once; raise one WorkflowError listing every problem."""
    from eiou.config import check_run_config

    problems = [f"run {rid}: {p}" for rid, spec in runs.items() for p in check_run_config(spec)]
    if problems:
        raise WorkflowError("invalid runs (nothing was trained):\n  " + "\n  ".join(problems))


def option_args(options):
    """`--key value` arguments (underscores become dashes), shell-quoted."""
    return " ".join(
        f"--{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in options.items()
    )


TABLE_FILES = tables.expected_files(PLAN, "results/tables")
FIGURE_FILES = figures.expected_figures(PLAN, "reports/figures")
TOY_TABLES = [f"results/toy/{name}" for name in figures.TOY_TABLES]
TOY_FIGURES = figures.expected_toy_figures("reports/figures") if TOY else []


def final_outputs():
    """The targets of the workflow: the report (which needs everything else) and the
    COCO evaluation server's upload of server-scored runs."""
    out = ["reports/summary.md", *TABLE_FILES, *FIGURE_FILES, *TOY_FIGURES]
    out += [f"results/runs/{rid}/test-dev_upload.zip" for rid in SERVER_SCORED]
    return out
