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


def run_main(name: str, *args, check=True, env=None) -> subprocess.CompletedProcess:
    """scripts/<name> run in this process, as ``python scripts/<name>`` would run it (``run_cli`` of its
    ``main``, which turns a UserError into one line and exit 2), with ``env`` added to the environment
    meanwhile; returns what run_script returns. For the checks of a script's output, exit status and
    one-line errors that need no process of their own (run_script starts one: seconds)."""
    import contextlib
    import io

    from cifar100.cli import run_cli

    module = load_script(name.removesuffix(".py"))
    argv, out, err = [str(SCRIPTS / name), *map(str, args)], io.StringIO(), io.StringIO()
    saved = sys.argv, dict(os.environ)
    sys.argv = argv
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run_cli(module.main, argv[1:])
                code = 0
            except SystemExit as e:  # as the interpreter reports it: sys.exit("text") prints it, exit 1
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
                code = 1 if isinstance(e.code, str) else e.code
    finally:
        sys.argv = saved[0]
        os.environ.clear()
        os.environ.update(saved[1])
    p = subprocess.CompletedProcess(argv, code or 0, out.getvalue(), err.getvalue())
    if check and p.returncode != 0:
        raise AssertionError(f"{name} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def train_args(data_dir, out_dir, recipe=None, seed=0, *extra):
    return ["--recipe-json", json.dumps(recipe or TINY_RECIPE), "--seed", seed, "--data-dir", data_dir,
            "--model", Path(out_dir) / "model.pt", "--selection", "best_test", "--deterministic", "--device",
            "cpu", *extra]


# Runs each `snakemake` call in a fresh process forked from one that has imported Snakemake and the
# libraries the Snakefile's modules import once (about 1 s of CPU a call), never the package.
FORK_SERVER = """
import json, os, sys
import jsonschema, numpy, yaml  # noqa: F401
import snakemake.cli
for line in sys.stdin:
    args, cwd, env, out, err = json.loads(line)
    pid = os.fork()
    if pid == 0:  # the child: a new snakemake, which reads the Snakefile and the package anew
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, out, os.O_WRONLY), (2, err, os.O_WRONLY)):
            f = os.open(path, flags)
            os.dup2(f, fd)
            os.close(f)
        sys.argv = ["snakemake", *args]  # what the Snakefile's busy-folder check reads
        snakemake.cli.main(args)  # exits (SystemExit), as `python -m snakemake` does
        sys.exit(0)
    print(pid, flush=True)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""
_fork_server = []


def snakemake(*args, cwd=None, env=None, timeout=1200) -> subprocess.CompletedProcess:
    """``python -m snakemake *args`` in ``cwd`` with ``env`` (default: this process's), as
    ``subprocess.run(..., capture_output=True, text=True)`` returns it: a new process, forked from a
    server that imported Snakemake once (a third of a dry run's time), never the project's package:
    each call reads the Snakefile and scripts/ anew, so it sees every edit made before it."""
    import atexit
    import signal
    import tempfile
    import threading

    if not _fork_server or _fork_server[0].poll() is not None:
        _fork_server[:] = [subprocess.Popen([sys.executable, "-c", FORK_SERVER], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, text=True)]
        atexit.register(_fork_server[0].stdin.close)  # the server ends with its input
    server = _fork_server[0]
    args = [str(a) for a in args]
    with tempfile.TemporaryDirectory(prefix="snakemake-call-") as tmp:
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        out.touch()
        err.touch()
        request = [args, str(cwd or os.getcwd()), dict(os.environ if env is None else env), str(out), str(err)]
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        pid, killed = int(server.stdout.readline()), []
        timer = threading.Timer(timeout, lambda: killed.append(os.kill(pid, signal.SIGKILL)))
        timer.start()
        code = int(server.stdout.readline())  # when the child has ended
        timer.cancel()
        if killed:
            raise subprocess.TimeoutExpired(["snakemake", *args], timeout)
        return subprocess.CompletedProcess(["snakemake", *args], code, out.read_text(errors="replace"),
                                           err.read_text(errors="replace"))


def check_config_as_the_snakefile_does(workdir, *configfiles) -> dict:
    """What ``snakemake -d workdir --configfile *configfiles`` does with the config before any job,
    in this process: config.yaml with the files merged over it in order (Snakemake's own loader and
    merge), then the Snakefile's checks (cfg.check_workflow_config). Returns the
    resolved config; a bad value raises ConfigError, naming the key, the folder or the file."""
    from snakemake.common.configfile import load_configfile
    from snakemake.settings.types import ConfigSettings
    from snakemake.utils import update_config

    from cifar100 import config as cfg

    settings = ConfigSettings(configfiles=[Path(f) for f in configfiles])
    config = load_configfile(REPO / "config.yaml")  # the Snakefile's `configfile:`
    update_config(config, settings.overwrite_config)
    return cfg.check_workflow_config(config, workdir, REPO, [*settings.configfiles, REPO / "config.yaml"])


def workflow_outputs(snakefile: Path, workdir: Path, *configfiles) -> list[str]:
    """Every output file of the workflow's DAG, as Snakemake itself lists it (``--summary``), so
    that the tests expect exactly what the rules declare."""
    p = snakemake("-s", snakefile, "-d", workdir, "--summary", "--configfile", *configfiles, timeout=300)
    if p.returncode != 0:
        raise AssertionError(f"snakemake --summary failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    lines = p.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("output_file"))
    return [line.split("\t")[0] for line in lines[start + 1:] if line.strip()]


# A data_dir with spaces, non-ASCII letters and brackets: allowed, and every rule must handle it
# (the try_it_here run of conftest.py uses it).
ODD_DATA_DIR = "data dir ü (x)"

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
