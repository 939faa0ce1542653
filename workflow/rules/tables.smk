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
            (
                report(
                    path,
                    caption="../report/tables.rst",
                    category="Tables",
                    subcategory=Path(path).stem,
                    labels={"table": Path(path).stem, "format": Path(path).suffix[1:]},
                )
                if path.endswith(".csv")
                else path
            )
            for path in TABLE_FILES
        ],
    log:
        "results/logs/tables/tables.log",
    conda:
        "../../envs/eiou.yaml"
    threads: res("aggregate", "threads")
    resources:
        mem_mb=res("aggregate", "mem_mb"),
        runtime=runtime("aggregate"),
        gpu=0,
        nodes=1,
    shell:
        "python -m eiou.cli tables --plan {input.plan} --runs-dir results/runs"
        " --comparisons {input.comparisons} --output results/tables > {log} 2>&1"


rule figures:
    input:
        plan="results/plan_selected.json",
        runs="results/tables/runs.csv",
        comparisons=COMPARISONS,
        # a finished training (its train_log.jsonl is complete; the log itself is not a
        # declared output, so that retries and resumes never delete it)
        models=expand("results/runs/{run}/model_final.pth", run=RUNS),
    output:
        [
            report(
                path,
                caption="../report/figures.rst",
                category="Figures",
                subcategory=outputs.figure_kind(path),
                labels={"figure": Path(path).stem, "format": Path(path).suffix[1:]},
            )
            for path in FIGURE_FILES
        ],
    log:
        "results/logs/figures/figures.log",
    conda:
        "../../envs/eiou.yaml"
    threads: res("aggregate", "threads")
    resources:
        mem_mb=res("aggregate", "mem_mb"),
        runtime=runtime("aggregate"),
        gpu=0,
        nodes=1,
    shell:
        "python -m eiou.cli figures --plan {input.plan} --runs-dir results/runs"
        " --comparisons {input.comparisons} --output reports/figures > {log} 2>&1"
