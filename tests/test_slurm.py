"""The workflow on a real Slurm cluster, submitted through profiles/slurm as a user would.

A one-node Slurm 22.05 (partitions cpu and gpu, one fake GPU) is started on 127.0.0.1 by
tests/slurm_cluster.sh for this module and stopped at its end. Needs root (the daemons) and,
on a machine without Slurm, apt-get (Debian's munge and slurm packages): without them the
tests fail, they are not skipped.

    python -m pytest -m slurm tests/test_slurm.py          # about 4-5 minutes on 2 cores

The profile is used as shipped; tests/slurm_profile/ only switches conda off (no channels
here) and adapts status checks to a cluster without an accounting database.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from helpers import REPO, RUN_OUTPUTS, SHARED_OUTPUTS

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CLUSTER = REPO / "tests" / "slurm_cluster.sh"
PROFILE = REPO / "profiles" / "slurm"
GPU_RULES = {"train", "evaluate", "gradcam"}


def cluster(action: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER), action], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


@pytest.fixture(scope="session")
def slurm():
    """A running test cluster for the session; always stopped afterwards (by PID)."""
    if os.geteuid() != 0:
        pytest.fail("the Slurm tests start munged, slurmctld and slurmd and need root; run them as root "
                    "(or deselect them with -m 'not slurm')")
    # The GRES type must match what the profile asks for (--gpus=<model>:1 when GPU_MODEL is set).
    gpu_model = yaml.safe_load((PROFILE / "config.yaml").read_text())["__variables__"]["GPU_MODEL"]
    started = cluster("start", SLURM_TEST_GPU_TYPE=gpu_model or "")
    try:
        if started.returncode != 0:
            pytest.fail(f"could not start the test Slurm cluster ({CLUSTER} start, exit {started.returncode}):\n"
                        f"{started.stdout}\n{started.stderr}")
        yield
    finally:
        stopped = cluster("stop")
        assert stopped.returncode == 0, f"stopping the test cluster failed:\n{stopped.stderr}"


def snakemake_cmd(workdir: Path, *args) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
            "--configfile", str(REPO / "tests" / "tiny.yaml"), str(REPO / "tests" / "slurm_tiny.yaml"),
            "--profile", str(PROFILE), "--profile", str(REPO / "tests" / "slurm_profile"), *map(str, args)]


def jobs_in(workdir: Path) -> list[dict]:
    """Slurm's record of every job that ran in ``workdir`` (MinJobAge keeps finished ones), in order."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, check=True).stdout
    jobs = [dict(re.findall(r"(\S+?)=(\S*)", line)) for line in out.splitlines() if line.strip()]
    for j in jobs:
        m = re.match(r"rule_(\w+?)(?:_wildcards_|$)", j.get("Comment", ""))
        j["rule"] = m[1] if m else None
    return sorted((j for j in jobs if j.get("WorkDir") == str(workdir)), key=lambda j: int(j["JobId"]))


@pytest.fixture(scope="module")
def full_run(slurm, tmp_path_factory):
    """The whole tiny DAG (one seed) through the profile; returns (workdir, jobs, snakemake log)."""
    workdir = tmp_path_factory.mktemp("slurm_full")
    # --verbose: the log then shows each sbatch call (the --signal flag is asserted on below).
    p = subprocess.run(snakemake_cmd(workdir, "--verbose"), capture_output=True, text=True, timeout=600,
                       cwd=REPO)
    log = p.stdout + p.stderr
    (workdir / "snakemake_test.log").write_text(log)
    assert p.returncode == 0, f"snakemake --profile profiles/slurm failed:\n{log[-8000:]}"
    return workdir, jobs_in(workdir), log


def test_every_output_exists_and_nothing_is_left_to_do(full_run):
    workdir, _, _ = full_run
    missing = [f for f in [*(f"results/baseline/seed0/{n}" for n in RUN_OUTPUTS), *SHARED_OUTPUTS]
               if not (workdir / f).is_file()]
    assert not missing, f"missing outputs: {missing}"
    dry = subprocess.run(snakemake_cmd(workdir, "-n"), capture_output=True, text=True, timeout=120, cwd=REPO)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]


def test_gpu_rules_ran_in_the_gpu_partition_with_a_gpu(full_run):
    workdir, jobs, _ = full_run
    gpu_jobs = [j for j in jobs if j["rule"] in GPU_RULES]
    assert {j["rule"] for j in gpu_jobs} == GPU_RULES, [j["rule"] for j in jobs]
    for j in gpu_jobs:
        assert j["Partition"] == "gpu", j
        assert j.get("TresPerJob", "").startswith("gres:gpu") and j["TresPerJob"].endswith(":1"), j
        assert j["JobState"] == "COMPLETED", j
    # What the training process itself saw: Slurm's GPU binding and partition.
    log = (workdir / "results/baseline/seed0/logs/train.log").read_text()
    assert re.search(r"slurm job \d+: partition gpu, CUDA_VISIBLE_DEVICES=0\b", log), log


def test_analysis_rules_ran_in_the_cpu_partition_without_a_gpu(full_run):
    _, jobs, _ = full_run
    cpu_jobs = [j for j in jobs if j["rule"] not in GPU_RULES]
    expected = {"samples", "curves", "confusion", "errors", "report", "aggregate", "compare"}
    assert {j["rule"] for j in cpu_jobs} == expected, [j["rule"] for j in jobs]
    for j in cpu_jobs:
        assert j["Partition"] == "cpu", j
        assert "gpu" not in j.get("TresPerJob", ""), j
        assert j["JobState"] == "COMPLETED", j
    # download is a localrule: it ran where snakemake runs, never through sbatch.
    assert not any(j["rule"] == "download" for j in jobs)


def test_training_is_submitted_with_a_usr1_warning(full_run):
    _, _, log = full_run
    calls = [line for line in log.splitlines() if line.lstrip().startswith("sbatch call:")]
    train_calls = [c for c in calls if "--comment rule_train_" in c]
    assert train_calls and all("--signal=USR1@" in c and " -p gpu " in c for c in train_calls), train_calls
    assert not any("--signal" in c for c in calls if c not in train_calls)


def _wait_for(predicate, timeout, what, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"snakemake ended (exit {proc.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_usr1_checkpoints_fails_retries_and_resumes_bit_identical(full_run, tmp_path):
    reference, _, _ = full_run
    workdir = tmp_path / "run"
    run_dir = workdir / "results/baseline/seed0"
    log_path = tmp_path / "snakemake.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(snakemake_cmd(workdir, "results/baseline/seed0/model.pt"), stdout=log,
                                stderr=subprocess.STDOUT, cwd=REPO)
    try:
        # Training is running and has finished an epoch: interrupt it mid-run.
        _wait_for(lambda: (run_dir / "history.csv").is_file()
                  and len((run_dir / "history.csv").read_text().splitlines()) >= 2,
                  240, "the first epoch of training", proc)
        running = [j for j in jobs_in(workdir) if j["rule"] == "train" and j["JobState"] == "RUNNING"]
        assert len(running) == 1, jobs_in(workdir)
        first = running[0]["JobId"]
        subprocess.run(["scancel", "--signal=USR1", first], check=True)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log_path.read_text()
    assert proc.returncode == 0, f"snakemake did not recover from the USR1:\n{out[-6000:]}"

    train_jobs = [j for j in jobs_in(workdir) if j["rule"] == "train"]
    assert [j["JobState"] for j in train_jobs] == ["FAILED", "COMPLETED"], train_jobs
    assert train_jobs[0]["JobId"] == first and all(j["Partition"] == "gpu" for j in train_jobs)

    # The signalled attempt: train.py checkpointed and exited with 128 + USR1 (138), and
    # snakemake inside the job step outlived the signal to report it. A snakemake killed by the
    # USR1 ("task 0: User defined signal 1") orphans train.py: here it may still checkpoint, but
    # on a cgroup cluster it is killed with the step before it can, and the progress is lost.
    failed_log = (workdir / f".snakemake/slurm_logs/rule_train/baseline_0/{first}.log").read_text()
    assert "User defined signal 1" not in failed_log, (
        "snakemake inside the job step died from USR1 instead of letting train.py checkpoint; "
        "the Snakefile must ignore SIGUSR1 (a no-op handler):\n" + failed_log[-3000:])
    assert "returned non-zero exit status 138" in failed_log, failed_log[-3000:]

    # The retry resumed from the mid-epoch checkpoint (an epoch-end checkpoint has step 0).
    train_log = (run_dir / "logs/train.log").read_text()
    m = re.search(r"resuming from \S*last\.pt: epoch (\d+), step (\d+)", train_log)
    assert m and int(m[1]) >= 2 and int(m[2]) > 0, train_log

    ours = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=False)["state_dict"]
    theirs = torch.load(reference / "results/baseline/seed0/model.pt", map_location="cpu",
                        weights_only=False)["state_dict"]
    assert ours.keys() == theirs.keys()
    different = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not different, f"resumed weights differ from the uninterrupted run in {different}"
