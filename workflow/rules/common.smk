# Shared helpers: config validation, the experiment plan, resources and output lists.
# All logic lives in the eiou library (eiou.experiments, eiou.outputs, eiou.schemas); this
# file only adapts it to Snakemake. Parsing imports neither torch nor pandas: the driver
# and every job parse this file, and a job's own command imports what it needs.
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from eiou import experiments, outputs, schemas

# The preset is checked against the package's schema (eiou/schemas/preset.schema.yaml),
# which also fills in the defaults; an error names the offending key. Values typed on the
# command line (--config check_data_roots=false seeds=3) arrive as strings where Snakemake
# does not recognise them; they are read as YAML where the schema wants another type.
# Relative dataset paths resolve against the (last) preset file's folder.
try:
    config.update(
        experiments.validate_config(
            schemas.coerce_strings(config, "preset"),
            base_dir=experiments.preset_folder(
                workflow.configfiles, f"{workflow.basedir}/config"
            ),
        )
    )
except experiments.ConfigError as err:
    raise WorkflowError(str(err)) from None

# The plan: every unique run (content-hashed id) and every table row. Missing dataset
# roots, and roots without the expected layout, fail here, before any job is scheduled.
try:
    PLAN = experiments.build_plan(config)
except experiments.ConfigError as err:
    raise WorkflowError(str(err)) from None

# Every rule calls `python -m eiou.cli <verb>`. With --software-deployment-method conda or
# apptainer, the rule's environment (envs/eiou.yaml, or the image built from
# envs/eiou.def) provides python and the checkout provides eiou (PYTHONPATH); otherwise
# the Python running Snakemake (e.g. .venv) is first on PATH, activated or not.
#
# Preemption where the cluster cancels preempted jobs (PreemptMode=CANCEL): the SLURM
# plugin never reports a PREEMPTED job as failed, it waits for it, forever. So a job that
# SLURM stops for preemption (its PreemptTime is set; a timeout or an scancel leaves it
# unset) requeues itself on the way out: it starts again later and resumes. Outside SLURM,
# or where scontrol is missing, the trap only exits.
# (shell.prefix formats its text like a shell command: braces are doubled.)
REQUEUE_IF_PREEMPTED = (
    'trap \'if [ -n "${{SLURM_JOB_ID:-}}" ] && scontrol show job "$SLURM_JOB_ID" 2>/dev/null'
    ' | grep -q "PreemptTime=[0-9]"; then scontrol requeue "$SLURM_JOB_ID" || true; fi;'
    " exit 143' TERM; "
)
DEPLOYMENT = {str(m).lower() for m in workflow.deployment_settings.deployment_method}
if any("conda" in m or "apptainer" in m or "singularity" in m for m in DEPLOYMENT):
    shell.prefix(
        "set -euo pipefail; "
        + REQUEUE_IF_PREEMPTED
        + f"export PYTHONPATH={shlex.quote(workflow.basedir)}"
        + "${{PYTHONPATH:+:$PYTHONPATH}}; "
    )
else:
    shell.prefix(
        "set -euo pipefail; "
        + REQUEUE_IF_PREEMPTED
        + f"export PATH={shlex.quote(os.path.dirname(sys.executable))}:$PATH; "
    )


def pinned_cuda_version(env_file):
    """The CUDA version an environment file pins (``cuda-version=12.6``), or None."""
    import yaml

    for dep in yaml.safe_load(Path(env_file).read_text())["dependencies"]:
        name, _, version = str(dep).partition("=")
        if name.strip() == "cuda-version":
            return version.strip("=* ")
    return None


# conda-forge's CUDA builds of pytorch need the __cuda virtual package, which a login node
# without a GPU lacks: declare the CUDA version that envs/eiou.yaml pins.
if any("conda" in m for m in DEPLOYMENT):
    os.environ.setdefault(
        "CONDA_OVERRIDE_CUDA", pinned_cuda_version(f"{workflow.basedir}/envs/eiou.yaml")
    )

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


def runtime(rule_name, resumable=False):
    """Runtime request in minutes of each attempt (eiou.experiments.runtime_request)."""
    minutes, cap = res(rule_name, "runtime"), RESOURCES["max_runtime"]
    return lambda wildcards, attempt: experiments.runtime_request(
        minutes, attempt, cap, resumable=resumable
    )


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

    problems = [
        f"run {rid}: {p}" for rid, spec in runs.items() for p in check_run_config(spec)
    ]
    if problems:
        raise WorkflowError(
            "invalid runs (nothing was trained):\n  " + "\n  ".join(problems)
        )


def option_args(options):
    """`--key value` arguments (underscores become dashes), shell-quoted."""
    return shlex.join(experiments.option_arguments(options))


TABLE_FILES = outputs.expected_table_files(PLAN, "results/tables")
FIGURE_FILES = outputs.expected_figures(PLAN, "reports/figures")
TOY_TABLES = [f"results/toy/{name}" for name in outputs.TOY_TABLES]
TOY_FIGURES = outputs.expected_toy_figures("reports/figures") if TOY else []


def final_outputs():
    """The targets of the workflow: the report (which needs everything else) and the
    COCO evaluation server's upload of server-scored runs."""
    out = ["reports/summary.md", *TABLE_FILES, *FIGURE_FILES, *TOY_FIGURES]
    out += [f"results/runs/{rid}/test-dev_upload.zip" for rid in SERVER_SCORED]
    return out
