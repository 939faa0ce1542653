# The eiou reproduction workflow: toy figures, data -> train -> predict -> evaluate ->
# tables -> figures -> report. Presets live in config/ (mini is the default); rules in
# workflow/rules/; every rule calls one `eiou` verb. See README.md for the commands.
from snakemake.utils import min_version

min_version("8.20")


# The default preset, unless --configfile names another one (a preset is never merged
# into another: --configfile config/smoke.yaml runs the smoke preset alone).
if "preset" not in config:

    configfile: f"{workflow.basedir}/config/mini.yaml"


include: "workflow/rules/common.smk"


# With --software-deployment-method apptainer every job runs in this image (built from
# envs/eiou.def, the same pins as envs/eiou.yaml); other methods ignore it.
container: config["container"]


include: "workflow/rules/toy.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tuning.smk"
include: "workflow/rules/rescore.smk"
include: "workflow/rules/statistics.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        final_outputs(),
