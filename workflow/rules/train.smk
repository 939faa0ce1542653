# One run spec per unique run; training resumes from results/runs/<run>/checkpoints/,
# which is deliberately NOT a declared output: Snakemake never deletes it, so a job that
# was preempted or timed out continues where it stopped when rerun (--retries N does this
# automatically; the runtime request doubles on each attempt).


# Writing the plan also builds every run's losses once (eiou.config.check_run_config), so
# an option the core rejects (SOT on smooth-L1, a dotted path that does not import) stops
# the workflow before any run spec, and so any training, exists.
rule plan:
    output:
        "results/plan.json",
    log:
        "results/logs/plan/plan.log",
    params:
        plan=PLAN,
    run:
        check_runs_deeply(params.plan["runs"])
        write_logged(experiments.write_plan, output[0], params.plan, log[0])


# A shell rule, not `run:`: Snakemake spawns a whole new Snakemake process for each `run:`
# job, seconds apiece. The spec's text is a param, so a changed spec reruns the run.
rule run_spec:
    input:
        ancient("results/plan.json"),
    output:
        "results/runs/{run}/run.yaml",
    log:
        "results/logs/run_spec/{run}.log",
    params:
        text=lambda wildcards: experiments.run_spec_text(RUNS[wildcards.run]),
    conda:
        "../../envs/eiou.yaml"
    shell:
        "printf '%s' {params.text:q} > {output}.tmp && mv {output}.tmp {output}"
        " && echo 'wrote {output}' > {log}"


rule train:
    input:
        spec="results/runs/{run}/run.yaml",
        data=run_dataset,
    output:
        model="results/runs/{run}/model_final.pth",
        train_log="results/runs/{run}/train_log.jsonl",
    log:
        "results/logs/train/{run}.log",
    params:
        launch=launcher,
        out=lambda wildcards: run_dir(wildcards.run),
    threads: res("train", "threads")
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=runtime_with_retries("train"),
        gpu=res("train", "gpu"),
    conda:
        "../../envs/eiou.yaml"
    shell:
        "OMP_NUM_THREADS={threads} {params.launch} train --config {input.spec}"
        " --output-dir {params.out} > {log} 2>&1"


rule predict:
    input:
        spec="results/runs/{run}/run.yaml",
        data=run_dataset,
        model="results/runs/{run}/model_final.pth",
    output:
        predictions="results/runs/{run}/predictions.json",
    log:
        "results/logs/predict/{run}.log",
    params:
        launch=launcher,
        candidates="",  # IoU-head runs: see predict_with_candidates (rescore.smk)
    threads: res("predict", "threads")
    resources:
        mem_mb=res("predict", "mem_mb"),
        runtime=runtime_with_retries("predict"),
        gpu=res("predict", "gpu"),
    conda:
        "../../envs/eiou.yaml"
    shell:
        "OMP_NUM_THREADS={threads} {params.launch} predict --config {input.spec}"
        " --checkpoint {input.model} --output {output.predictions}{params.candidates}"
        " > {log} 2>&1"
