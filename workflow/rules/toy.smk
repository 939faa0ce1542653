# The paper's toy experiments (Figs 3-5): no data, no training.


rule toy:
    output:
        TOY_TABLES,
    log:
        "results/logs/toy/toy.log",
    params:
        options=option_args(config["toy"]["options"]),
    threads: res("toy", "threads")
    resources:
        mem_mb=res("toy", "mem_mb"),
        runtime=runtime_with_retries("toy"),
        gpu=res("toy", "gpu"),
    conda:
        "../../envs/eiou.yaml"
    shell:
        "OMP_NUM_THREADS={threads} python -m eiou.cli toy --out-dir results/toy {params.options} > {log} 2>&1"


rule figures_toy:
    input:
        TOY_TABLES,
    output:
        [
            report(
                path,
                caption="../report/toy.rst",
                category="Toy experiments",
                labels={"figure": Path(path).stem, "format": Path(path).suffix[1:]},
            )
            for path in TOY_FIGURES
        ],
    log:
        "results/logs/figures_toy/figures_toy.log",
    threads: res("aggregate", "threads")
    resources:
        mem_mb=res("aggregate", "mem_mb"),
        runtime=runtime_with_retries("aggregate"),
        gpu=0,
    conda:
        "../../envs/eiou.yaml"
    shell:
        "python -m eiou.cli figures --toy-dir results/toy --out-dir reports/figures > {log} 2>&1"
