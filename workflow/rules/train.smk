# One run spec per unique run, then train and predict. Training resumes from
# results/runs/<run>/checkpoints/, which is deliberately NOT a declared output, and neither
# is train_log.jsonl: Snakemake deletes a job's declared outputs (and its log) before every
# attempt, so only undeclared files survive a retry, a requeue or a rerun. A job that was
# preempted, cancelled or ran out of time therefore continues where it stopped, with its
# whole training curve; `snakemake -R train` deletes model_final.pth, and a run whose
# final checkpoint has no model_final.pth trains again from scratch.


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
# job, seconds apiece. The spec's text is a param, so a changed spec is rewritten.
rule run_spec:
    input:
        ancient("results/plan.json"),
    output:
        "results/runs/{run}/run.yaml",
    log:
        "results/logs/run_spec/{run}.log",
    conda:
        "../../envs/eiou.yaml"
    params:
        text=lambda wildcards: experiments.run_spec_text(RUNS[wildcards.run]),
    shell:
        "printf '%s' {params.text:q} > {output}.tmp && mv {output}.tmp {output}"
        " && echo 'wrote {output}' > {log}"


# The run spec is `ancient`: a run's id is the hash of its spec, so a rewritten spec of the
# same id differs only in what never changes the result (the dataset root, the number of
# processes) and must not throw away a finished training. `eiou train` launches itself
# under `torchrun --standalone` on this node when the run's train.processes is above 1
# (each rank gets threads / processes OpenMP threads). Each attempt's output is appended
# to results/logs/train/<run>.attempts.log, which Snakemake never deletes.
rule train:
    input:
        spec=ancient("results/runs/{run}/run.yaml"),
        data=run_dataset,
    output:
        "results/runs/{run}/model_final.pth",
    log:
        "results/logs/train/{run}.log",
    benchmark:
        "results/benchmarks/train/{run}.tsv"
    conda:
        "../../envs/eiou.yaml"
    threads: res("train", "threads")
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=runtime("train", resumable=True),
        gpu=res("train", "gpu"),
        nodes=1,
    params:
        out=lambda wildcards: run_dir(wildcards.run),
        attempts=lambda wildcards: f"results/logs/train/{wildcards.run}.attempts.log",
    shell:
        '(echo "=== attempt started $(date -Is) on $(hostname),'
        ' SLURM job ${{SLURM_JOB_ID:-none}}"'
        "; OMP_NUM_THREADS={threads} python -m eiou.cli train"
        " --config {input.spec} --output {params.out} --no-progress)"
        " 2>&1 | tee -a {params.attempts} > {log}"


# One process: predict never launches torchrun, whatever GPUs the job holds.
rule predict:
    input:
        spec="results/runs/{run}/run.yaml",
        data=run_dataset,
        model="results/runs/{run}/model_final.pth",
    output:
        predictions="results/runs/{run}/predictions.json",
    log:
        "results/logs/predict/{run}.log",
    benchmark:
        "results/benchmarks/predict/{run}.tsv"
    conda:
        "../../envs/eiou.yaml"
    threads: res("predict", "threads")
    resources:
        mem_mb=res("predict", "mem_mb"),
        runtime=runtime("predict"),
        gpu=res("predict", "gpu"),
        nodes=1,
    params:
        candidates="",  # IoU-head runs: see predict_with_candidates (rescore.smk)
    shell:
        "OMP_NUM_THREADS={threads} python -m eiou.cli predict --config {input.spec}"
        " --checkpoint {input.model} --output {output.predictions}{params.candidates}"
        " --no-progress > {log} 2>&1"
