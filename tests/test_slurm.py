"""The workflow on a real Slurm cluster, submitted through profiles/slurm as a user would.

A one-node Slurm 22.05 (partitions cpu and gpu, one fake GPU) is started on 127.0.0.1 by
tests/slurm_cluster.sh for this module and stopped at its end. Needs root (the daemons) and,
on a machine without Slurm, apt-get (Debian's munge and slurm packages): without them the
tests fail, they are not skipped.

    python -m pytest -m slurm tests/test_slurm.py          # about 6 minutes on 2 idle cores

What is checked: how many jobs a 2-seed run submits and where each runs; that training stops
ahead of its job's time limit by Slurm's own clock (no signal sent by the test), in a plain job
and in a job array, is retried and resumes to the same weights as an uninterrupted run.
The profile is used as shipped; tests/slurm_profile/ only switches conda off (no channels
here) and adapts status checks to a cluster without an accounting database. The time-limit
tests change two values of its train resources (runtime, checkpoint_margin_s) in a copy.
"""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REPO, workflow_outputs

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CLUSTER = REPO / "tests" / "slurm_cluster.sh"
PROFILE = REPO / "profiles" / "slurm"
GPU_RULES = {"train", "evaluate", "gradcam"}
ANALYSIS_RULES = {"samples", "curves", "confusion", "errors", "report"}
SEEDS = yaml.safe_load((REPO / "tests" / "slurm_tiny.yaml").read_text())["seeds"]
# The time-limit tests: a first attempt of 1 minute that stops 35 s ahead of its end (25 s of
# startup and training), then retries long enough to finish.
SHORT_RUNTIME = "1 if attempt == 1 else 10"
SHORT_MARGIN_S = 35


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


def snakemake_cmd(workdir: Path, *args, profile: Path = PROFILE) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
            "--configfile", str(REPO / "tests" / "tiny.yaml"), str(REPO / "tests" / "slurm_tiny.yaml"),
            "--profile", str(profile), "--profile", str(REPO / "tests" / "slurm_profile"), *map(str, args)]


def run(workdir: Path, *args, profile: Path = PROFILE) -> str:
    """Snakemake through the profile; returns its output, which it also keeps in workdir."""
    p = subprocess.run(snakemake_cmd(workdir, *args, profile=profile), capture_output=True, text=True,
                       timeout=900, cwd=REPO)
    log = p.stdout + p.stderr
    (workdir / "snakemake_test.log").write_text(log)
    assert p.returncode == 0, f"snakemake --profile {profile} failed:\n{log[-8000:]}"
    return log


def kind(comment: str) -> str | None:
    """What a job ran, from the comment the plugin gives it: a rule, or a group of the profile."""
    m = re.match(r"rule_(analysis|summary)_|rule_(\w+?)(?:_wildcards_|$)", comment)
    return (m[1] or m[2]) if m else None


def jobs_in(workdir: Path) -> list[dict]:
    """Slurm's record of every job that ran in ``workdir`` (MinJobAge keeps finished ones), in order."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, check=True).stdout
    jobs = [dict(re.findall(r"(\S+?)=(\S*)", line)) for line in out.splitlines() if line.strip()]
    for j in jobs:
        j["kind"] = kind(j.get("Comment", ""))
    return sorted((j for j in jobs if j.get("WorkDir") == str(workdir)), key=lambda j: int(j["JobId"]))


def weights(model: Path) -> dict:
    return torch.load(model, map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def full_run(slurm, tmp_path_factory):
    """The whole tiny DAG (two seeds) through the profile; returns (workdir, jobs, snakemake log)."""
    workdir = tmp_path_factory.mktemp("slurm_full")
    log = run(workdir, "--verbose")  # --verbose: the log shows each sbatch call
    return workdir, jobs_in(workdir), log


def test_every_output_exists_and_nothing_is_left_to_do(full_run):
    workdir, _, _ = full_run
    outputs = workflow_outputs(REPO / "Snakefile", workdir, REPO / "tests" / "tiny.yaml",
                               REPO / "tests" / "slurm_tiny.yaml")
    missing = [f for f in outputs if not (workdir / f).is_file()]
    assert outputs and not missing, f"missing outputs: {missing}"
    dry = subprocess.run(snakemake_cmd(workdir, "-n"), capture_output=True, text=True, timeout=120, cwd=REPO)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]


def test_a_two_seed_run_submits_nine_jobs(full_run):
    # Per seed: train, evaluate and gradcam (GPU) and one job for its five analysis rules; then
    # one job for everything that combines seeds. Without the profile's groups: 2 x 8 + 6 = 22.
    _, jobs, _ = full_run
    assert len(SEEDS) == 2
    kinds = sorted(j["kind"] for j in jobs)
    assert kinds == sorted([*GPU_RULES, "analysis"] * 2 + ["summary"]), [j.get("Comment") for j in jobs]
    assert len(jobs) == 9
    # Each analysis job holds all five rules of one seed (the plugin's comment names the group).
    comments = sorted(j["Comment"] for j in jobs if j["kind"] == "analysis")
    assert comments == [f"rule_analysis_baseline_{s}_{'_'.join(sorted(ANALYSIS_RULES))}" for s in SEEDS]


def test_gpu_rules_ran_in_the_gpu_partition_with_a_gpu(full_run):
    workdir, jobs, _ = full_run
    gpu_jobs = [j for j in jobs if j["kind"] in GPU_RULES]
    assert {j["kind"] for j in gpu_jobs} == GPU_RULES, [j["kind"] for j in jobs]
    for j in gpu_jobs:
        assert j["Partition"] == "gpu", j
        assert j.get("TresPerJob", "").startswith("gres:gpu") and j["TresPerJob"].endswith(":1"), j
        assert j["JobState"] == "COMPLETED", j
    # What the training process itself saw: Slurm's GPU binding and partition.
    log = (workdir / "results/baseline/seed0/logs/train.log").read_text()
    assert re.search(r"slurm job \d+: partition gpu, CUDA_VISIBLE_DEVICES=0\b", log), log


def test_analysis_and_summary_ran_in_the_cpu_partition_without_a_gpu(full_run):
    _, jobs, _ = full_run
    cpu_jobs = [j for j in jobs if j["kind"] not in GPU_RULES]
    assert {j["kind"] for j in cpu_jobs} == {"analysis", "summary"}
    for j in cpu_jobs:
        assert j["Partition"] == "cpu", j
        assert "gpu" not in j.get("TresPerJob", ""), j
        assert j["JobState"] == "COMPLETED", j
    # The dataset is a localrule: made where snakemake runs, never through sbatch.
    assert not any(j["kind"] == "dataset" for j in jobs)


def test_cores_come_from_the_snakefile_and_no_signal_is_asked_for(full_run):
    _, _, log = full_run
    calls = [line for line in log.splitlines() if line.lstrip().startswith("sbatch call:")]
    threads = int(re.search(r"^rule train:.*?^    threads: (\d+)", (REPO / "Snakefile").read_text(),
                            flags=re.M | re.S)[1])
    train_calls = [c for c in calls if "--comment rule_train_" in c]
    assert len(train_calls) == 2 and all(f"--cpus-per-task={threads} " in c and " -p gpu " in c
                                         for c in train_calls), train_calls
    assert not any("--signal" in c for c in calls), "training stops by its own deadline, not by --signal"


def test_training_knows_its_time_limit(full_run):
    workdir, _, _ = full_run
    margin = yaml.safe_load((PROFILE / "config.yaml").read_text())["set-resources"]["train"]["checkpoint_margin_s"]
    log = (workdir / "results/baseline/seed0/logs/train.log").read_text()
    assert re.search(rf"slurm job \d+: time limit at [\d:]+; checkpointing and stopping {margin} s before it",
                     log), log


def test_the_test_cluster_listens_on_loopback_only(slurm):
    ports = {int(m[1]) for m in re.finditer(r"^Slurm(?:ctld|d)Port=(\d+)$",
                                              Path("/etc/slurm/slurm.conf").read_text(), flags=re.M)}
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.rsplit(":", 1)
            if state == "0A" and int(port, 16) in ports:  # 0A: LISTEN
                listening.append((table, address, int(port, 16)))
    loopback = socket.inet_aton("127.0.0.1")[::-1].hex().upper()  # /proc/net/tcp: little-endian hex
    assert len(ports) == 2 and {p for _, _, p in listening} == ports, listening
    assert all(table == "/proc/net/tcp" and address == loopback for table, address, _ in listening), listening


@pytest.fixture(scope="module")
def short_profile(tmp_path_factory) -> Path:
    """profiles/slurm with a 1-minute first training attempt that stops SHORT_MARGIN_S ahead."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    profile["set-resources"]["train"].update(runtime=SHORT_RUNTIME, checkpoint_margin_s=SHORT_MARGIN_S)
    folder = tmp_path_factory.mktemp("short_profile")
    (folder / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return folder


def assert_stopped_by_its_deadline_and_resumed(workdir: Path, seed: int, reference: Path):
    """The first attempt stopped itself before its 1-minute limit, the next resumed, weights match."""
    run_dir = workdir / f"results/baseline/seed{seed}"
    attempts = (run_dir / "attempts.log").read_text()  # every attempt's lines (the rule log is emptied)
    job_ids = re.findall(r"slurm job (\d+): time limit at", attempts)
    assert len(job_ids) >= 2, attempts
    jobs = {j["JobId"]: j for j in jobs_in(workdir)}
    first, last = jobs[job_ids[0]], jobs[job_ids[-1]]
    # Stopped by train.py itself, not killed by Slurm: FAILED (exit 138 in the step), not TIMEOUT.
    assert first["TimeLimit"] == "00:01:00" and first["JobState"] == "FAILED", first
    assert last["JobState"] == "COMPLETED", last
    assert re.search(rf"slurm job {job_ids[0]}: time limit in \d+ s, stopping {SHORT_MARGIN_S} s ahead", attempts)
    assert "stopped: stopped by signal 10; resume checkpoint written" in attempts, (
        "the deadline fired before training started (the machine was too slow to start within 25 s):\n"
        + attempts)
    assert re.search(r"resuming from \S*last\.pt: epoch \d+, step \d+", attempts), attempts
    ours, theirs = weights(run_dir / "model.pt"), weights(reference / f"results/baseline/seed{seed}/model.pt")
    assert ours.keys() == theirs.keys()
    different = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not different, f"resumed weights differ from the uninterrupted run in {different}"


def test_a_plain_job_checkpoints_ahead_of_its_time_limit_and_resumes_bit_identical(full_run, short_profile,
                                                                                     tmp_path):
    reference, _, _ = full_run
    workdir = tmp_path / "run"
    workdir.mkdir()
    run(workdir, "results/baseline/seed0/model.pt", profile=short_profile)
    assert not any("ArrayJobId" in j for j in jobs_in(workdir))
    assert_stopped_by_its_deadline_and_resumed(workdir, 0, reference)


def test_array_tasks_checkpoint_ahead_of_their_time_limit_are_retried_and_resume(full_run, short_profile,
                                                                                 tmp_path):
    reference, _, _ = full_run
    workdir = tmp_path / "run"
    workdir.mkdir()
    targets = [f"results/baseline/seed{s}/model.pt" for s in SEEDS]
    run(workdir, "--slurm-array-jobs", "train", *targets, profile=short_profile)
    tasks = [j for j in jobs_in(workdir) if "ArrayJobId" in j]
    assert len(tasks) == len(SEEDS) and len({j["ArrayJobId"] for j in tasks}) == 1, tasks
    assert all(j["TimeLimit"] == "00:01:00" and j["JobState"] == "FAILED" for j in tasks), tasks
    for seed in SEEDS:  # each failed task was resubmitted (retries) and resumed
        assert_stopped_by_its_deadline_and_resumed(workdir, seed, reference)
