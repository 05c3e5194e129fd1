"""Never retrain a finished run, never lose more than the current epoch, same weights whatever the
cores, and every broken file a one-line message with nothing lost."""

import errno
import os
import signal

import pytest
import torch

from cifar100 import checkpoint, data, engine, numerics
from cifar100.exceptions import CheckpointError, OutputError, Preempted
from helpers import TINY_RECIPE, run_script, train_args


def _spec(deterministic=False, seed=0, **recipe):
    return engine.RunSpec(recipe={**TINY_RECIPE, **recipe}, recipe_name="baseline", seed=seed,
                          selection="best_test", val_size=50, deterministic=deterministic, precision="bf16",
                          compile=False)


def _run(tiny_data, out, spec, logs=None):
    return engine.train(data.load(tiny_data), spec, out, device="cpu",
                        log=(logs.append if logs is not None else lambda m: None))


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_deterministic_weights_do_not_depend_on_the_cores(tiny_data, tmp_path):
    runs = {}
    for threads in ("1", "2"):
        out = tmp_path / threads
        run_script("train.py", *train_args(tiny_data, out, {**TINY_RECIPE, "epochs": 1}),
                   env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
        runs[threads] = _weights(out / "model.pt")
    assert _same(runs["1"], runs["2"])
    torch_threads = torch.get_num_threads()
    try:  # in-process, whatever torch.set_num_threads said before
        torch.set_num_threads(2)
        with pytest.warns(UserWarning, match="slower"):
            _run(tiny_data, tmp_path / "in", _spec(deterministic=True, epochs=1))
    finally:
        torch.set_num_threads(torch_threads)
    assert _same(_weights(tmp_path / "in" / "model.pt"), runs["1"])
    assert checkpoint.load(tmp_path / "in" / "model.pt")["provenance"]["threads"] == numerics.DETERMINISTIC_CPU_THREADS


# Which randomness the seed drives (vary): tests/test_engine_recipes.py.


def test_a_signal_during_the_last_epochs_evaluation_or_the_final_writes_still_finishes(tiny_data, tmp_path,
                                                                                      monkeypatch):
    real_row, real_write = engine.epoch_row, engine.write_outputs

    def signal_then_row(p, epoch, totals):
        if epoch == TINY_RECIPE["epochs"]:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_row(p, epoch, totals)

    def signal_then_write(*a, **kw):
        os.kill(os.getpid(), signal.SIGUSR1)
        return real_write(*a, **kw)

    monkeypatch.setattr(engine, "epoch_row", signal_then_row)
    monkeypatch.setattr(engine, "write_outputs", signal_then_write)
    metrics = _run(tiny_data, tmp_path, _spec())
    assert metrics["epoch"] in (1, 2) and (tmp_path / "model.pt").exists()
    assert checkpoint.load(tmp_path / "last.pt")["complete"]


def test_a_signal_during_an_earlier_epochs_evaluation_keeps_that_epoch(tiny_data, tmp_path, monkeypatch):
    real_row = engine.epoch_row

    def signal_then_row(p, epoch, totals):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_row(p, epoch, totals)

    monkeypatch.setattr(engine, "epoch_row", signal_then_row)
    with pytest.raises(Preempted):
        _run(tiny_data, tmp_path, _spec())
    state = checkpoint.load(tmp_path / "last.pt")
    assert state["position"] == {"epoch": 2, "step": 0} and len(state["history"]) == 1


def test_a_finished_run_of_other_training_code_is_trained_again(tiny_data, tmp_path, monkeypatch):
    _run(tiny_data, tmp_path, _spec(epochs=1))
    (tmp_path / "model.pt").unlink()
    monkeypatch.setattr(numerics, "TRAINING_CODE", numerics.TRAINING_CODE[:1])  # as if the code had changed
    logs = []
    _run(tiny_data, tmp_path, _spec(epochs=1), logs)
    assert any("finished run of other training code: training again from scratch" in m for m in logs)
    assert any(m.startswith("epoch 1/1") for m in logs)


def _unfinished(tiny_data, out, spec, **arithmetic):
    """A last.pt as if killed after the last epoch's checkpoint, written with other ``arithmetic``."""
    _run(tiny_data, out, spec)
    state = checkpoint.load(out / "last.pt")
    checkpoint.save(out / "last.pt", {**state, "complete": False,
                                      "arithmetic": {**state["arithmetic"], **arithmetic}})


def test_a_deterministic_run_refuses_a_resume_that_cannot_be_exact(tiny_data, tmp_path):
    spec = _spec(deterministic=True, epochs=1)
    with pytest.warns(UserWarning):
        _unfinished(tiny_data, tmp_path, spec, device_name="Another CPU", torch="2.0.0")
    with pytest.raises(CheckpointError) as e:
        _run(tiny_data, tmp_path, spec)
    message = str(e.value)
    assert "cannot resume exactly here" in message and "'Another CPU' -> " in message and "torch '2.0.0'" in message
    assert "delete" in message and "\n" not in message
    assert (tmp_path / "last.pt").exists()  # nothing lost


def test_a_non_deterministic_run_resumes_elsewhere_and_says_so(tiny_data, tmp_path):
    spec = _spec(epochs=1)
    _unfinished(tiny_data, tmp_path, spec, device_name="Another CPU", threads=64)
    logs = []
    _run(tiny_data, tmp_path, spec, logs)
    assert any("resuming with other arithmetic" in m and "threads 64 ->" in m for m in logs)
    assert any(m.startswith("resuming from") for m in logs) and (tmp_path / "model.pt").exists()


def test_a_resume_checkpoint_lacking_fields_is_kept_aside_and_training_starts_over(tiny_data, tmp_path):
    spec = _spec(epochs=1)
    _run(tiny_data, tmp_path, spec)
    state = checkpoint.load(tmp_path / "last.pt")
    del state["optimizer"]
    checkpoint.save(tmp_path / "last.pt", {**state, "complete": False})
    (tmp_path / "model.pt").unlink()  # else the finished model.pt is kept (test_run_identity.py)
    logs = []
    _run(tiny_data, tmp_path, spec, logs)
    aside = list(tmp_path.glob("last.pt.unreadable-*"))
    assert len(aside) == 1 and "optimizer" not in checkpoint.load(aside[0])
    assert any("ignoring resume checkpoint" in m and "lacks field 'optimizer'" in m for m in logs)
    assert any(m.startswith("epoch 1/1") for m in logs)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"message": "no fingerprint"}'])
def test_a_malformed_divergence_record_is_kept_aside_with_one_line(tiny_data, tmp_path, text):
    (tmp_path / "diverged.json").write_text(text)
    logs = []
    _run(tiny_data, tmp_path, _spec(epochs=1), logs)
    aside = list(tmp_path.glob("diverged.json.unreadable-*"))
    assert len(aside) == 1 and aside[0].read_text() == text
    assert any(m.startswith(f"ignoring {tmp_path / 'diverged.json'}") and "\n" not in m for m in logs)


def test_a_model_with_nan_weights_is_refused_in_one_line(tiny_data, tmp_path):
    _run(tiny_data, tmp_path, _spec(epochs=1))
    ckpt = checkpoint.load(tmp_path / "model.pt")
    ckpt["state_dict"]["fc.weight"][0, 0] = float("nan")
    checkpoint.save(tmp_path / "nan.pt", ckpt)
    with pytest.raises(CheckpointError, match=r"nan\.pt: 1 weight tensors hold NaN or inf \(first: fc\.weight\)"):
        checkpoint.load_model(tmp_path / "nan.pt", num_classes=10)


def test_checkpoint_errors_keep_the_reason_and_drop_the_unsafe_advice(tmp_path):
    import numpy as np

    torch.save({"format": checkpoint.FORMAT, "array": np.zeros(3)}, tmp_path / "np.pt")
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(tmp_path / "np.pt")
    message = str(e.value)
    assert "\n" not in message and "weights_only" not in message and "add_safe_globals" not in message
    assert "Unsupported global: GLOBAL numpy" in message and "was not an allowed global by default" in message


@pytest.mark.parametrize("failure, message", [("read-only", r"cannot write in .*: Read-only file system"),
                                              ("full", r"has 0 MiB free; this run's checkpoints need about")])
def test_an_unwritable_or_full_run_folder_fails_before_training(tiny_data, tmp_path, monkeypatch, failure, message):
    if failure == "read-only":
        def read_only(*a, **kw):
            raise OSError(errno.EROFS, "Read-only file system")
        monkeypatch.setattr(engine.tempfile, "TemporaryFile", read_only)
    else:
        usage = engine.shutil.disk_usage(tmp_path)
        monkeypatch.setattr(engine.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    logs = []
    with pytest.raises(OutputError, match=message):
        _run(tiny_data, tmp_path, _spec(epochs=1), logs)
    assert not logs and not (tmp_path / "last.pt").exists()


def test_model_pt_records_where_it_came_from(tiny_data, tmp_path):
    spec = _spec(epochs=1)
    _run(tiny_data, tmp_path, spec)
    ckpt = checkpoint.load(tmp_path / "model.pt")
    assert ckpt["run_spec"] == {**spec.__dict__}
    prov = ckpt["provenance"]
    assert prov["versions"]["torch"] == str(torch.__version__) and prov["device"] == "cpu"
    assert prov["threads"] >= 1 and len(prov["code"]["scripts_sha256"]) == 64
    assert set(prov["code"]) == {"git_commit", "git_dirty", "scripts_sha256"}
