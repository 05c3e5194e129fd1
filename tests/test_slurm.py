"""The workflow on a real Slurm cluster, submitted through profiles/slurm as a user would.

A one-node Slurm 22.05 (partitions cpu and gpu, one fake GPU; a small real node of 4 CPUs and
16 GB, so that a job asking for more fails) is started on 127.0.0.1 by tests/slurm_cluster.sh for
this module and stopped at its end. Needs root (the daemons) and,
on a machine without Slurm, apt-get (Debian's munge and slurm packages): without them the
tests fail, they are not skipped.

    python -m pytest -m slurm tests/test_slurm.py          # about 8 minutes on 2 cores

What is checked: how many jobs a 2-seed run submits, where each runs and what each asked Slurm
for; that training stops ahead of its job's time limit by Slurm's own clock (no signal sent by
the test), in a plain job and in a job array, is retried and resumes to the same weights as an
uninterrupted run; the profile's GRES, QOS, constraint and extra-option forms, read back from
Slurm. The profile is used as shipped; tests/slurm_profile/ only adapts status checks to a
cluster without an accounting database. The time-limit tests change two values of its train
resources (runtime, checkpoint_margin_s) in a copy, chosen from the uninterrupted run's own
timing so that the stop falls in the middle of training on a fast machine and a slow one alike.
"""

import math
import os
import re
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REPO, workflow_outputs

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CLUSTER = REPO / "tests" / "slurm_cluster.sh"
PROFILE = REPO / "profiles" / "slurm"
GPU_RULES = {"train", "evaluate", "gradcam"}
ANALYSIS_RULES = {"samples", "curves", "confusion", "errors", "report", "gradcam_figures"}
SEEDS = yaml.safe_load((REPO / "tests" / "slurm_tiny.yaml").read_text())["seeds"]
# The bounds: a run's analysis job at most 2 CPUs and 8 GB, the summary 4 CPUs and 16 GB.
BOUNDS = {"analysis": (2, 8000), "summary": (4, 16000)}
# The site forms the plain time-limit test submits with (the GRES as the test node has it).
SITE_FORMS = {"GPU_GRES": "gpu:1", "GPU_QOS": "gpu_long", "GPU_CONSTRAINT": "a100|skylake",
              "GPU_EXTRA": "--nice=10 --mail-type=FAIL"}


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
        if started.returncode != 0:  # its last line says why, and how to free the machine
            pytest.fail(f"could not start the test Slurm cluster ({CLUSTER} start, exit {started.returncode}):\n"
                        f"{started.stdout}\n{started.stderr}")
        yield
    finally:
        stopped = cluster("stop")
        assert stopped.returncode == 0, f"stopping the test cluster failed:\n{stopped.stderr}"


def snakemake_cmd(workdir: Path, *args, profile: Path = PROFILE, more=()) -> list[str]:
    profiles = [profile, *more, REPO / "tests" / "slurm_profile"]
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
            "--configfile", str(REPO / "tests" / "tiny.yaml"), str(REPO / "tests" / "slurm_tiny.yaml"),
            *[a for p in profiles for a in ("--profile", str(p))], *map(str, args)]


def run(workdir: Path, *args, profile: Path = PROFILE, more=()) -> str:
    """Snakemake through the profile; returns its output, which it also keeps in workdir."""
    p = subprocess.run(snakemake_cmd(workdir, *args, profile=profile, more=more), capture_output=True, text=True,
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
    # Per seed: train, evaluate and gradcam (GPU) and one job for its six analysis rules; then
    # one job for everything that combines seeds. Without the profile's groups: 2 x 9 + 6 = 24.
    _, jobs, _ = full_run
    assert len(SEEDS) == 2
    kinds = sorted(j["kind"] for j in jobs)
    assert kinds == sorted([*GPU_RULES, "analysis"] * 2 + ["summary"]), [j.get("Comment") for j in jobs]
    assert len(jobs) == 9
    # Each analysis job holds the rules of one seed (the plugin's comment names the group; it cuts
    # long lists of rule names short with "...").
    comments = sorted(j["Comment"] for j in jobs if j["kind"] == "analysis")
    groups = [re.fullmatch(r"rule_analysis_baseline_(\d+)_(.+?)(?:\.\.\.)?", c) for c in comments]
    assert all(groups) and [int(g[1]) for g in groups] == SEEDS, comments
    names = "_".join(sorted(ANALYSIS_RULES))
    assert all(names.startswith(g[2]) for g in groups), comments


def requested(job: dict) -> tuple[int, int]:
    """(CPUs, memory in MB) a job asked Slurm for, as Slurm recorded it."""
    mem = job["MinMemoryNode"]  # e.g. 8000M, 15.62G
    return int(job["NumCPUs"]), round(float(mem[:-1]) * {"M": 1, "G": 1024, "T": 1024 ** 2}[mem[-1]])


def test_cpu_jobs_asked_for_what_their_work_needs(full_run):
    # Read back from Slurm: the analysis of a run runs its rules two at a time, the summary four.
    _, jobs, _ = full_run
    for j in jobs:
        if j["kind"] in BOUNDS:
            cpus, mem = requested(j)  # (Slurm prints 16000M as 15.62G)
            assert cpus == BOUNDS[j["kind"]][0] and mem == pytest.approx(BOUNDS[j["kind"]][1], abs=10), j
            assert j["JobState"] == "COMPLETED", j


def test_the_test_node_is_small_so_an_over_request_fails(slurm):
    node = subprocess.run(["scontrol", "-o", "show", "node"], capture_output=True, text=True, check=True).stdout
    assert re.search(r"\bCPUTot=4\b", node) and re.search(r"\bRealMemory=16384\b", node), node
    # What the analysis group asked for before its rules were bounded: 5 CPUs, 20000 MB.
    for extra in (["-c", "5"], ["-c", "2", "--mem", "20000"]):
        p = subprocess.run(["sbatch", "--test-only", "-p", "cpu", *extra, "--wrap", "true"],
                           capture_output=True, text=True)
        assert p.returncode != 0 and "Requested node configuration is not available" in p.stderr, p.stderr


def test_gpu_rules_ran_in_the_gpu_partition_with_a_gpu(full_run):
    workdir, jobs, _ = full_run
    gpu_jobs = [j for j in jobs if j["kind"] in GPU_RULES]
    assert {j["kind"] for j in gpu_jobs} == GPU_RULES, [j["kind"] for j in jobs]
    for j in gpu_jobs:
        assert j["Partition"] == "gpu", j
        assert j.get("TresPerJob", "").startswith("gres:gpu") and j["TresPerJob"].endswith(":1"), j
        assert j["JobState"] == "COMPLETED", j
    # What the training process itself saw: Slurm's GPU binding and partition.
    log = (run_dir(workdir, 0) / "logs/train.log").read_text()
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
    log = (run_dir(workdir, 0) / "logs/train.log").read_text()
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


def run_dir(workdir: Path, seed: int) -> Path:
    (model,) = workdir.glob(f"results/**/baseline/seed{seed}/model.pt")  # under the data's results root
    return model.parent


@pytest.fixture(scope="module")
def first_attempt(full_run) -> tuple[int, int]:
    """(minutes, margin in s) of a first training attempt whose stop falls mid-training.

    Measured on the uninterrupted run, on this machine: S, from its job's start to the training's
    first log line, and T, from there to its last epoch (the lines are timestamped). The stop is
    placed at S + T/2 after the job starts: on a fast machine and a slow one alike it leaves half
    the training on either side, instead of a fixed time that a fast machine finishes within.
    The shorter of the two seeds' S and T is used (the first job starts with cold caches)."""
    workdir, jobs, _ = full_run
    startup, training = [], []
    for seed in SEEDS:
        (job,) = [j for j in jobs if j["Comment"] == f"rule_train_wildcards_baseline_{seed}"]
        lines = (run_dir(workdir, seed) / "attempts.log").read_text().splitlines()  # timestamped
        stamps = [(datetime.fromisoformat(line[:19]).timestamp(), line[20:]) for line in lines
                  if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line)]
        epochs = [t for t, text in stamps if re.match(r"epoch \d+/\d+ ", text)]
        assert stamps and epochs, lines
        startup.append(stamps[0][0] - datetime.fromisoformat(job["StartTime"]).timestamp())
        training.append(epochs[-1] - stamps[0][0])
    s, t = min(startup), min(training)
    assert t >= 6, f"training takes {t:.0f} s here: too short to stop in its middle; raise the epochs of " \
                   "tests/slurm_tiny.yaml"
    stop_after = s + t / 2
    minutes = math.ceil((stop_after + 5) / 60)  # the deadline must lie after startup
    return minutes, round(minutes * 60 - stop_after)


def short_profile(folder: Path, minutes: int, margin_s: int, **variables) -> Path:
    """profiles/slurm with a first training attempt of ``minutes`` that stops ``margin_s`` ahead,
    and the edit block's ``variables`` changed."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    profile["__variables__"].update(variables)
    profile["set-resources"]["train"].update(runtime=f"{minutes} if attempt == 1 else 10",
                                             checkpoint_margin_s=margin_s)
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return folder


def assert_stopped_by_its_deadline_and_resumed(workdir: Path, seed: int, reference: Path, first_attempt):
    """The first attempt stopped itself before its limit, the next resumed, weights match."""
    minutes, margin = first_attempt
    folder = run_dir(workdir, seed)
    attempts = (folder / "attempts.log").read_text()  # every attempt's lines (the rule log is emptied)
    job_ids = re.findall(r"slurm job (\d+): time limit at", attempts)
    assert len(job_ids) >= 2, attempts
    jobs = {j["JobId"]: j for j in jobs_in(workdir)}
    first, last = jobs[job_ids[0]], jobs[job_ids[-1]]
    # Stopped by train.py itself, not killed by Slurm: FAILED (exit 138 in the step), not TIMEOUT.
    assert first["TimeLimit"] == f"00:{minutes:02d}:00" and first["JobState"] == "FAILED", first
    assert last["JobState"] == "COMPLETED", last
    assert re.search(rf"slurm job {job_ids[0]}: time limit in \d+ s, stopping {margin} s ahead", attempts)
    assert "stopped: stopped by signal 10; resume checkpoint written" in attempts, attempts
    assert re.search(r"resuming from \S*last\.pt: epoch \d+, step \d+", attempts), attempts
    ours, theirs = weights(folder / "model.pt"), weights(run_dir(reference, seed) / "model.pt")
    assert ours.keys() == theirs.keys()
    different = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not different, f"resumed weights differ from the uninterrupted run in {different}"


@pytest.fixture(scope="module")
def plain_run(full_run, first_attempt, tmp_path_factory):
    """Seed 0's training alone, through the profile with a short first attempt and the site forms
    of SITE_FORMS (GRES instead of --gpus, a QOS, a constraint, extra options)."""
    folder = tmp_path_factory.mktemp("plain")
    profile = short_profile(folder / "profile", *first_attempt, **SITE_FORMS)
    workdir = folder / "run"
    workdir.mkdir()
    run(workdir, "--until", "train", "--config", "seeds=[0]", profile=profile)
    return workdir


def test_a_plain_job_checkpoints_ahead_of_its_time_limit_and_resumes_bit_identical(full_run, plain_run,
                                                                                     first_attempt):
    reference, _, _ = full_run
    assert not any("ArrayJobId" in j for j in jobs_in(plain_run))
    assert_stopped_by_its_deadline_and_resumed(plain_run, 0, reference, first_attempt)


def test_gres_qos_constraint_and_extra_options_reach_slurm(plain_run):
    trains = [j for j in jobs_in(plain_run) if j["kind"] == "train"]
    assert len(trains) >= 2, trains
    for j in trains:  # as Slurm recorded each attempt's request
        assert j.get("TresPerNode") == "gres:gpu:1" and "TresPerJob" not in j, j  # --gres, not --gpus
        assert j["Features"] == "a100|skylake" and j["Nice"] == "10" and j["MailType"] == "FAIL", j
        # A QOS is accepted here, but without an accounting database Slurm keeps none (QOS=(null));
        # tests/test_slurm_submit.py reads --qos from the sbatch call itself.
        assert j["QOS"] in ("gpu_long", "(null)"), j
    # The step got the GPU of the job's GRES (no --gpus on the inner srun).
    log = (run_dir(plain_run, 0) / "attempts.log").read_text()
    assert re.search(r"partition gpu, CUDA_VISIBLE_DEVICES=0\b", log), log


def test_array_tasks_checkpoint_ahead_of_their_time_limit_are_retried_and_resume(full_run, first_attempt,
                                                                                 tmp_path):
    reference, _, _ = full_run
    minutes, _ = first_attempt
    workdir = tmp_path / "run"
    workdir.mkdir()
    profile = short_profile(tmp_path / "profile", *first_attempt)
    run(workdir, "--slurm-array-jobs", "train", "--until", "train", profile=profile, more=[PROFILE / "arrays"])
    tasks = [j for j in jobs_in(workdir) if "ArrayJobId" in j]
    assert len(tasks) == len(SEEDS) and len({j["ArrayJobId"] for j in tasks}) == 1, tasks
    assert all(j["TimeLimit"] == f"00:{minutes:02d}:00" and j["JobState"] == "FAILED" for j in tasks), tasks
    for seed in SEEDS:  # each failed task was resubmitted (retries) and resumed
        assert_stopped_by_its_deadline_and_resumed(workdir, seed, reference, first_attempt)
