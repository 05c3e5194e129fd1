"""Preemption, exact resume, and broken or hostile inputs: a clear error and nothing lost."""

import copy
import errno
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from cifar100 import checkpoint, data, engine, files
from cifar100.config import load as load_config
from cifar100.config import validate
from cifar100.exceptions import ConfigError, Diverged, OutputError
from helpers import (Evil, REPO, SCRIPTS, TINY_RECIPE, preempt_then_resume, run_main, run_script, same_weights,
                     train_args)

LONG = {**TINY_RECIPE, "epochs": 3, "batch_size": 32}  # 10 steps an epoch on the tiny set: stops in epoch 2 below


def _spec(deterministic=False, **recipe):
    return engine.RunSpec(recipe={**TINY_RECIPE, **recipe}, recipe_name="baseline", seed=0, selection="best_test",
                          val_size=50, deterministic=deterministic, precision="bf16", compile=False)


# train.py, made to send itself a signal at a chosen point: right after its STEP-th SGD step, or
# in the middle of its SAVE-th checkpoint write (half the new file written, not yet renamed over
# the old one). The same point on every machine, however fast.
SIGNAL_ITSELF = """
import importlib.util, os, sys
sys.path.insert(0, {scripts!r})
from cifar100 import checkpoint, engine
from cifar100.cli import run_cli
signum, step, save, counts = {signum}, {step}, {save}, {{"step": 0, "save": 0}}
real_step, real_save = engine.train_step, checkpoint.torch.save

def step_then_signal(*args):
    out = real_step(*args)
    counts["step"] += 1
    if counts["step"] == step:
        os.kill(os.getpid(), signum)
    return out

def save_then_signal(obj, f, *args, **kw):
    real_save(obj, f, *args, **kw)
    counts["save"] += 1
    if counts["save"] == save:
        os.truncate(f, os.path.getsize(f) // 2)
        os.kill(os.getpid(), signum)

engine.train_step, checkpoint.torch.save = step_then_signal, save_then_signal
spec = importlib.util.spec_from_file_location("train", {train!r})
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)
run_cli(train.main, sys.argv[1:])
"""


def _train_signalling_itself(tiny_data, out, signum, step=0, save=0):
    code = SIGNAL_ITSELF.format(scripts=str(SCRIPTS), train=str(SCRIPTS / "train.py"), signum=int(signum),
                                step=step, save=save)
    return subprocess.run([sys.executable, "-c", code, *map(str, train_args(tiny_data, out, LONG))],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def clean_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    run_script("train.py", *train_args(tiny_data, out, LONG))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("where", [{"step": 13}, {"save": 2}], ids=["mid-epoch", "mid-save"])
def test_sigkill_mid_epoch_or_mid_save_then_rerun_is_bit_identical(tiny_data, tmp_path, clean_run, where):
    """Killed (no handler runs) in epoch 2, after its 3rd step; or while writing epoch 2's last.pt."""
    out = tmp_path / "run"
    p = _train_signalling_itself(tiny_data, out, signal.SIGKILL, **where)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    assert not (out / "model.pt").exists()
    assert checkpoint.load(out / "last.pt")["position"] == {"epoch": 2, "step": 0}  # epoch 1's, intact
    half_written = [f for f in out.iterdir() if files.is_temp_name(f.name)]
    assert len(half_written) == ("save" in where), half_written
    p = run_script("train.py", *train_args(tiny_data, out, LONG))
    assert "resuming from" in p.stdout
    assert not [f for f in out.iterdir() if files.is_temp_name(f.name)]
    attempts = (out / "attempts.log").read_text()  # both attempts, though the rule's log keeps one
    assert attempts.count("training baseline seed 0") == 2 and "resuming from" in attempts
    assert same_weights(out / "model.pt", clean_run / "model.pt")
    assert same_weights(out / "last.pt", clean_run / "last.pt")
    assert [ln for ln in (out / "history.csv").read_text().splitlines()][0].startswith("epoch,lr")
    assert len((out / "history.csv").read_text().splitlines()) == LONG["epochs"] + 1


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_signal_checkpoints_mid_epoch_exits_nonzero_and_resumes_exactly(tiny_data, tmp_path, clean_run, sig):
    out = tmp_path / "run"
    p = _train_signalling_itself(tiny_data, out, sig, step=13)  # in epoch 2, after its 3rd step
    output = p.stdout + p.stderr
    assert p.returncode == 128 + sig, output
    assert f"received signal {int(sig)}" in output and "resume checkpoint written" in output
    assert "stopped: stopped by signal" in (out / "attempts.log").read_text()
    state = torch.load(out / "last.pt", weights_only=True)
    assert not state["complete"] and state["position"] == {"epoch": 2, "step": 3}
    p = run_script("train.py", *train_args(tiny_data, out, LONG))
    pos = state["position"]
    assert f"resuming from {out / 'last.pt'}: epoch {pos['epoch']}, step {pos['step']}" in p.stdout
    assert same_weights(out / "model.pt", clean_run / "model.pt")


@pytest.mark.slow  # training subprocesses
def test_resume_checkpoint_of_another_seed_or_recipe_is_ignored(tiny_data, tmp_path):
    out = tmp_path / "run"
    p = _train_signalling_itself(tiny_data, out, signal.SIGTERM, step=13)  # seed 0 stopped in epoch 2
    assert p.returncode == 128 + signal.SIGTERM and not checkpoint.load(out / "last.pt")["complete"], p.stderr
    p = run_script("train.py", *train_args(tiny_data, out, LONG, 7))
    assert "ignoring resume checkpoint" in p.stdout and "seed 0" in p.stdout and "seed 7" in p.stdout
    assert "resuming" not in p.stdout
    p = run_script("train.py", *train_args(tiny_data, out, {**LONG, "lr": 0.01}, 7))
    assert "ignoring resume checkpoint" in p.stdout  # same seed, different recipe


@pytest.mark.slow  # training subprocesses (in this process: test_run_identity.py)
def test_a_finished_run_is_rebuilt_from_last_pt_and_never_trained_again(tiny_data, tmp_path):
    out = tmp_path / "run"
    run_script("train.py", *train_args(tiny_data, out))
    shutil.copy(out / "model.pt", tmp_path / "model.first.pt")
    history = (out / "history.csv").read_text()
    (out / "model.pt").unlink()  # what `snakemake --rerun-incomplete` does after a killed login node
    (out / "history.csv").unlink()
    t0 = time.time()
    p = run_script("train.py", *train_args(tiny_data, out))
    seconds = time.time() - t0
    assert "finished: rebuilding model.pt and history.csv from it, no training" in p.stdout
    assert not [ln for ln in p.stdout.splitlines() if ln.startswith("epoch ")]
    assert same_weights(out / "model.pt", tmp_path / "model.first.pt")
    assert (out / "history.csv").read_text() == history
    assert seconds < 60, seconds  # python and torch start-up; no epoch


def test_divergence_stops_at_once_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    # epoch 1 trains normally; gamma 1e12 makes epoch 2's learning rate absurd
    recipe = {**TINY_RECIPE, "epochs": 3, "step_size": 1, "gamma": 1e12}
    spec = _spec(**recipe)
    with pytest.raises(Diverged, match=r"training diverged at epoch 2, step \d+ of 5: the loss became NaN or inf"):
        engine.train(data.load(tiny_data), spec, tmp_path, device="cpu", log=lambda m: None)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["position"] == {"epoch": 2, "step": 0}
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.slow  # a training subprocess (in this process: the test above)
def test_divergence_from_the_cli_is_one_line_and_exit_2(tiny_data, tmp_path):
    # weight decay 1 at lr 100 multiplies every weight by -99 a step: inf within two epochs
    recipe = {**TINY_RECIPE, "epochs": 4, "lr": 100, "weight_decay": 1}
    p = run_script("train.py", *train_args(tiny_data, tmp_path, recipe), check=False)
    assert p.returncode == 2
    assert p.stderr.splitlines()[-1].startswith("train.py: error: training diverged at epoch 2")


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tiny_data, tmp_path, monkeypatch):
    real_save, calls = torch.save, []

    def failing_save(obj, f, *a, **kw):
        calls.append(f)
        if len(calls) == 2:  # epoch 2's checkpoint
            real_save(obj, f, *a, **kw)  # a partial write happens ...
            raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(checkpoint.torch, "save", failing_save)
    spec = _spec(epochs=3)
    with pytest.raises(OutputError, match=r"cannot write .*last\.pt: No space left on device"):
        engine.train(data.load(tiny_data), spec, tmp_path, device="cpu", log=lambda m: None)
    state = checkpoint.load(tmp_path / "last.pt")
    assert state["position"] == {"epoch": 2, "step": 0}
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


def test_file_size_limit_is_a_clear_error_and_the_old_file_survives(tmp_path):
    target = tmp_path / "last.pt"
    checkpoint.save(target, {"state_dict": {"w": torch.zeros(10)}})
    before = target.read_bytes()
    code = (
        "import resource, signal, sys, torch\n"
        f"sys.path.insert(0, {str(SCRIPTS)!r})\n"
        "from cifar100 import checkpoint\n"
        "from cifar100.exceptions import OutputError\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        f"    checkpoint.save({str(target)!r}, {{'state_dict': {{'w': torch.zeros(100000)}}}})\n"
        "except OutputError as e:\n"
        "    print(e)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "cannot write" in p.stdout and "last.pt" in p.stdout and "cut short" in p.stdout, p.stderr
    assert target.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["last.pt"]


def test_unwritable_results_folder(tiny_data, tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder should be")
    p = run_main("train.py", *train_args(tiny_data, blocker / "baseline" / "seed0"), check=False)
    assert p.returncode == 2 and "cannot create folder" in p.stderr.splitlines()[-1]


# --- checkpoints from elsewhere -------------------------------------------------------------

@pytest.fixture(scope="module")
def model_ckpt(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    run_main("train.py", *train_args(tiny_data, out, {**TINY_RECIPE, "epochs": 1}))
    return out / "model.pt"




def _evaluate_error(ckpt, data_dir):
    p = run_main("evaluate.py", "--checkpoint", ckpt, "--data-dir", data_dir, "--predictions",
                 ckpt.parent / "eval" / "predictions.npz", "--metrics", ckpt.parent / "eval" / "metrics.json",
                 check=False)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate.py: error: "), p.stderr
    assert not (ckpt.parent / "eval" / "predictions.npz").exists()
    return lines[0]


def test_truncated_checkpoint(tmp_path, tiny_data, model_ckpt):
    bad = tmp_path / "model.pt"
    bad.write_bytes(model_ckpt.read_bytes()[:5000])
    assert "unreadable or unsafe checkpoint" in _evaluate_error(bad, tiny_data)


def test_foreign_checkpoint(tmp_path, tiny_data):
    bad = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(3)}, bad)
    assert "not a checkpoint of this project" in _evaluate_error(bad, tiny_data)


def test_checkpoint_that_runs_code_is_refused(tmp_path, tiny_data):
    bad, marker = tmp_path / "model.pt", tmp_path / "pwned"
    torch.save({"format": checkpoint.FORMAT, "payload": Evil(marker)}, bad)
    assert "unsupported global posix.system" in _evaluate_error(bad, tiny_data).lower()
    assert not marker.exists()


def test_checkpoint_class_count_must_fit_the_dataset(tmp_path, model_ckpt):
    data.write_synthetic(tmp_path / "d3", train_size=30, test_size=9, num_classes=3, num_coarse=1)
    msg = _evaluate_error(model_ckpt, tmp_path / "d3")
    assert "checkpoint has 10 classes but the dataset has 3" in msg


# --- config ----------------------------------------------------------------------------------

@pytest.fixture
def config():
    return copy.deepcopy(load_config(REPO / "config.yaml"))


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.update(learning_rate=0.1), r"\(top level\): Additional properties .*'learning_rate'"),
    (lambda c: c["recipes"]["baseline"].update(epochs=-3), r"recipes/baseline/epochs: -3 is less than"),
    (lambda c: c["recipes"]["baseline"].update(lr="fast"), r"recipes/baseline/lr: 'fast' is not of type"),
    (lambda c: c.update(seeds=[]), r"config key seeds: \[\] should be non-empty"),
    (lambda c: c.update(runs=["baseline", "adamw"]), r"runs: recipe 'adamw' is not defined"),
    (lambda c: c.update(selection="best"), r"config key selection: 'best' is not one of"),
    (lambda c: c.update(precision="fp16"), r"config key precision: 'fp16' is not one of"),
    (lambda c: c["recipes"]["baseline"].update(vary="both"), r"recipes/baseline/vary: 'both' is not one of"),
    (lambda c: c.update(compile=True, deterministic=True), r"config key compile: torch.compile is not bit-repro"),
    (lambda c: c["recipes"]["cosine"].update(momentun=0.9), r"recipes/cosine: Additional properties .*'momentun'"),
])
def test_bad_config_is_rejected_naming_the_key(config, mutate, message):
    mutate(config)
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_command_line_strings_become_the_types_the_schema_asks_for(config):
    config.update(seeds=["0", "3"], deterministic="true", val_size="100", data_dir="123")
    config["recipes"]["baseline"]["lr"] = "0.05"
    validate(config)
    assert config["seeds"] == [0, 3] and config["deterministic"] is True and config["val_size"] == 100
    assert config["data_dir"] == "123" and config["recipes"]["baseline"]["lr"] == 0.05
    config["seeds"] = ["zero"]
    with pytest.raises(ConfigError, match=r"config key seeds/0: 'zero' is not of type 'integer'"):
        validate(config)


def test_repository_config_is_valid_and_baseline_is_the_notebook(config):
    assert config["recipes"]["baseline"] == {
        "epochs": 100, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "nesterov": False, "schedule": "step", "step_size": 30, "gamma": 0.1,
        "label_smoothing": 0.0, "width": 64, "vary": "all",  # vary: the one seed drives everything
        # the schema's defaults of the newer keys: none of them on
        "warmup_epochs": 0, "cutout": 0, "mixup": 0.0, "cutmix": 0.0, "cutmix_prob": 0.5, "ema_decay": 0.0,
        "ema_model": False}


# --- resume edge cases, in-process ------------------------------------------------------------



def _run(tiny_data, out, spec, logs=None):
    return engine.train(data.load(tiny_data), spec, out, device="cpu",
                        log=(logs.append if logs is not None else lambda m: None))


def test_preempted_mid_epoch_onecycle_resumes_with_exact_weights_and_history(tiny_data, tmp_path, monkeypatch):
    spec = _spec(schedule="onecycle", epochs=2, batch_size=32)  # lr changes every step
    _run(tiny_data, tmp_path / "clean", spec)
    position = preempt_then_resume(lambda: _run(tiny_data, tmp_path / "run", spec), tmp_path / "run" / "last.pt",
                                   monkeypatch, 13)
    assert position == {"epoch": 2, "step": 3}  # epoch 2, step 3 of 10
    assert same_weights(tmp_path / "run" / "model.pt", tmp_path / "clean" / "model.pt")
    lr = [ln.split(",")[1] for ln in (tmp_path / "run" / "history.csv").read_text().splitlines()]
    assert lr == [ln.split(",")[1] for ln in (tmp_path / "clean" / "history.csv").read_text().splitlines()]


def test_resumed_after_the_last_epoch_still_writes_every_output(tiny_data, tmp_path):
    spec = _spec(epochs=2)
    _run(tiny_data, tmp_path, spec)
    # as if killed between the last epoch's checkpoint and model.pt; Snakemake then deletes outputs
    state = checkpoint.load(tmp_path / "last.pt")
    checkpoint.save(tmp_path / "last.pt", {**state, "complete": False})
    (tmp_path / "model.pt").unlink()
    (tmp_path / "history.csv").unlink()
    logs = []
    _run(tiny_data, tmp_path, spec, logs)
    assert any("resuming from" in m and "epoch 3, step 0" in m for m in logs)
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 3 and (tmp_path / "model.pt").exists()


def test_a_diverged_run_fails_at_once_when_retried_until_its_recipe_changes(tiny_data, tmp_path, monkeypatch):
    spec = _spec(epochs=3, gamma=1e12)
    with pytest.raises(Diverged):
        _run(tiny_data, tmp_path, spec)
    real_step, steps = engine.train_step, []
    monkeypatch.setattr(engine, "train_step", lambda *a: steps.append(1) or real_step(*a))
    with pytest.raises(Diverged, match=r"diverged at epoch 2.*in an earlier attempt, recorded in .*diverged\.json"):
        _run(tiny_data, tmp_path, spec)
    assert not steps  # refused from the record: not one step trained again
    _run(tiny_data, tmp_path, _spec(epochs=1))  # a fixed recipe trains, and forgets the record
    assert not (tmp_path / "diverged.json").exists()


def test_unreadable_resume_checkpoint_is_kept_aside_and_training_starts_over(tiny_data, tmp_path):
    (tmp_path / "last.pt").write_bytes(b"PK\x03\x04 torn")
    (tmp_path / ".last.pt.999-deadbeef.cifar100-partial.pt").write_bytes(b"left by a killed writer")
    logs = []
    _run(tiny_data, tmp_path, _spec(epochs=1), logs)
    aside = [p.name for p in tmp_path.glob("last.pt.unreadable-*")]
    assert len(aside) == 1 and any(aside[0] in m for m in logs)
    assert not (tmp_path / ".last.pt.999-deadbeef.cifar100-partial.pt").exists()
    assert checkpoint.load(tmp_path / "last.pt")["complete"]


def test_nesterov_without_momentum_is_a_config_error(config):
    config["recipes"]["baseline"].update(nesterov=True, momentum=0)
    with pytest.raises(ConfigError, match=r"recipes/baseline/nesterov: Nesterov momentum needs momentum > 0"):
        validate(config)
