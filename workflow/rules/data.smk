# Prepare each dataset once: generate (synthetic) or convert (VOC, COCO) to COCO JSON.


rule prepare_data:
    output:
        directory("results/data/{dataset}"),
    log:
        "results/logs/prepare_data/{dataset}.log",
    conda:
        "../../envs/eiou.yaml"
    threads: res("prepare_data", "threads")
    resources:
        mem_mb=res("prepare_data", "mem_mb"),
        runtime=runtime("prepare_data"),
        gpu=res("prepare_data", "gpu"),
        nodes=1,
    params:
        args=lambda wildcards: shlex.join(
            experiments.data_arguments(DATASETS[wildcards.dataset])
        ),
    shell:
        "python -m eiou.cli data {params.args} > {log} 2>&1"
