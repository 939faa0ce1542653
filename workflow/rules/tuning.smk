# Tuning on equal terms: the candidate runs of a tuned table are also predicted and scored
# on the validation split held out of their training data; `select` chooses each row's
# candidate from those validation metrics alone (its inputs hold no test metrics) and
# writes the plan the tables, figures and report read. Without a tuned table it copies the
# plan.


rule predict_val:
    input:
        spec="results/runs/{run}/run.yaml",
        data=run_dataset,
        model="results/runs/{run}/model_final.pth",
    output:
        "results/runs/{run}/predictions_val.json",
    log:
        "results/logs/predict_val/{run}.log",
    threads: res("predict", "threads")
    resources:
        mem_mb=res("predict", "mem_mb"),
        runtime=runtime_with_retries("predict"),
        gpu=res("predict", "gpu"),
    conda:
        "../../envs/eiou.yaml"
    shell:
        "OMP_NUM_THREADS={threads} python -m eiou.cli predict --config {input.spec}"
        " --checkpoint {input.model} --split val --output {output} --no-progress > {log} 2>&1"


rule evaluate_val:
    input:
        spec="results/runs/{run}/run.yaml",
        data=run_dataset,
        predictions="results/runs/{run}/predictions_val.json",
    output:
        metrics="results/runs/{run}/metrics_val.json",
        records="results/runs/{run}/eval_images_val.npz",
    log:
        "results/logs/evaluate_val/{run}.log",
    threads: res("evaluate", "threads")
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        runtime=runtime_with_retries("evaluate"),
        gpu=res("evaluate", "gpu"),
    conda:
        "../../envs/eiou.yaml"
    shell:
        "python -m eiou.cli evaluate --run-config {input.spec} --split val"
        " --predictions {input.predictions} --output {output.metrics}"
        " --image-records {output.records} > {log} 2>&1"


rule select:
    input:
        plan="results/plan.json",
        validation=expand("results/runs/{run}/metrics_val.json", run=VALIDATED),
    output:
        "results/plan_selected.json",
    log:
        "results/logs/select/select.log",
    threads: res("aggregate", "threads")
    resources:
        mem_mb=res("aggregate", "mem_mb"),
        runtime=runtime_with_retries("aggregate"),
        gpu=0,
    conda:
        "../../envs/eiou.yaml"
    shell:
        "python -m eiou.cli select --plan {input.plan} --runs-dir results/runs"
        " --output {output} > {log} 2>&1"
