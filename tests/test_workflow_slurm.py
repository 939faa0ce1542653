"""The workflow on a real single-node SLURM cluster (snakemake-executor-plugin-slurm).

`.ci/slurm-cluster.sh` installs Debian's slurm-wlm and munge (root only), starts munged,
slurmctld and slurmd on private ports with a private munge key, and a fake `gpu` gres
(two devices), and stops exactly those daemons afterwards. The test skips with the reason
where that cannot be done (not root, no apt, packages not installable).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "slurm-cluster.sh"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"

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
        if start.returncode != 0:
            logs = "\n".join(p.read_text()[-2000:] for p in state.glob("*.log"))
            pytest.fail(f"SLURM did not start: {start.stderr}\n{logs}")
        yield str(state / "slurm.conf")
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], timeout=60, check=False)


def run_on_slurm(slurm_conf: str, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SLURM_CONF": slurm_conf}
    return subprocess.run(
        [
            str(SNAKEMAKE),
            "--snakefile", str(ROOT / "Snakefile"),
            "--directory", str(workdir),
            "--configfile", str(ROOT / "config" / "smoke.yaml"),
            "--executor", "slurm",
            "--jobs", "4",
            "--slurm-no-account",
            "--slurm-keep-successful-logs",  # the checks below read the job logs
            "--slurm-status-command", "squeue",
            "--slurm-init-seconds-before-status-checks", "1",
            "--default-resources", "slurm_partition=debug",
            "--latency-wait", "20",
            *args,
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )  # fmt: skip


def test_toy_branch_on_slurm_with_a_gpu_request(cluster, tmp_path):
    """Toy experiments and figures as SLURM jobs; the toy job asks for one (fake) GPU."""
    result = run_on_slurm(
        cluster, tmp_path, "--set-resources", "toy:gpu=1", "--", "figures_toy", "plan"
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert (tmp_path / "results" / "toy" / "fig3.csv").stat().st_size > 0
    assert (tmp_path / "reports" / "figures" / "toy_fig3.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "results" / "plan.json").exists()
    # the toy job ran as a SLURM job (its log is the plugin's) and asked for the fake GPU
    toy_logs = list((tmp_path / ".snakemake" / "slurm_logs" / "rule_toy").glob("*.log"))
    assert toy_logs, "no SLURM job log for rule toy: was it submitted?"
    assert "gpu=1" in toy_logs[0].read_text()


def test_smoke_preset_on_slurm(cluster, tmp_path):
    """The whole smoke preset through --executor slurm, ending with the report."""
    result = run_on_slurm(cluster, tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert (tmp_path / "reports" / "summary.md").read_text().count("NOT the paper's setting")
    tables = sorted(p.name for p in (tmp_path / "results" / "tables").iterdir())
    assert tables == ["comparisons.csv", "runs.csv", "table1.csv", "table1.md", "table1.tex"]
    metrics = list((tmp_path / "results" / "runs").glob("*/metrics.json"))
    assert len(metrics) == 2
    assert len(list((tmp_path / "results" / "runs").glob("*/eval_images.npz"))) == 2
    shutil.rmtree(tmp_path / "results" / "data", ignore_errors=True)
