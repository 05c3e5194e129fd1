"""Run identity: a finished or interrupted training is reused exactly when it is this run (same data
content, same settings that change the arithmetic, same model code), never otherwise; a model is
never evaluated on other data; an intact finished model.pt is never retrained for a lost last.pt."""

import shutil

import pytest

from cifar100 import checkpoint, data, engine
from cifar100.exceptions import CheckpointError, Preempted
from helpers import TINY_RECIPE, run_main, same_weights, signal_after_steps


def spec(**kw):
    settings = {"recipe": {**TINY_RECIPE, "epochs": 2}, "recipe_name": "baseline", "seed": 0,
                "selection": "best_test", "val_size": 50, "deterministic": True, "precision": "fp32",
                "compile": False}
    return engine.RunSpec(**{**settings, **kw})


def train(data_dir, out, s=None):
    logs = []
    engine.train(data.load(data_dir), s or spec(), out, device="cpu", log=logs.append)
    return logs


def trained(logs) -> bool:
    return any(m.startswith("epoch 1/") for m in logs)


@pytest.fixture
def other_data(tmp_path):
    """Another dataset with the same class names and sizes as tiny_data (other images and labels)."""
    d = tmp_path / "other data"
    data.write_synthetic(d, train_size=300, test_size=100, num_classes=10, num_coarse=5, seed=7)
    return d


@pytest.fixture(scope="module")
def finished_once(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    with pytest.warns(UserWarning, match="slower"):
        logs = train(tiny_data, out)
    assert trained(logs)
    return out


@pytest.fixture
def finished(finished_once, tmp_path):
    """A finished run of its own for each test (model.pt, last.pt, history.csv): a copy of one training."""
    return shutil.copytree(finished_once, tmp_path / "run")


def test_the_data_digest_follows_the_content_not_the_folder(tiny_data, other_data, tmp_path):
    shutil.copytree(tiny_data, tmp_path / "copy")
    assert engine.data_version(data.load(tmp_path / "copy")) == engine.data_version(data.load(tiny_data))
    assert engine.data_version(data.load(other_data)) != engine.data_version(data.load(tiny_data))


@pytest.mark.filterwarnings("ignore:deterministic")
def test_replaced_data_with_the_same_classes_retrains_instead_of_rebuilding(finished, tiny_data, other_data):
    logs = train(other_data, finished)
    assert any("differs in: data sha256-" in m for m in logs) and trained(logs)
    assert not any("rebuilding" in m for m in logs)
    recorded = checkpoint.load(finished / "model.pt")["fingerprint"]["data"]
    assert recorded == engine.data_version(data.load(other_data)) != engine.data_version(data.load(tiny_data))


@pytest.mark.filterwarnings("ignore:deterministic")
def test_an_interrupted_run_never_resumes_on_replaced_data(tiny_data, other_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_step = signal_after_steps(monkeypatch, 3)
    with pytest.raises(Preempted):
        train(tiny_data, out)
    assert checkpoint.load(out / "last.pt")["position"]["step"] == 3
    monkeypatch.setattr(engine, "train_step", real_step)
    logs = train(other_data, out)
    assert not any(m.startswith("resuming") for m in logs) and any("differs in: data sha256-" in m for m in logs)
    # the same as a run trained on the other data from the start
    train(other_data, tmp_path / "fresh")
    assert same_weights(out / "model.pt", tmp_path / "fresh" / "model.pt")


@pytest.mark.filterwarnings("ignore:deterministic")
@pytest.mark.parametrize("changed", [{"val_size": 99}, {"precision": "bf16"}, {"recipe_name": "renamed"}])
def test_a_setting_the_run_does_not_use_never_retrains(finished, tiny_data, tmp_path, changed):
    """val_size under best_test, bf16 on the CPU (which trains in fp32), the recipe's name."""
    shutil.copy(finished / "model.pt", tmp_path / "before.pt")
    last = (finished / "last.pt").stat().st_mtime_ns
    logs = train(tiny_data, finished, spec(**changed))
    assert any("rebuilding model.pt" in m for m in logs) and not trained(logs)
    assert same_weights(finished / "model.pt", tmp_path / "before.pt")
    assert (finished / "last.pt").stat().st_mtime_ns == last  # the finished state is not rewritten


@pytest.mark.filterwarnings("ignore:deterministic")
@pytest.mark.parametrize("changed", [{"val_size": 99, "selection": "best_val"}, {"seed": 1},
                                     {"recipe": {**TINY_RECIPE, "epochs": 2, "lr": 0.01}}])
def test_a_setting_that_changes_the_arithmetic_retrains(finished, tiny_data, changed):
    logs = train(tiny_data, finished, spec(**changed))
    assert trained(logs)


@pytest.mark.filterwarnings("ignore:deterministic")
def test_a_finished_model_is_kept_when_last_pt_is_gone(finished, tiny_data, tmp_path):
    kept = tmp_path / "kept.pt"
    shutil.copy(finished / "model.pt", kept)
    history = (finished / "history.csv").read_text()
    (finished / "last.pt").unlink()
    (finished / "history.csv").unlink()
    logs = train(tiny_data, finished)
    assert any("kept, history.csv rebuilt from it, no training" in m for m in logs) and not trained(logs)
    assert same_weights(finished / "model.pt", kept)
    assert (finished / "history.csv").read_text() == history
    assert not (finished / "last.pt").exists()


@pytest.mark.filterwarnings("ignore:deterministic")
def test_a_kept_model_of_other_data_is_not_reused(finished, other_data):
    (finished / "last.pt").unlink()
    logs = train(other_data, finished)
    assert trained(logs)


def test_evaluation_refuses_a_model_trained_on_other_data(finished, other_data, tiny_data, tmp_path):
    out = tmp_path / "eval"
    args = ["--checkpoint", finished / "model.pt", "--predictions", out / "predictions.npz",
            "--metrics", out / "metrics.json", "--device", "cpu"]
    p = run_main("evaluate.py", *args, "--data-dir", other_data, check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "trained on other data" in p.stderr
    assert not out.exists() or not any(out.iterdir())
    run_main("evaluate.py", *args, "--data-dir", tiny_data)
    assert (out / "predictions.npz").is_file()


def test_a_model_without_a_recorded_data_version_is_refused_for_evaluation(finished, tiny_data, tmp_path):
    ckpt = checkpoint.load(finished / "model.pt")
    del ckpt["fingerprint"]
    checkpoint.save(tmp_path / "old.pt", ckpt)
    version = engine.data_version(data.load(tiny_data))
    with pytest.raises(CheckpointError, match="trained on other data \\(not recorded\\)"):
        checkpoint.load_model(tmp_path / "old.pt", data_version=version)
    checkpoint.load_model(finished / "model.pt", data_version=version)
