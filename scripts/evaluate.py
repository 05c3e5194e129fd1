#!/usr/bin/env python
r"""Evaluate the selected model on the test set once: predictions.npz and metrics.json.

    python scripts/evaluate.py --checkpoint results/baseline/seed0/model.pt --data-dir data \
        --predictions results/baseline/seed0/predictions.npz --metrics results/baseline/seed0/metrics.json

predictions.npz holds ``logits`` (float32 [N, C]) and ``labels`` (int64 [N]); row i is test image i;
``logits_tta`` (float32 [N, C]) are flip test-time augmentation's: the mean of the logits of each
image and of its mirror image. metrics.json also gives ``last10_test_acc``, the mean test accuracy
of the selected model over the run's last 10 epochs (no epoch picked by its test score).
metrics.json records which model this is (recipe, seed, selected epoch, how it was made). Every
number computed from the predictions (accuracy, F1, calibration, ...) is CPU analysis (report.py and
the other analysis rules), so that this GPU job depends only on the code that runs the model.
A model trained on other data than --data-dir holds is refused.
"""

import argparse

import numpy as np

from cifar100 import checkpoint, config, data, engine, numerics, provenance
from cifar100.cli import run_cli
from cifar100.files import write_json, write_npz
from cifar100.pipeline import DeviceSplit


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="model.pt written by train.py (required)")
    p.add_argument("--data-dir", default=config.default("data_dir"),
                   help="folder holding cifar-100-python/ (default: %(default)s)")
    p.add_argument("--predictions", required=True, help="predictions.npz to write (required)")
    p.add_argument("--metrics", required=True, help="metrics.json to write (required)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default: %(default)s)")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    ds = data.load(a.data_dir)
    test, fine_names = ds.test, ds.fine_names
    device = numerics.pick_device(a.device)
    model, ckpt = checkpoint.load_model(a.checkpoint, device=device, class_names=fine_names,
                                        data_version=engine.data_version(ds))
    # fp32 logits (no autocast): every number after this file is computed from them.
    split, amp = DeviceSplit(test.images, test.labels, device), numerics.autocast_for(device, "fp32")
    logits = engine.predict(model, split, amp).numpy().astype(np.float32)
    logits_tta = engine.predict(model, split, amp, flip=True).numpy().astype(np.float32)
    labels = test.labels.astype(np.int64)
    metrics = {
        "n": int(len(labels)), "num_classes": len(fine_names), "selection": ckpt["selection"],
        "selected_epoch": ckpt["epoch"], "recipe": ckpt["recipe_name"], "seed": ckpt["seed"],
        "selection_note": ("best_test picks the epoch with the best test accuracy, as the notebook does: "
                           "optimistic, the test set was used for model selection")
        if ckpt["selection"] == "best_test" else "",
        "last10_test_acc": engine.last_epochs_accuracy(ckpt["history"], ckpt["recipe"])
        if ckpt.get("history") else None,
        # How the result was made, so that a file found on disk a year later says so.
        "run_spec": ckpt.get("run_spec"), "training_provenance": ckpt.get("provenance"),
        "evaluation_provenance": provenance.provenance(device),
    }
    write_npz(a.predictions, logits=logits, labels=labels, logits_tta=logits_tta)
    write_json(a.metrics, metrics)
    print(f"{ckpt['recipe_name']} seed {ckpt['seed']} (epoch {ckpt['epoch']}): logits of {len(labels)} test "
          f"images -> {a.predictions}")


if __name__ == "__main__":
    run_cli(main)
