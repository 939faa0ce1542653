# The Markdown summary; `snakemake --report reports/report.html` (or
# --report-after-run) turns the outputs marked with report() into the HTML report.


rule report:
    input:
        plan="results/plan_selected.json",
        tables=TABLE_FILES,
        figures=FIGURE_FILES,
        toy_figures=TOY_FIGURES,
    output:
        "reports/summary.md",
    log:
        "results/logs/report/report.log",
    threads: res("aggregate", "threads")
    resources:
        mem_mb=res("aggregate", "mem_mb"),
        runtime=runtime_with_retries("aggregate"),
        gpu=0,
    conda:
        "../../envs/eiou.yaml"
    shell:
        "python -m eiou.cli report --plan {input.plan} --tables-dir results/tables"
        " --figures-dir reports/figures --output {output} > {log} 2>&1"
