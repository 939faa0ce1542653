"""The workflow run locally: what a rerun of `train` keeps, what it throws away."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = Path(sys.executable).parent / "snakemake"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake not installed"),
]


def snakemake(workdir: Path, preset: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
         "--configfile", str(preset), "--cores", "2", *args],
        cwd=workdir,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip


@pytest.mark.timeout(900)
def test_forced_rerun_retrains_and_a_rewritten_spec_does_not(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    config["toy"] = {"enabled": False}
    config["tables"]["table1"]["rows"][0]["variant"] = "smooth_l1"
    config["schedules"]["smoke"]["log_period"] = 1
    preset = tmp_path / "one.yaml"
    preset.write_text(yaml.safe_dump(config))
    work = tmp_path / "work"
    work.mkdir()
    first = snakemake(work, preset, "--until", "train")
    assert first.returncode == 0, first.stderr[-4000:]
    (run_dir,) = (work / "results" / "runs").iterdir()
    log = run_dir / "train_log.jsonl"
    max_iter = config["schedules"]["smoke"]["max_iter"]

    # a rewritten run spec (same id: only the root or the processes can differ) is not a
    # reason to throw a finished training away
    time.sleep(1)
    (run_dir / "run.yaml").write_text((run_dir / "run.yaml").read_text())
    again = snakemake(work, preset, "--until", "train", "-n")
    assert again.returncode == 0, again.stderr
    assert "rule train" not in again.stdout and re.search(r"^total\s+0$", again.stdout, re.M)

    # snakemake -R train deletes model_final.pth; the run trains again from scratch and its
    # log starts over (no record of the earlier training survives, and none is missing)
    forced = snakemake(work, preset, "--until", "train", "-R", "train")
    assert forced.returncode == 0, forced.stderr[-4000:]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["event"] for r in records if "event" in r] == ["restarted"]
    assert [r["iteration"] for r in records if "loss" in r] == list(range(1, max_iter + 1))
    attempts = (work / "results" / "logs" / "train" / f"{run_dir.name}.attempts.log").read_text()
    assert attempts.count("=== attempt started") == 2
    assert "starts over" in attempts.split("=== attempt started")[2]


@pytest.mark.timeout(900)
def test_readme_by_hand_commands_run_as_written(tmp_path):
    """README.md's "One run by hand", run from a folder that looks like the repository."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- snippet: by-hand\b.*?-->\s*```bash\n(.*?)```", readme, re.S)
    assert match, "README has no by-hand snippet"
    (tmp_path / "config").symlink_to(ROOT / "config")
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    python_path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", match.group(1)],
        cwd=tmp_path,
        env={**os.environ, "PATH": path, "PYTHONPATH": python_path, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run,) = [p for p in (tmp_path / "results" / "runs").iterdir() if (p / "metrics.json").exists()]
    assert json.loads((run / "metrics.json").read_text())["provenance"]["run_id"] == run.name
    longer = [
        json.loads(x)
        for x in (tmp_path / "results" / "longer" / "train_log.jsonl").read_text().splitlines()
    ]
    assert [r["iteration"] for r in longer] == [1, 2, 4, 6, 8]
