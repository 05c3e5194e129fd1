#!/usr/bin/env python
"""Train ResNet-18 on CIFAR-100 with one recipe and one seed.

    python scripts/train.py --recipe baseline --seed 0                  # recipe from config.yaml
    python scripts/train.py --config my.yaml --recipe cosine --seed 3 --model runs/c3/model.pt
    python scripts/train.py --recipe-json '{"epochs": 2, ...}'          # how the Snakefile calls it

Writes --model (the selected model) and --history (one row per epoch). Beside the model it keeps
last.pt (the resume state, every epoch and on SIGTERM/SIGUSR1) and attempts.log: rerunning after an
interruption resumes from last.pt, and a finished last.pt rebuilds the model without training.
Every setting not given as a flag comes from the config (and its schema's defaults).
Exit status 128+signal after a preemption checkpoint, 2 on bad input.
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch

from cifar100 import config as cfg
from cifar100 import data, deadline, engine, numerics
from cifar100.cli import positive_int, run_cli, seconds, seed
from cifar100.exceptions import ConfigError, OutputError, Preempted, UserError
from cifar100.files import ensure_dir


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="config file with the recipes and run settings (default: the repository's "
                   "config.yaml; none with --recipe-json, which gives the recipe: the schema's defaults fill in)")
    p.add_argument("--recipe", default="baseline", help="recipe name in the config (default: %(default)s)")
    p.add_argument("--recipe-json", help="the recipe itself as JSON; overrides the config's (default: none)")
    p.add_argument("--seed", type=seed, default=0, help="run seed, 0..2**32-1 (default: %(default)s)")
    p.add_argument("--data-dir", help="folder holding cifar-100-python/ (default: the config's data_dir)")
    p.add_argument("--model", help="selected model to write (default: results/{recipe}/seed{seed}/model.pt)")
    p.add_argument("--history", help="per-epoch CSV to write (default: history.csv beside the model)")
    p.add_argument("--selection", choices=cfg.choices("selection"),
                   help="model selection (default: the config's selection)")
    p.add_argument("--val-size", type=positive_int,
                   help="held-out images for best_val (default: the config's val_size)")
    p.add_argument("--deterministic", action=argparse.BooleanOptionalAction,
                   help="bit-reproducible, slower (default: the config's deterministic)")
    p.add_argument("--precision", choices=cfg.choices("precision"),
                   help="CUDA autocast (default: the config's precision)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction,
                   help="torch.compile (default: the config's compile)")
    p.add_argument("--threads", type=positive_int,
                   help="CPU threads (default: PyTorch's choice; deterministic runs use a fixed count)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default: %(default)s)")
    p.add_argument("--checkpoint-margin", type=seconds, help="in a Slurm job with a time limit, checkpoint and "
                   "stop this many seconds before it (default: none; the Snakefile passes the profile's)")
    return p.parse_args(argv)


def resolve(a) -> tuple[dict, dict]:
    """(run settings, recipe), validated once: the flags over the config file (none when the Snakefile
    passes the recipe as --recipe-json with every setting as a flag), defaults from the schema."""
    config_file = a.config or (None if a.recipe_json is not None else cfg.REPO_CONFIG)
    conf = cfg.read(config_file) if config_file else {}
    flags = {"data_dir": a.data_dir, "selection": a.selection, "val_size": a.val_size,
             "deterministic": a.deterministic, "precision": a.precision, "compile": a.compile}
    conf.update({k: v for k, v in flags.items() if v is not None})
    if a.recipe_json is not None:
        try:
            recipe = json.loads(a.recipe_json)
        except (json.JSONDecodeError, RecursionError) as e:  # RecursionError: nested past Python's limit
            raise ConfigError(f"--recipe-json: not valid JSON ({str(e) or 'nested too deeply'})") from e
        conf["recipes"] = {**(conf.get("recipes") or {}), a.recipe: recipe}
    elif a.recipe not in (conf.get("recipes") or {}):
        raise ConfigError(f"recipe {a.recipe!r} is not defined in {config_file}")
    conf.update(runs=[a.recipe], seeds=[a.seed], study={})  # this run only: its recipe, its seed
    cfg.validate(conf)
    return conf, conf["recipes"][a.recipe]


def main(argv=None):
    a = parse_args(argv)
    conf, recipe = resolve(a)
    spec = engine.RunSpec(recipe=recipe, recipe_name=a.recipe, seed=a.seed, selection=conf["selection"],
                          val_size=conf["val_size"], deterministic=conf["deterministic"],
                          precision=conf["precision"], compile=conf["compile"])
    model_path = Path(a.model or f"results/{a.recipe}/seed{a.seed}/model.pt")
    history_path = Path(a.history or model_path.with_name("history.csv"))
    out_dir = ensure_dir(model_path.parent)
    if a.threads:
        torch.set_num_threads(a.threads)
    ds = data.load(conf["data_dir"])
    if spec.selection == "best_val" and spec.val_size >= len(ds.train):
        raise ConfigError(f"val_size {spec.val_size} leaves nothing to train on: {conf['data_dir']} has "
                          f"{len(ds.train)} training images (selection best_val)")
    # Snakemake empties the rule's log before each attempt; attempts.log (not an output) keeps them all.
    attempts = out_dir / "attempts.log"

    def log(message: str) -> None:
        print(message, flush=True)
        try:
            with open(attempts, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        except OSError as e:  # the first line is logged before training: a read-only folder stops here
            raise OutputError(f"cannot write {attempts}: {e.strerror or e}") from e

    log(f"training {a.recipe} seed {a.seed} on {numerics.pick_device(a.device)}: {len(ds.train)} images, "
        f"{ds.num_classes} classes -> {model_path}")
    if "SLURM_JOB_ID" in os.environ:  # where the scheduler placed this attempt (tests/test_slurm.py reads it)
        log(f"slurm job {os.environ['SLURM_JOB_ID']}: partition {os.environ.get('SLURM_JOB_PARTITION')}, "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}")
    try:
        with deadline.stop_before_end(a.checkpoint_margin, log):
            engine.train(ds, spec, out_dir, device=a.device, log=log, model_path=model_path,
                         history_path=history_path)
    except (Preempted, UserError) as e:
        log(f"stopped: {e}")
        raise


if __name__ == "__main__":
    run_cli(main)
