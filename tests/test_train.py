"""Training: learning, determinism, checkpoints, selection, progress output."""

import csv
import json

import numpy as np
import pytest
import torch

from cifar100 import checkpoint, data, engine
from helpers import TINY_RECIPE, run_main, run_script, train_args


def _train(tiny_data, out, seed=0, selection="best_test", **recipe):
    spec = engine.RunSpec(recipe={**TINY_RECIPE, **recipe}, recipe_name="baseline", seed=seed,
                          selection=selection, val_size=50, deterministic=True, precision="bf16", compile=False)
    with pytest.warns(UserWarning, match="slower"):
        return engine.train(data.load(tiny_data), spec, out, device="cpu", log=lambda m: None)


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def _history(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_few_epochs_lower_the_loss(tiny_data, tmp_path):
    _train(tiny_data, tmp_path, epochs=4, lr=0.05)
    h = _history(tmp_path / "history.csv")
    assert [int(r["epoch"]) for r in h] == [1, 2, 3, 4]
    assert float(h[-1]["train_loss"]) < float(h[0]["train_loss"])
    assert list(h[0]) == engine.HISTORY_FIELDS
    assert float(h[0]["lr"]) == 0.05 and float(h[1]["lr"]) == 0.025  # StepLR(step 1, gamma 0.5)
    assert all(float(r["images_per_s"]) > 0 for r in h)


def test_same_seed_gives_bit_identical_weights_and_another_seed_does_not(tiny_data, tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        _train(tiny_data, tmp_path / name, seed=seed, epochs=1)
    a, b, c = (_weights(tmp_path / n / "model.pt") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_checkpoint_roundtrip(tiny_data, tmp_path):
    _train(tiny_data, tmp_path, epochs=1)
    raw = torch.load(tmp_path / "model.pt", weights_only=True)
    for key in ("state_dict", "model_args", "recipe", "epoch", "metrics", "fine_names", "versions", "seed"):
        assert key in raw
    assert raw["model_args"] == {"num_classes": 10, "width": TINY_RECIPE["width"]}
    assert raw["fine_names"] == data.load(tiny_data).fine_names
    model, ckpt = checkpoint.load_model(tmp_path / "model.pt", num_classes=10)
    assert all(torch.equal(model.state_dict()[k], raw["state_dict"][k]) for k in raw["state_dict"])
    assert not model.training


@pytest.mark.parametrize("selection", ["last", "best_val"])
def test_model_selection(tiny_data, tmp_path, selection):
    _train(tiny_data, tmp_path, selection=selection, epochs=2)
    h = _history(tmp_path / "history.csv")
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)
    if selection == "last":
        assert ckpt["epoch"] == 2
    else:
        assert h[0]["val_acc"] != ""
        best = max(range(2), key=lambda i: (float(h[i]["val_acc"]), -i))
        assert ckpt["epoch"] == best + 1


def test_validation_split_is_stratified_and_disjoint():
    labels = np.repeat(np.arange(10), 50)
    train, val = engine.val_split_indices(labels, 100)
    assert len(val) == 100 and np.bincount(labels[val]).tolist() == [10] * 10
    assert not set(train) & set(val) and len(train) + len(val) == 500


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "constant"])
def test_other_schedules_train(tiny_data, tmp_path, schedule):
    _train(tiny_data, tmp_path, schedule=schedule, epochs=2, nesterov=True, label_smoothing=0.1)
    lrs = [float(r["lr"]) for r in _history(tmp_path / "history.csv")]
    if schedule == "cosine":
        assert lrs[1] < lrs[0]
    if schedule == "constant":
        assert lrs == [TINY_RECIPE["lr"]] * 2


@pytest.mark.slow  # a training subprocess: its output as the rule's log file gets it
def test_log_file_gets_one_line_per_epoch_and_no_carriage_returns(tiny_data, tmp_path):
    p = run_script("train.py", *train_args(tiny_data, tmp_path / "run"))
    assert "\r" not in p.stdout + p.stderr
    epochs = [ln for ln in p.stdout.splitlines() if ln.startswith("epoch ")]
    assert len(epochs) == TINY_RECIPE["epochs"]
    assert "slower" in p.stderr  # the deterministic switch warns


def test_evaluate_writes_predictions_and_metrics(tiny_data, tmp_path):
    run = tmp_path / "run"
    run_main("train.py", *train_args(tiny_data, run))
    run_main("evaluate.py", "--checkpoint", run / "model.pt", "--data-dir", tiny_data, "--device", "cpu",
             "--predictions", run / "predictions.npz", "--metrics", run / "metrics.json")
    pred = np.load(run / "predictions.npz")
    assert pred["logits"].dtype == np.float32 and pred["logits"].shape == (100, 10)
    assert pred["labels"].dtype == np.int64
    assert np.array_equal(pred["labels"], data.load(tiny_data).test.labels)
    m = json.loads((run / "metrics.json").read_text())
    assert {k: m[k] for k in ("n", "num_classes", "selection", "recipe", "seed")} == {
        "n": 100, "num_classes": 10, "selection": "best_test", "recipe": "baseline", "seed": 0}
    assert not {"top1", "top5", "loss"} & set(m)  # statistics are CPU analysis (report.py), not this GPU job
    # the checkpoint's test accuracy at the selected epoch is what the predictions give again
    top1 = float((pred["logits"].argmax(1) == pred["labels"]).mean())
    assert top1 == pytest.approx(torch.load(run / "model.pt", weights_only=True)["metrics"]["test_acc"])


def test_a_dataset_with_other_classes_trains_and_evaluates(tmp_path):
    data.write_synthetic(tmp_path / "d", train_size=90, test_size=30, num_classes=3, num_coarse=1)
    run = tmp_path / "run"
    run_main("train.py", *train_args(tmp_path / "d", run, {**TINY_RECIPE, "epochs": 1}))
    run_main("evaluate.py", "--checkpoint", run / "model.pt", "--data-dir", tmp_path / "d",
             "--predictions", run / "predictions.npz", "--metrics", run / "metrics.json")
    assert np.load(run / "predictions.npz")["logits"].shape == (30, 3)
    assert json.loads((run / "metrics.json").read_text())["num_classes"] == 3
