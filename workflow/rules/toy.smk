# The paper's toy experiments (Figs 3-5): no data, no training.


rule toy:
    output:
        TOY_TABLES,
    log:
        "results/logs/toy/toy.log",
    conda:
        "../../envs/eiou.yaml"
    threads: res("toy", "threads")
    resources:
        mem_mb=res("toy", "mem_mb"),
        runtime=runtime("toy"),
        gpu=res("toy", "gpu"),
        nodes=1,
    params:
        options=option_args(config["toy"]["options"]),
    shell:
        "OMP_NUM_THREADS={threads} python -m eiou.cli toy --output results/toy {params.options} > {log} 2>&1"


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
    conda:
        "../../envs/eiou.yaml"
    threads: res("aggregate", "threads")
    resources:
        mem_mb=res("aggregate", "mem_mb"),
        runtime=runtime("aggregate"),
        gpu=0,
        nodes=1,
    shell:
        "python -m eiou.cli figures --toy-dir results/toy --output reports/figures > {log} 2>&1"
