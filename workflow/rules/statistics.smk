# Every table row against its baseline: differences with confidence intervals from a
# paired bootstrap over test images and seeds, computed once from the per-run records of
# each row's runs (a tuned row's: its chosen candidate's); the tables and figures rules
# read the result.
COMPARISONS = "results/tables/comparisons.csv"


rule compare:
    input:
        plan="results/plan_selected.json",
        metrics=expand("results/runs/{run}/metrics.json", run=EVALUATED),
        records=expand("results/runs/{run}/eval_images.npz", run=EVALUATED),
    output:
        report(
            COMPARISONS,
            caption="../report/comparisons.rst",
            category="Tables",
            subcategory="comparisons",
            labels={"table": "comparisons", "format": "csv"},
        ),
    log:
        "results/logs/compare/compare.log",
    threads: res("aggregate", "threads")
    resources:
        mem_mb=res("aggregate", "mem_mb"),
        runtime=runtime_with_retries("aggregate"),
        gpu=0,
    conda:
        "../../envs/eiou.yaml"
    shell:
        "python -m eiou.cli compare --plan {input.plan} --runs-dir results/runs"
        " --output {output} --threads {threads} > {log} 2>&1"
