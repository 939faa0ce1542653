"""The workflow on a real single-node SLURM cluster, through the profile users run
(workflow/profiles/slurm, snakemake-executor-plugin-slurm), with only the local cluster's
overrides on the command line.

`.ci/slurm-cluster.sh` installs Debian's slurm-wlm and munge (root only), starts munged,
slurmctld and slurmd on private ports with a private munge key, a fake `gpu` gres (two
devices) and the partitions `cpu` and `gpu` that the profile's partitions.yaml names, and
stops exactly those daemons afterwards. The tests skip with the reason where that cannot be
done (not root, no apt, packages not installable).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "slurm-cluster.sh"
PROFILE = ROOT / "workflow" / "profiles" / "slurm"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
#: What differs between the throw-away cluster and a real one: no accounting (so no
#: account and squeue for the status), quick status checks, 2 CPUs, logs kept for the checks.
LOCAL_OVERRIDES = (
    "--slurm-no-account",
    "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "1",
    "--slurm-keep-successful-logs",
    "--jobs", "2",
    "--latency-wait", "10",
)  # fmt: skip

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """SLURM_CONF of a running single-node cluster; stops its daemons afterwards."""
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("the SLURM test needs root (it installs and starts slurmctld/slurmd/munged)")
    if not SNAKEMAKE.exists():
        pytest.skip("snakemake is not installed")
    install = subprocess.run(
        ["bash", str(SCRIPT), "install"], capture_output=True, text=True, timeout=900
    )
    if install.returncode == 3:
        pytest.skip(f"cannot install slurm-wlm/munge here: {install.stderr.strip()}")
    assert install.returncode == 0, install.stderr
    state = tmp_path_factory.mktemp("slurm")
    start = subprocess.run(
        ["bash", str(SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=180
    )
    try:
        if start.returncode == 3:
            pytest.skip(f"cannot start a SLURM cluster here: {start.stderr.strip()}")
        if start.returncode != 0:
            logs = "\n".join(p.read_text()[-2000:] for p in state.glob("*.log"))
            pytest.fail(f"SLURM did not start: {start.stderr}\n{logs}")
        yield str(state / "slurm.conf")
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], timeout=60, check=False)


def snakemake_command(workdir: Path, configfile: Path, *args: str) -> list[str]:
    return [
        str(SNAKEMAKE),
        "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir),
        "--workflow-profile", str(PROFILE),
        "--configfile", str(configfile),
        *LOCAL_OVERRIDES,
        *args,
    ]  # fmt: skip


def slurm_env(slurm_conf: str) -> dict[str, str]:
    return {**os.environ, "SLURM_CONF": slurm_conf}


def sbatch_calls(output: str, rule: str) -> list[str]:
    """The sbatch command lines the plugin logged (--verbose) for one rule's jobs."""
    return re.findall(
        rf"sbatch call: (sbatch .*--comment '?rule_{rule}(?:_wildcards_\S*)?'? .*)", output
    )


def squeue(slurm_conf: str) -> list[tuple[str, str, str]]:
    """``(job id, state, comment)`` of every job the cluster knows."""
    out = subprocess.run(
        ["squeue", "-h", "--states=all", "-o", "%i|%T|%k"],
        env=slurm_env(slurm_conf),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [tuple(line.split("|", 2)) for line in out.splitlines() if line.strip()]


def log_records(run_dir: Path) -> list[dict]:
    path = run_dir / "train_log.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            break
    return records


def one_run_preset(tmp_path: Path) -> tuple[Path, int]:
    """The smoke preset cut to one run of 48 iterations with two training processes (gloo
    on the CPU) on the two fake GPUs; returns the preset file and max_iter."""
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    config["preset"] = "slurm_resume"
    config["toy"] = {"enabled": False}
    config["tables"]["table1"]["rows"][0]["variant"] = "eiou_ct_sot_iou_head"
    max_iter = 48
    config["schedules"]["smoke"].update(
        max_iter=max_iter,
        checkpoint_period=4,
        log_period=1,
        processes=2,
        device="cpu",
    )
    config["resources"]["train"] = {"threads": 2, "mem_mb": 3000, "runtime": 20, "gpu": 2}
    path = tmp_path / "slurm_resume.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, max_iter


class Driver:
    """Snakemake running in the background, its output in a file."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str], output: Path):
        self.output = output
        self.sink = open(output, "w")  # closed by stop()
        self.process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=self.sink, stderr=subprocess.STDOUT
        )

    def wait_for(self, condition, what: str, timeout: float = 600):
        """Poll ``condition()`` until it returns something truthy; fail if Snakemake ends
        or ``timeout`` seconds pass first."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"while waiting for {what}:\n{self.output.read_text()[-6000:]}")
            time.sleep(0.5)

    def finish(self, timeout: float) -> str:
        """Snakemake's output once it has ended (within ``timeout`` seconds)."""
        self.process.wait(timeout=timeout)
        self.stop()
        return self.output.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.sink.close()


def test_two_rank_training_survives_scancel_and_preemption(cluster, tmp_path):
    """A `train` job with gpu: 2 runs two torchrun ranks on one node (--nodes=1, the GPU
    partition). `scancel` kills it mid-run: the profile's retries submit it again and it
    resumes. Then a job of a higher-priority partition preempts it (the cluster cancels
    preempted jobs): it requeues itself, starts again and resumes. The run ends with the
    whole training log and each attempt's output; evaluation goes to the CPU partition."""
    preset, max_iter = one_run_preset(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    env = slurm_env(cluster)
    driver = Driver(
        snakemake_command(work, preset, "--verbose", "--until", "evaluate"),
        work,
        env,
        tmp_path / "snakemake.out",
    )

    def progress():
        """(run folder, last logged iteration) once the run has logged a step."""
        for path in (work / "results" / "runs").glob("*/train_log.jsonl"):
            steps = [r for r in log_records(path.parent) if "loss" in r]
            if steps:
                return path.parent, steps[-1]["iteration"]
        return None

    def running_train_job():
        jobs = [j for j, state, c in squeue(cluster) if state == "RUNNING" and "rule_train" in c]
        return jobs[0] if len(jobs) == 1 else None

    try:
        # 1. scancel, after the first checkpoint
        run_dir, _ = driver.wait_for(lambda: (p := progress()) and p[1] >= 6 and p, "step 6")
        first = running_train_job()
        assert first, squeue(cluster)
        cancelled_at = progress()[1]
        subprocess.run(["scancel", first], env=env, check=True)
        # 2. preemption of the retry, after it resumed and wrote a checkpoint of its own
        second = driver.wait_for(
            lambda: (job := running_train_job()) != first and job, "the retry to start"
        )
        driver.wait_for(lambda: progress()[1] >= cancelled_at + 6, "the retry to pass a checkpoint")
        preempted_at = progress()[1]
        assert preempted_at < max_iter - 4, "training too fast for this test"
        subprocess.run(
            ["sbatch", "-p", "urgent", "-c", "2", "--mem", "100", "-o", "/dev/null",
             "--wrap", "sleep 2"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        # the preempted job requeued itself; skip the requeue delay (BeginTime)
        driver.wait_for(
            lambda: any(j == second and st == "PENDING" for j, st, _ in squeue(cluster)),
            "the preempted job to requeue itself",
        )
        subprocess.run(
            ["scontrol", "update", f"JobId={second}", "StartTime=now"], env=env, check=True
        )
        out = driver.finish(timeout=900)
    finally:
        driver.stop()
    assert driver.process.returncode == 0, out[-6000:]
    run = run_dir.name

    # one node, the GPU partition, both GPUs; evaluation on the CPU partition
    train_calls = sbatch_calls(out, "train")
    assert len(train_calls) == 2, train_calls  # the cancelled job and its retry
    for call in train_calls:
        assert "--nodes=1" in call and "--gpus=2" in call and "--cpus-per-task=2" in call
        assert re.search(r" -p '?gpu'? ", call), call
    (evaluate_call,) = sbatch_calls(out, "evaluate")
    assert re.search(r" -p '?cpu'? ", evaluate_call) and "--gpus" not in evaluate_call
    assert all("--requeue" in call for call in [*train_calls, evaluate_call])
    show = subprocess.run(
        ["scontrol", "show", "job", second], env=env, capture_output=True, text=True
    ).stdout
    assert "Restarts=1" in show and "NumNodes=1" in show, show

    # each interruption was resumed from the newest checkpoint before it: the attempt ran
    # on from the moment it was interrupted (``stopped_at``) until SLURM's signal arrived,
    # logging every iteration up to ``interrupted_after``; a checkpoint every 4 iterations
    # (one being written when the signal came is lost)
    records = log_records(run_dir)
    events = [r for r in records if "event" in r]
    assert [e["event"] for e in events] == ["resumed", "resumed"], events
    for event, stopped_at in zip(events, (cancelled_at, preempted_at), strict=True):
        resumed, reached = event["iteration"], event["interrupted_after"]
        assert resumed % 4 == 0 and reached - 4 <= resumed <= reached, event
        assert stopped_at <= reached and stopped_at - 4 <= resumed, (stopped_at, event)
        assert event["from"] == f"model_{resumed:07d}.pth"
    # ... and the training log holds every iteration exactly once
    assert [r["iteration"] for r in records if "loss" in r] == list(range(1, max_iter + 1))
    # two ranks trained: the checkpoint holds both ranks' RNG states
    import torch

    checkpoint = torch.load(run_dir / "checkpoints" / f"model_{max_iter:07d}.pth")
    assert checkpoint["sampler"]["world_size"] == 2 and len(checkpoint["rng"]) == 2
    # every attempt's output survived: the cancelled job, the retry and its restart
    attempts = (work / "results" / "logs" / "train" / f"{run}.attempts.log").read_text()
    jobs = re.findall(r"=== attempt started .* SLURM job (\d+)", attempts)
    assert jobs == [first, second, second], attempts
    assert attempts.count("--nproc_per_node=2") == 3
    assert all("resumed from" in a for a in attempts.split("=== attempt started")[2:])
    assert (work / "results" / "runs" / run / "metrics.json").is_file()
    assert (work / "results" / "benchmarks" / "train" / f"{run}.tsv").is_file()
    shutil.rmtree(work / "results" / "data", ignore_errors=True)


def test_smoke_preset_through_the_profile(cluster, tmp_path):
    """The whole smoke preset through the profile, ending with the report; the toy job,
    given a GPU with --set-resources, goes to the GPU partition."""
    result = subprocess.run(
        snakemake_command(tmp_path, ROOT / "config" / "smoke.yaml", "--set-resources", "toy:gpu=1"),
        cwd=tmp_path,
        env=slurm_env(cluster),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert (tmp_path / "reports" / "summary.md").read_text().count("NOT the paper's setting")
    tables = sorted(p.name for p in (tmp_path / "results" / "tables").iterdir())
    assert tables == [
        "comparisons.csv",
        "runs.csv",
        "scoring.csv",
        "scoring.md",
        "table1.csv",
        "table1.md",
        "table1.tex",
    ]
    assert len(list((tmp_path / "results" / "runs").glob("*/metrics.json"))) == 2
    assert len(list((tmp_path / "results" / "runs").glob("*/eval_images.npz"))) == 2
    assert (tmp_path / "reports" / "figures" / "toy_fig3.png").read_bytes()[:4] == b"\x89PNG"
    # the toy job ran as a SLURM job (its log is the plugin's) with the fake GPU
    toy_logs = list((tmp_path / ".snakemake" / "slurm_logs" / "rule_toy").glob("*.log"))
    assert toy_logs, "no SLURM job log for rule toy: was it submitted?"
    assert "gpu=1" in toy_logs[0].read_text()
    toy_job = toy_logs[0].stem
    show = subprocess.run(
        ["scontrol", "show", "job", toy_job],
        env=slurm_env(cluster),
        capture_output=True,
        text=True,
    ).stdout
    assert "Partition=gpu" in show and "NumNodes=1" in show, show
    shutil.rmtree(tmp_path / "results" / "data", ignore_errors=True)
