"""What the workflow hands to Slurm, read from the sbatch calls themselves: no cluster needed.

A fake `sbatch` first on PATH records every call (its arguments and the script it reads from
stdin) and answers with a job id; a fake `squeue` reports every job COMPLETED. So that the jobs
downstream are submitted too, the fake sbatch puts back (empty) every output file of the DAG
that is missing, as if the job had written it. profiles/slurm is used as shipped, with
tests/slurm_profile after it, as in tests/test_slurm.py.

What is checked: each job's request (CPUs, memory, time, GPU) for a 2-seed run and for 3 x 10 and
50 x 3 studies, the profile's QOS, GRES and extra-option forms, that the command reaches sbatch
as a script that no shell re-reads, and that a config value, a working directory or a config
file holding shell syntax stops the workflow, naming it, before any sbatch call.

    python -m pytest tests/test_slurm_submit.py -s      # -s prints every job's request
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, check_config_as_the_snakefile_does, snakemake

from cifar100 import config as cfg
from cifar100.exceptions import ConfigError

PROFILE = REPO / "profiles" / "slurm"
TEST_PROFILE = REPO / "tests" / "slurm_profile"
TINY = REPO / "tests" / "tiny.yaml"
SLURM_TINY = REPO / "tests" / "slurm_tiny.yaml"
GPU_RULES = {"train", "evaluate", "gradcam"}

SBATCH = f"""#!{sys.executable}
import json, os, shutil, sys
here = os.environ["FAKE_SLURM_DIR"]
calls = os.path.join(here, "calls.jsonl")
script = sys.stdin.read() if sys.argv[-1] == "/dev/stdin" else None
n = sum(1 for _ in open(calls)) if os.path.exists(calls) else 0
with open(calls, "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "script": script}}) + "\\n")
stash = os.path.join(here, "stash")
workdir = sys.argv[sys.argv.index("-D") + 1]
placed = os.path.join(here, "placed")  # the working directories whose outputs are all in place
if workdir not in (open(placed).read().splitlines() if os.path.exists(placed) else []):
    for root, _, files in os.walk(stash):  # the job "ran": its outputs (and all others) exist
        for name in files:
            target = os.path.join(workdir, os.path.relpath(os.path.join(root, name), stash))
            if not os.path.exists(target):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                open(target, "w").close()
    with open(placed, "a") as f:
        f.write(workdir + "\\n")
print(1000 + n)
"""
SQUEUE = f"""#!{sys.executable}
import json, os
calls = os.path.join(os.environ["FAKE_SLURM_DIR"], "calls.jsonl")
for i, line in enumerate(open(calls) if os.path.exists(calls) else []):  # plain jobs and array tasks alike
    print(f"{{1000 + i}}|COMPLETED")
    if any(a.startswith("--array") for a in json.loads(line)["argv"]):
        for task in range(1, 201):
            print(f"{{1000 + i}}_{{task}}|COMPLETED")
"""
SCONTROL = "#!/bin/sh\necho 'MaxArraySize = 1001'\necho 'MinJobAge = 600 sec'\n"
ABSENT = "#!/bin/sh\nexit 1\n"  # sacct, sacctmgr, sshare: no accounting database


class FakeSlurm:
    def __init__(self, folder: Path):
        self.folder = folder
        bin_dir = folder / "bin"
        bin_dir.mkdir(parents=True)
        for name, text in {"sbatch": SBATCH, "squeue": SQUEUE, "scontrol": SCONTROL, "sacct": ABSENT,
                           "sacctmgr": ABSENT, "sshare": ABSENT, "sinfo": ABSENT, "srun": ABSENT}.items():
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        self.env = {**os.environ, "FAKE_SLURM_DIR": str(folder), "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def snakemake(self, workdir: Path, *args, profiles=(PROFILE, TEST_PROFILE), timeout=900):
        return snakemake("-s", REPO / "Snakefile", "-d", workdir, *[a for p in profiles for a in ("--profile", p)],
                         *args, timeout=timeout, cwd=REPO, env=self.env)

    def run(self, workdir: Path, *args, profiles=(PROFILE, TEST_PROFILE)) -> list[dict]:
        """Submit the whole DAG; returns the sbatch calls. Every output is stashed first (from the
        dry run's list) for the fake sbatch to put in place."""
        dry = self.snakemake(workdir, "-n", *args, profiles=profiles)
        assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
        for line in dry.stdout.splitlines():
            m = re.match(r"\s+(?:output|benchmark): (.+)$", line)
            for f in m[1].split(", ") if m else []:
                f = re.sub(r" \([a-z ,]+\)$", "", f)  # a flag Snakemake shows: "model.pt (update)"
                (self.folder / "stash" / f).parent.mkdir(parents=True, exist_ok=True)
                (self.folder / "stash" / f).touch()
        p = self.snakemake(workdir, *args, "--slurm-init-seconds-before-status-checks", 1, "--latency-wait", 0,
                           "--retries", 0, profiles=profiles)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
        return self.calls()

    def calls(self) -> list[dict]:
        log = self.folder / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def fake(tmp_path):
    return FakeSlurm(tmp_path / "fake slurm")


@pytest.fixture(scope="module")
def two_seed_calls(tmp_path_factory) -> list[dict]:
    """The sbatch calls of tests/tiny.yaml + tests/slurm_tiny.yaml through the shipped profile."""
    root = tmp_path_factory.mktemp("two_seeds")
    return FakeSlurm(root / "fake slurm").run(root / "run", "--configfile", TINY, SLURM_TINY)


def option(argv: list[str], *names: str) -> str | None:
    """The value of an sbatch option given as `--name value` or `--name=value`."""
    for i, a in enumerate(argv):
        for name in names:
            if a == name and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(name + "="):
                return a[len(name) + 1:]
    return None


def request(call: dict) -> dict:
    argv = call["argv"]
    comment = option(argv, "--comment")
    m = re.match(r"rule_(analysis|summary)_|rule_(\w+?)(?:_wildcards_|$)", comment)
    return {"job": m[1] or m[2], "comment": comment, "partition": option(argv, "-p"),
            "cpus": int(option(argv, "--cpus-per-task")), "mem_mb": int(option(argv, "--mem")),
            "minutes": int(option(argv, "-t")), "gpus": option(argv, "--gpus"), "gres": option(argv, "--gres"),
            "qos": option(argv, "--qos"), "constraint": option(argv, "-C", "--constraint")}


def table(name: str, requests: list[dict]) -> str:
    """One line per kind of job: how many, and the request of each."""
    kinds = {}
    for r in requests:
        key = (r["job"], r["partition"], r["cpus"], r["mem_mb"], r["minutes"], r["gpus"] or r["gres"] or "-")
        kinds[key] = kinds.get(key, 0) + 1
    lines = [f"{name}: {len(requests)} sbatch calls", f"  {'job':<10} {'n':>4} {'partition':<9} {'CPUs':>4} "
             f"{'mem MB':>7} {'minutes':>7}  GPU"]
    lines += [f"  {j:<10} {n:>4} {p:<9} {c:>4} {m:>7} {t:>7}  {g}" for (j, p, c, m, t, g), n in kinds.items()]
    return "\n".join(lines)


def study(folder: Path, recipes: int, seeds: int) -> Path:
    """tests/tiny.yaml's recipe, `recipes` times (learning rates apart), each with `seeds` seeds."""
    base = {**yaml.safe_load((REPO / "config.yaml").read_text())["recipes"]["baseline"],
            **yaml.safe_load(TINY.read_text())["recipes"]["baseline"]}
    names = [f"r{i:02d}" for i in range(recipes)]
    path = folder / f"study_{recipes}x{seeds}.yaml"
    path.write_text(yaml.safe_dump({"seeds": list(range(seeds)), "runs": names,
                                    "recipes": {n: {**base, "lr": 0.01 + 0.001 * i} for i, n in enumerate(names)}}))
    return path


# ---- every CPU job asks for what its work needs, whatever the study size ----------------------------------

def assert_bounded(requests: list[dict]):
    for r in requests:
        if r["job"] in GPU_RULES:
            assert r["partition"] == "gpu" and r["gpus"] == "1", r
        else:
            assert r["partition"] == "cpu" and r["gpus"] is None and r["gres"] is None, r
    analysis = [r for r in requests if r["job"] == "analysis"]
    summary = [r for r in requests if r["job"] == "summary"]
    assert analysis and len(summary) == 1, [r["comment"] for r in requests]
    # The bounds: a run's analysis at most 2 CPUs and 8 GB, the summary 4 CPUs and 16 GB.
    assert all(r["cpus"] <= 2 and r["mem_mb"] <= 8000 for r in analysis), analysis
    assert all(r["cpus"] <= 4 and r["mem_mb"] <= 16000 for r in summary), summary
    assert {r["job"] for r in requests} <= GPU_RULES | {"analysis", "summary"}, "a CPU rule outside the groups"


@pytest.mark.slow  # snakemake submits the DAG to the fake sbatch
def test_a_two_seed_run_submits_nine_bounded_jobs(two_seed_calls):
    requests = [request(c) for c in two_seed_calls]
    print("\n" + table("2 seeds (tests/tiny.yaml + tests/slurm_tiny.yaml)", requests))
    assert sorted(r["job"] for r in requests) == sorted([*GPU_RULES, "analysis"] * 2 + ["summary"])
    assert_bounded(requests)
    # Each run's analysis: its six rules, two side by side (2 CPUs, 2 x 4000 MB), three layers of 5 min.
    assert {(r["cpus"], r["mem_mb"], r["minutes"]) for r in requests if r["job"] == "analysis"} == {(2, 8000, 15)}


@pytest.mark.slow
@pytest.mark.parametrize("recipes, seeds", [(3, 10), (50, 3)])
def test_study_requests_do_not_grow_with_the_study(fake, tmp_path, recipes, seeds):
    config = study(tmp_path, recipes, seeds)
    requests = [request(c) for c in fake.run(tmp_path / "run", "--configfile", TINY, config)]
    print("\n" + table(f"{recipes} recipes x {seeds} seeds", requests))
    assert len([r for r in requests if r["job"] == "analysis"]) == recipes * seeds
    assert len([r for r in requests if r["job"] == "train"]) == recipes * seeds
    assert_bounded(requests)
    (summary,) = [r for r in requests if r["job"] == "summary"]
    assert summary["cpus"] == 4 and summary["mem_mb"] == 16000, summary


# ---- the profile's forms for sites that differ -------------------------------------------------------------

def edited_profile(folder: Path, **variables) -> Path:
    """profiles/slurm with some of its edit block's variables changed, as a user would."""
    text = (PROFILE / "config.yaml").read_text()
    for name, value in variables.items():
        text, n = re.subn(rf'^(  {name}): .*$', rf"\1: {json.dumps(value)}", text, flags=re.M)
        assert n == 1, name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(text)
    return folder


@pytest.mark.slow
def test_qos_gres_and_extra_options_reach_sbatch(fake, tmp_path):
    profile = edited_profile(tmp_path / "profile", GPU_GRES="gpu:a100:1", GPU_QOS="gpu_long",
                             GPU_CONSTRAINT="a100|h100", GPU_EXTRA="--mail-type=FAIL --nice=10",
                             CPU_EXTRA="--nice=5")
    calls = fake.run(tmp_path / "run", "--configfile", TINY, SLURM_TINY, profiles=(profile, TEST_PROFILE))
    assert len(calls) == 9
    for c in calls:
        r, argv = request(c), c["argv"]
        if r["job"] in GPU_RULES:
            # --gres instead of --gpus; the site's QOS; the constraint as one argument (| is text).
            assert (r["gres"], r["gpus"], r["qos"], r["constraint"]) == ("gpu:a100:1", None, "gpu_long", "a100|h100"), c
            assert "--mail-type=FAIL" in argv and "--nice=10" in argv, argv
        else:
            assert (r["gres"], r["gpus"], r["qos"], r["constraint"]) == (None, None, None, None), c
            assert "--nice=5" in argv and "--mail-type=FAIL" not in argv, argv


@pytest.mark.slow
def test_the_shipped_profile_asks_for_gpus_and_nothing_else(two_seed_calls):
    for c in two_seed_calls:
        r = request(c)
        assert r["qos"] is None and r["constraint"] is None and r["gres"] is None, c
        assert r["gpus"] == ("1" if r["job"] in GPU_RULES else None), c


@pytest.mark.slow
def test_the_first_dry_run_needs_no_conda(fake, tmp_path):
    # The README's first cluster command, on a machine where conda is missing (as here).
    env_path = ":".join(p for p in fake.env["PATH"].split(":") if not (Path(p) / "conda").exists())
    p = subprocess.run([sys.executable, "-m", "snakemake", "--profile", str(PROFILE), "-n", "-d", str(tmp_path / "w")],
                       capture_output=True, text=True, timeout=300, cwd=REPO, env={**fake.env, "PATH": env_path})
    assert p.returncode == 0 and "conda" not in p.stderr.lower(), p.stderr[-3000:]
    assert not fake.calls()


# ---- the command reaches the job as written -----------------------------------------------------------------

@pytest.mark.slow
def test_the_command_is_handed_over_as_a_script_that_no_login_shell_reads(fake, tmp_path):
    data_dir = tmp_path / "data dir ü (x)"
    workdir = tmp_path / "run dir é"
    calls = fake.run(workdir, "--configfile", TINY, SLURM_TINY, "--config", f"data_dir={data_dir}")
    assert len(calls) == 9
    for c in calls:
        # No --wrap: the command line sbatch runs under holds no part of the job's command ...
        assert c["argv"][-1] == "/dev/stdin" and not any(a.startswith("--wrap") for a in c["argv"]), c["argv"]
        assert not any(str(data_dir) in a for a in c["argv"])
        assert option(c["argv"], "-D") == str(workdir)
        # ... which is a script, read once on the compute node: the value arrives exactly as given.
        shebang, command = c["script"].split("\n", 1)
        assert shebang == "#!/bin/sh" and "\n" not in command.strip()
        assert f"data_dir={data_dir}" in shlex.split(command), command


@pytest.mark.slow
def test_job_arrays_go_through_wrap_with_the_arrays_profile(fake, tmp_path):
    """profiles/slurm/arrays: the plugin (2.8.0) writes an array's task list on lines of their
    own in script mode, so arrays are submitted with --wrap instead."""
    args = ["--configfile", TINY, SLURM_TINY, "--slurm-array-jobs", "train", "--until", "train"]
    calls = fake.run(tmp_path / "run", *args, profiles=(PROFILE, PROFILE / "arrays", TEST_PROFILE))
    arrays = [c for c in calls if option(c["argv"], "--array")]
    assert len(arrays) == 1 and option(arrays[0]["argv"], "--array") == "1-2", [c["argv"] for c in calls]
    assert option(arrays[0]["argv"], "--wrap") and arrays[0]["script"] is None


# ---- nothing from a config value, a folder or a file name runs --------------------------------------------

def string_keys(schema: dict, path=()) -> list[tuple]:
    """Every place of the config schema that holds a string (values, list items, recipe names)."""
    found = []
    if schema.get("type") == "string" or all(isinstance(v, str) for v in schema.get("enum", [0])):
        found.append(path)
    for k, sub in schema.get("properties", {}).items():
        found += string_keys(sub, (*path, k))
    if isinstance(schema.get("additionalProperties"), dict):
        found += string_keys(schema["additionalProperties"], (*path, "baseline"))
    if "items" in schema:
        found += string_keys(schema["items"], (*path, 0))
    if "propertyNames" in schema:
        found.append((*path, "<name>"))
    return found


STRING_KEYS = string_keys(cfg.schema())


def hostile_config(key: tuple, value: str) -> dict:
    """A config that is tests/tiny.yaml's but for ``value`` at ``key``."""
    recipe = {**yaml.safe_load((REPO / "config.yaml").read_text())["recipes"]["baseline"],
              **yaml.safe_load(TINY.read_text())["recipes"]["baseline"]}
    if key == ("recipes", "<name>"):
        return {"runs": [value], "recipes": {value: recipe}}
    if key[:2] == ("study", "pairs"):
        return {"runs": ["baseline", "other"], "recipes": {"other": recipe},
                "study": {"pairs": [[value, "baseline"]]}}
    tree = node = {}
    for k, nxt in zip(key, key[1:]):
        node[k] = [] if isinstance(nxt, int) else {}
        node = node[k]
    if isinstance(node, list):
        node.append(value)
    else:
        node[key[-1]] = value
    return tree


def assert_refused(p: subprocess.CompletedProcess, what: str, fake: FakeSlurm, marker: Path):
    out = p.stdout + p.stderr
    assert p.returncode != 0 and re.search(rf"^{re.escape(what)}", out, re.M), out[-3000:]
    assert not marker.exists(), f"{marker.name}: shell syntax ran"
    assert not fake.calls(), "a job was submitted"


def test_the_schema_walk_finds_the_free_text_keys():
    assert {("data_dir",), ("runs", 0), ("recipes", "<name>"), ("study", "pairs", 0, 0)} <= set(STRING_KEYS)


def hostile_key_file(folder: Path, key: tuple) -> tuple[Path, Path, str]:
    """A config file holding shell syntax at ``key``: (the file, the file its syntax would create,
    the start of the refusal)."""
    marker = folder / "MARK"
    hostile = folder / "hostile.yaml"
    hostile.write_text(yaml.safe_dump(hostile_config(key, f"x$(touch {marker})`touch {marker}`")))
    return hostile, marker, "config key " + "/".join(map(str, key[:-1] if key[-1] == "<name>" else key))


@pytest.mark.parametrize("key", STRING_KEYS, ids=["/".join(map(str, k)) for k in STRING_KEYS])
def test_a_string_key_holding_shell_syntax_is_refused_naming_it(tmp_path, key):
    hostile, _, what = hostile_key_file(tmp_path, key)
    with pytest.raises(ConfigError) as e:
        check_config_as_the_snakefile_does(tmp_path / "run", TINY, hostile)
    assert str(e.value).startswith(what) and "\n" not in str(e.value), str(e.value)


@pytest.mark.slow  # snakemake: the check above runs before any job and nothing of the value runs
def test_a_string_key_holding_shell_syntax_stops_before_any_job(fake, tmp_path):
    hostile, marker, what = hostile_key_file(tmp_path, ("runs", 0))
    p = fake.snakemake(tmp_path / "run", "--configfile", TINY, hostile)
    assert_refused(p, what, fake, marker)


HOSTILE_DATA_DIRS = ['d$(touch {m})x', "d`touch {m}`x", 'd";touch {m};"x', "d' ; touch {m} ; 'x", "d\\x",
                     "d & touch {m}", "d | touch {m}", "d > {m}", "d < x", "d{seed}x", "d\ntouch {m}"]


def hostile_data_dir_file(folder: Path, value: str) -> tuple[Path, Path]:
    marker = folder / "MARK"
    hostile = folder / "hostile.yaml"  # a file, not --config: that would read "a\nb" as YAML, "a b"
    hostile.write_text(yaml.safe_dump({"data_dir": value.replace("{m}", str(marker))}))
    return hostile, marker


@pytest.mark.parametrize("value", HOSTILE_DATA_DIRS)
def test_data_dir_holding_shell_syntax_is_refused(tmp_path, value):
    hostile, _ = hostile_data_dir_file(tmp_path, value)
    with pytest.raises(ConfigError, match=r"^config key data_dir: [^\n]* holds shell syntax"):
        check_config_as_the_snakefile_does(tmp_path / "run", TINY, hostile)


@pytest.mark.slow  # snakemake: refused before any job, and nothing of the value runs
def test_data_dir_holding_shell_syntax_stops_before_any_job(fake, tmp_path):
    hostile, marker = hostile_data_dir_file(tmp_path, HOSTILE_DATA_DIRS[0])
    p = fake.snakemake(tmp_path / "run", "--configfile", TINY, hostile)
    assert_refused(p, "config key data_dir: ", fake, marker)


def test_a_working_directory_or_config_file_holding_shell_syntax_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^working directory: .* holds shell syntax"):
        check_config_as_the_snakefile_does(tmp_path / "run$(touch MARK)", TINY)
    named = tmp_path / "c`touch MARK`.yaml"
    named.write_text(TINY.read_text())
    with pytest.raises(ConfigError, match=r"^config file: .* holds shell syntax"):
        check_config_as_the_snakefile_does(tmp_path / "run", named)


@pytest.mark.slow
def test_a_working_directory_or_config_file_holding_shell_syntax_stops_before_any_job(fake, tmp_path):
    marker = tmp_path / "MARK"
    p = fake.snakemake(tmp_path / f"run$(touch {marker})", "--configfile", TINY)
    assert_refused(p, "working directory: ", fake, marker)
    named = tmp_path / "c`touch MARK`.yaml"
    named.write_text(TINY.read_text())
    p = fake.snakemake(tmp_path / "run", "--configfile", named)
    assert_refused(p, "config file: ", fake, tmp_path / "run" / "MARK")


@pytest.mark.parametrize("char", sorted(cfg.SHELL_SYNTAX))
def test_every_shell_character_is_refused_and_named(char):
    config = {"data_dir": f"a{char}b", "recipes": {"ok": {"schedule": "step"}}}
    with pytest.raises(ConfigError, match=r"^config key data_dir: .* holds shell syntax") as e:
        cfg.refuse_shell_syntax(config, "/tmp/ok")
    assert "\n" not in str(e.value) and repr(char) in str(e.value)


def test_spaces_and_non_ascii_letters_stay_allowed():
    cfg.refuse_shell_syntax({"data_dir": "/data/Données été (copie ü)", "runs": ["a-b_c"]},
                            "/scratch/run dir é", "/home/ü/work flow", ["/home/ü/my config.yaml"])


# ---- the dataset step on the login node needs no PyTorch ----------------------------------------------------

NO_TORCH = """
import runpy, sys
sys.modules["torch"] = sys.modules["torchvision"] = None  # any import of them fails
sys.path.insert(0, {scripts!r})
from cifar100 import data
data.CIFAR100_URL = {url!r}
data.CIFAR100_ARCHIVE_MD5 = {md5!r} or data.CIFAR100_ARCHIVE_MD5
sys.argv = ["download.py", *{args!r}]
runpy.run_path({script!r}, run_name="__main__")
"""


def download_without_torch(url: str, *args, md5="") -> subprocess.CompletedProcess:
    code = NO_TORCH.format(scripts=str(REPO / "scripts"), url=url, md5=md5, args=list(map(str, args)),
                           script=str(REPO / "scripts" / "download.py"))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_the_dataset_step_runs_without_pytorch(tmp_path):
    # The conda env of the dataset rule (envs/data.yaml) has no PyTorch: neither path may import it.
    small = json.dumps({"train_size": 40, "test_size": 20, "num_classes": 4, "num_coarse": 2})
    p = download_without_torch("file:///nowhere", "--data-dir", tmp_path / "d", "--dataset", "synthetic",
                               "--synthetic", small)
    assert p.returncode == 0 and "40 train / 20 test images" in p.stdout, p.stderr
    # The real download: an archive served from a file:// URL, in the official layout but not the
    # official data, is fetched and refused by its md5; taken as the official archive, it is
    # unpacked with the standard library and its files are refused by theirs.
    import hashlib
    import tarfile

    from cifar100 import data

    made = data.write_synthetic(tmp_path / "fake", train_size=40, test_size=20, num_classes=4, num_coarse=2)
    archive = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(made, arcname="cifar-100-python")
    p = download_without_torch(archive.as_uri(), "--data-dir", tmp_path / "real", "--dataset", "cifar100")
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "the archive's md5 is not the official one" in p.stderr, p.stderr
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    p = download_without_torch(archive.as_uri(), "--data-dir", tmp_path / "real", "--dataset", "cifar100", md5=md5)
    assert p.returncode == 2 and "train, test, meta: md5 is not the official one" in p.stderr, p.stderr
    assert not (tmp_path / "real").exists() or not any((tmp_path / "real").iterdir())  # nothing left behind
