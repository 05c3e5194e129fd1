"""Helpers the tests share (imported as a module; conftest.py holds only fixtures)."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(SCRIPTS))

TINY_RECIPE = {"epochs": 2, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
               "nesterov": False, "schedule": "step", "step_size": 1, "gamma": 0.5,
               "label_smoothing": 0.0, "width": 8, "vary": "all"}


def run_script(name: str, *args, check=True, timeout=300, env=None, **kw) -> subprocess.CompletedProcess:
    """Run scripts/<name> as a user would; returns the completed process (text output)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    p = subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, env=full_env, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{name} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def train_args(data_dir, out_dir, recipe=None, seed=0, *extra):
    return ["--recipe-json", json.dumps(recipe or TINY_RECIPE), "--seed", seed, "--data-dir", data_dir,
            "--model", Path(out_dir) / "model.pt", "--selection", "best_test", "--deterministic", "--device",
            "cpu", *extra]


_SNAKEMAKE_FORKS = []


def _snakemake_main(args, cwd, env, out, err):
    """In a child of the fork server: ``snakemake *args`` in ``cwd`` with ``env``, its output to files."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(f, fd)
        os.close(f)
    sys.argv = ["snakemake", *args]  # what the Snakefile's busy-folder check reads
    from snakemake.cli import main

    main(args)  # exits; multiprocessing makes sys.exit's code the process's exit code


def snakemake(*args, cwd=None, env=None, timeout=1200) -> subprocess.CompletedProcess:
    """``python -m snakemake *args``, as subprocess.run(..., capture_output=True, text=True) returns it,
    in a fresh process forked from a server that has imported Snakemake once (saves about 1 s of CPU a
    call). Nothing of the workflow is imported before the fork: each call reads the Snakefile and the
    package anew, so an edit of either between calls is seen as by a new ``snakemake``."""
    import multiprocessing
    import tempfile

    if not _SNAKEMAKE_FORKS:
        multiprocessing.set_forkserver_preload(["snakemake.cli"])
        _SNAKEMAKE_FORKS.append(multiprocessing.get_context("forkserver"))
    args = [str(a) for a in args]
    with tempfile.TemporaryDirectory(prefix="snakemake-call-") as tmp:
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        child = _SNAKEMAKE_FORKS[0].Process(target=_snakemake_main, args=(
            args, str(cwd or os.getcwd()), dict(os.environ if env is None else env), str(out), str(err)))
        child.start()
        child.join(timeout)
        if child.is_alive():
            child.kill()
            child.join()
            raise subprocess.TimeoutExpired(["snakemake", *args], timeout)
        return subprocess.CompletedProcess(["snakemake", *args], child.exitcode,
                                           out.read_text(errors="replace"), err.read_text(errors="replace"))


def workflow_outputs(snakefile: Path, workdir: Path, *configfiles) -> list[str]:
    """Every output file of the workflow's DAG, as Snakemake itself lists it (``--summary``), so
    that the tests expect exactly what the rules declare."""
    p = snakemake("-s", snakefile, "-d", workdir, "--summary", "--configfile", *configfiles, timeout=300)
    if p.returncode != 0:
        raise AssertionError(f"snakemake --summary failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    lines = p.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("output_file"))
    return [line.split("\t")[0] for line in lines[start + 1:] if line.strip()]


# The Snakefile's data versions other than the official CIFAR-100 (data.content_version, synthetic_dir).
DATA_VERSIONS = r"synthetic-[0-9a-f]+|md5-[0-9a-f]+"


def results_root(workdir) -> Path:
    """Where a workflow run in ``workdir`` keeps its results (the Snakefile's RESULTS): results/ for
    the official CIFAR-100, results/<data version>/ for any other data, e.g. the tiny configs'
    synthetic set (results/synthetic-<key>/). Exactly one such folder must exist."""
    others = [p for p in Path(workdir, "results").glob("*") if p.is_dir() and re.fullmatch(DATA_VERSIONS, p.name)]
    if len(others) > 1:
        raise AssertionError(f"results of several datasets in {workdir}: {sorted(p.name for p in others)}")
    return others[0] if others else Path(workdir, "results")


def load_script(name):
    """scripts/<name>.py as a module (under a private name, apart from the package modules)."""
    spec = importlib.util.spec_from_file_location(f"_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Evil:
    """Pickles to a call of os.system: a file that runs code when unpickled without restriction."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def same_weights(a, b) -> bool:
    """Whether two checkpoints (model.pt or last.pt paths) hold bit-identical weights."""
    import torch

    wa, wb = (torch.load(p, weights_only=True)["state_dict"] for p in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def preempt_then_resume(train, last_pt, monkeypatch, steps: int) -> dict:
    """Run ``train()`` with a signal after its ``steps``-th SGD step (it checkpoints and raises
    Preempted), then again to the end; returns the position last.pt held in between."""
    import pytest

    from cifar100 import checkpoint, engine
    from cifar100.exceptions import Preempted

    real_step = signal_after_steps(monkeypatch, steps)
    with pytest.raises(Preempted):
        train()
    position = checkpoint.load(last_pt)["position"]
    monkeypatch.setattr(engine, "train_step", real_step)
    train()
    return position


def signal_after_steps(monkeypatch, steps: int, signum=None):
    """Make training send itself SIGUSR1 (or ``signum``) right after its ``steps``-th SGD step."""
    import signal

    from cifar100 import engine

    real_step, calls = engine.train_step, []

    def step_then_signal(*args):
        out = real_step(*args)
        calls.append(1)
        if len(calls) == steps:
            os.kill(os.getpid(), signum or signal.SIGUSR1)
        return out

    monkeypatch.setattr(engine, "train_step", step_then_signal)
    return real_step
