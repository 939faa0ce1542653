# Gather every metrics.json into one frame; build each table (paper numbers beside, the
# differences to the baseline with their intervals from the compare rule).


rule tables:
    input:
        plan="results/plan_selected.json",
        metrics=expand("results/runs/{run}/metrics.json", run=EVALUATED),
        comparisons=COMPARISONS,
        rescored=RESCORED_METRICS,
    output:
        [
            report(
                path,
                caption="../report/tables.rst",
                category="Tables",
                subcategory=Path(path).stem,
                labels={"table": Path(path).stem, "format": Path(path).suffix[1:]},
            )
            if path.endswith(".csv")
            else path
            for path in TABLE_FILES
        ],
    log:
        "results/logs/tables/tables.log",
    threads: res("aggregate", "threads")
    resources:
        mem_mb=res("aggregate", "mem_mb"),
        runtime=runtime_with_retries("aggregate"),
        gpu=0,
    conda:
        "../../envs/eiou.yaml"
    shell:
        "python -m eiou.cli tables --plan {input.plan} --runs-dir results/runs"
        " --comparisons {input.comparisons} --out-dir results/tables > {log} 2>&1"


rule figures:
    input:
        plan="results/plan_selected.json",
        runs="results/tables/runs.csv",
        comparisons=COMPARISONS,
        train_logs=expand("results/runs/{run}/train_log.jsonl", run=RUNS),
    output:
        [
            report(
                path,
                caption="../report/figures.rst",
                category="Figures",
                subcategory=figures.figure_kind(path),
                labels={"figure": Path(path).stem, "format": Path(path).suffix[1:]},
            )
            for path in FIGURE_FILES
        ],
    log:
        "results/logs/figures/figures.log",
    threads: res("aggregate", "threads")
    resources:
        mem_mb=res("aggregate", "mem_mb"),
        runtime=runtime_with_retries("aggregate"),
        gpu=0,
    conda:
        "../../envs/eiou.yaml"
    shell:
        "python -m eiou.cli figures --plan {input.plan} --runs-dir results/runs"
        " --comparisons {input.comparisons} --out-dir reports/figures > {log} 2>&1"
