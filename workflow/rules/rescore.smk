# Scoring without retraining: every run with an IoU head (and local ground truth) also
# records its candidates when it predicts; `eiou rescore` applies each scoring method to
# them and `eiou evaluate` scores each result. The tables rule puts them side by side
# (results/tables/scoring.csv|md).
from eiou import rescoring

RESCORED = rescoring.rescored_runs(PLAN)
RESCORED_METRICS = rescoring.rescored_metrics_files(PLAN)
SCORING_METHODS = rescoring.scoring_methods()


# `eiou predict` of an IoU-head run, also writing candidates.pt (the same network pass).
use rule predict as predict_with_candidates with:
    output:
        predictions="results/runs/{run}/predictions.json",
        candidates="results/runs/{run}/candidates.pt",
    log:
        "results/logs/predict_with_candidates/{run}.log",
    wildcard_constraints:
        run="|".join(RESCORED) or "(?!)",
    params:
        candidates=lambda wildcards, output: f" --candidates {output.candidates}",


ruleorder: predict_with_candidates > predict


rule rescore:
    input:
        spec="results/runs/{run}/run.yaml",
        candidates="results/runs/{run}/candidates.pt",
    output:
        expand(
            "results/runs/{{run}}/rescored/{method}/{file}",
            method=SCORING_METHODS,
            file=("predictions.json", "run.yaml"),
        ),
    log:
        "results/logs/rescore/{run}.log",
    conda:
        "../../envs/eiou.yaml"
    threads: res("evaluate", "threads")
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        runtime=runtime("evaluate"),
        gpu=0,
        nodes=1,
    params:
        out=lambda wildcards: f"{run_dir(wildcards.run)}/rescored",
    shell:
        "OMP_NUM_THREADS={threads} python -m eiou.cli rescore --config {input.spec}"
        " --candidates {input.candidates} --output {params.out} > {log} 2>&1"


# The same evaluation as a run's own predictions; run.yaml names the method, so the
# provenance of each metrics.json does too.
use rule evaluate as evaluate_rescored with:
    input:
        spec="results/runs/{run}/rescored/{method}/run.yaml",
        data=run_dataset,
        predictions="results/runs/{run}/rescored/{method}/predictions.json",
    output:
        metrics="results/runs/{run}/rescored/{method}/metrics.json",
        records="results/runs/{run}/rescored/{method}/eval_images.npz",
    log:
        "results/logs/evaluate_rescored/{run}/{method}.log",
    benchmark:
        "results/benchmarks/evaluate_rescored/{run}/{method}.tsv"
    wildcard_constraints:
        method="|".join(SCORING_METHODS),
