# COCO-protocol evaluation of one run (AP, AP50/75/90, APs/m/l, recall per IoU) and its
# per-image records (what the bootstrap of the compare rule resamples).


rule evaluate:
    input:
        spec="results/runs/{run}/run.yaml",
        data=run_dataset,
        predictions="results/runs/{run}/predictions.json",
    output:
        metrics="results/runs/{run}/metrics.json",
        records="results/runs/{run}/eval_images.npz",
    log:
        "results/logs/evaluate/{run}.log",
    params:
        gt=dataset_ground_truth,
    threads: res("evaluate", "threads")
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        runtime=runtime_with_retries("evaluate"),
        gpu=res("evaluate", "gpu"),
    conda:
        "../../envs/eiou.yaml"
    shell:
        "python -m eiou.cli evaluate --gt {params.gt} --predictions {input.predictions}"
        " --output {output.metrics} --image-records {output.records}"
        " --run-config {input.spec} > {log} 2>&1"


# Runs without public ground truth (COCO test-dev, Table IV): the zip to upload to the COCO
# evaluation server, holding detections_test-dev2017_<run>_results.json.
rule server_results:
    input:
        "results/runs/{run}/predictions.json",
    output:
        "results/runs/{run}/test-dev_upload.zip",
    log:
        "results/logs/server_results/{run}.log",
    run:
        write_logged(
            lambda path, preds: evaluate.write_server_zip(path, preds, wildcards.run),
            output[0],
            evaluate.load_predictions(input[0]),
            log[0],
        )
