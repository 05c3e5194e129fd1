#!/usr/bin/env python
"""Evaluate the selected model on the test set once: predictions.npz and metrics.json.

    python scripts/evaluate.py --checkpoint results/baseline/seed0/model.pt --data-dir data \
        --predictions results/baseline/seed0/predictions.npz --metrics results/baseline/seed0/metrics.json

predictions.npz holds ``logits`` (float32 [N, C]) and ``labels`` (int64 [N]); row i is test image i.
Every later analysis works from it and the dataset alone, on the CPU.
"""

import argparse
import numpy as np
import torch

from cifar100 import checkpoint, config, data, engine, provenance
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
    p.add_argument("--batch-size", type=int, help="evaluation batch (default: 1000 on CUDA, 256 on the CPU)")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="fp32",
                   help="CUDA autocast for evaluation (default: %(default)s, exact logits)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default: %(default)s)")
    return p.parse_args(argv)


# Kept apart from cifar100.metrics.topk_accuracy on purpose: evaluation runs on a GPU node, and
# depending on metrics.py would make every edit of the analysis numbers rerun it.
def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    top = np.argpartition(-logits, min(k, logits.shape[1]) - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def main(argv=None):
    a = parse_args(argv)
    test, fine_names, _, _ = data.load_test(a.data_dir)
    device = engine.pick_device(a.device)
    model, ckpt = checkpoint.load_model(a.checkpoint, device=device, class_names=fine_names)
    amp = engine.autocast_for(device, a.precision)
    logits = engine.predict(model, DeviceSplit(test.images, test.labels, device), amp,
                            batch_size=a.batch_size).numpy().astype(np.float32)
    labels = test.labels.astype(np.int64)
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    metrics = {
        "top1": topk_accuracy(logits, labels, 1), "top5": topk_accuracy(logits, labels, 5), "loss": loss,
        "n": int(len(labels)), "num_classes": len(fine_names), "selection": ckpt["selection"],
        "selected_epoch": ckpt["epoch"], "recipe": ckpt["recipe_name"], "seed": ckpt["seed"],
        "selection_note": ("best_test picks the epoch with the best test accuracy, as the notebook does: "
                           "optimistic, the test set was used for model selection")
        if ckpt["selection"] == "best_test" else "",
        # How the result was made, so that a file found on disk a year later says so.
        "run_spec": ckpt.get("run_spec"), "training_provenance": ckpt.get("provenance"),
        "evaluation_provenance": provenance.provenance(device),
    }
    write_npz(a.predictions, logits=logits, labels=labels)
    write_json(a.metrics, metrics)
    print(f"{ckpt['recipe_name']} seed {ckpt['seed']}: top-1 {metrics['top1']:.4f} top-5 {metrics['top5']:.4f} "
          f"loss {loss:.4f} on {len(labels)} test images")


if __name__ == "__main__":
    run_cli(main)
