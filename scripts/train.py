#!/usr/bin/env python
"""Train ResNet-18 on CIFAR-100 with one recipe and one seed.

    python scripts/train.py --recipe baseline --seed 0                  # recipe from config.yaml
    python scripts/train.py --config my.yaml --recipe cosine --seed 3 --out-dir runs/cosine3
    python scripts/train.py --recipe-json '{"epochs": 2, ...}'          # how the Snakefile calls it

Writes into --out-dir: model.pt (the selected model), history.csv (one row per epoch) and
last.pt (the resume state, every epoch and on SIGTERM/SIGUSR1). Rerunning after an interruption
resumes from last.pt. Exit status 128+signal after a preemption checkpoint, 2 on bad input.
"""

import argparse
import json
import os
import time

from cifar100 import config as cfg
from cifar100 import data, engine
from cifar100.cli import run_cli
from cifar100.exceptions import ConfigError, Preempted, UserError
from cifar100.files import ensure_dir


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="config file with the recipes and run settings "
                   "(default: config.yaml at the repository root; not read when --recipe-json is given)")
    p.add_argument("--recipe", default="baseline", help="recipe name in the config (default: %(default)s)")
    p.add_argument("--recipe-json", help="the recipe itself as JSON; overrides the config's (default: none)")
    p.add_argument("--seed", type=int, default=0, help="run seed (default: %(default)s)")
    p.add_argument("--data-dir", help="folder holding cifar-100-python/ (default: the config's data_dir)")
    p.add_argument("--out-dir", help="run folder (default: results/{recipe}/seed{seed})")
    p.add_argument("--selection", choices=["best_test", "last", "best_val"],
                   help="model selection (default: the config's selection)")
    p.add_argument("--val-size", type=int, help="held-out images for best_val (default: the config's val_size)")
    p.add_argument("--deterministic", action=argparse.BooleanOptionalAction,
                   help="bit-reproducible, slower (default: the config's deterministic)")
    p.add_argument("--precision", choices=["bf16", "fp32"], help="CUDA autocast (default: the config's precision)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, help="torch.compile (default: the config's compile)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default: %(default)s)")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    conf = {} if a.recipe_json is not None and a.config is None else cfg.load(a.config or cfg.REPO_CONFIG)
    if a.recipe_json is not None:
        recipe = cfg.validate_recipe(a.recipe, json.loads(a.recipe_json))
    elif a.recipe in conf["recipes"]:
        recipe = conf["recipes"][a.recipe]
    else:
        raise ConfigError(f"recipe {a.recipe!r} is not defined in {a.config or cfg.REPO_CONFIG}")

    def pick(flag, key, default):
        return flag if flag is not None else conf.get(key, default)

    spec = engine.RunSpec(recipe=recipe, recipe_name=a.recipe, seed=a.seed,
                          selection=pick(a.selection, "selection", "best_test"),
                          val_size=pick(a.val_size, "val_size", 5000),
                          deterministic=pick(a.deterministic, "deterministic", False),
                          precision=pick(a.precision, "precision", "bf16"),
                          compile=pick(a.compile, "compile", False))
    ds = data.load(pick(a.data_dir, "data_dir", "data"))
    out_dir = ensure_dir(a.out_dir or f"results/{a.recipe}/seed{a.seed}")
    # Snakemake empties the rule's log before each attempt; attempts.log (not an output) keeps them all.
    attempts = out_dir / "attempts.log"

    def log(message: str) -> None:
        print(message, flush=True)
        with open(attempts, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    log(f"training {a.recipe} seed {a.seed} on {engine.pick_device(a.device)}: {len(ds.train)} images, "
        f"{ds.num_classes} classes -> {out_dir}")
    if "SLURM_JOB_ID" in os.environ:  # where the scheduler placed this attempt (tests/test_slurm.py reads it)
        log(f"slurm job {os.environ['SLURM_JOB_ID']}: partition {os.environ.get('SLURM_JOB_PARTITION')}, "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}")
    try:
        engine.train(ds, spec, out_dir, device=a.device, log=log)
    except (Preempted, UserError) as e:
        log(f"stopped: {e}")
        raise


if __name__ == "__main__":
    run_cli(main)
