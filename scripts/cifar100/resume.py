"""Preemption and exact resume: the signals that stop a run after its current step, what
``last.pt`` holds to continue it, and how a new attempt finds its way back (an earlier attempt's
state, a finished model.pt, or the record that this very run diverged).

Resume contract: ``last.pt`` in the run folder (not a Snakemake output, so a failed job keeps
it) holds a ``ResumeState``: model, optimiser, scheduler, the weights' moving average, history,
best model and the position inside the epoch. Shuffling and augmentation (crop, flip, cutout,
mixup, CutMix) come from two CPU generators seeded by (order seed, epoch) and (augment seed,
epoch), so a resumed run replays exactly the batches it would have seen. With ``deterministic`` an
interrupted run ends bit-identical to an uninterrupted one, whatever the core count, and a
resume that could not be exact (another GPU model, torch version or training code) is refused.
A ``last.pt`` marked complete rebuilds model.pt and history.csv in seconds, with no training.
"""

import os
import random
import signal
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from . import checkpoint
from .exceptions import CheckpointError, Diverged, OutputError
from .files import read_json


class StopFlag:
    """SIGTERM / SIGUSR1 set a flag; the loop checkpoints after the current step and exits.

    A context manager, so the previous handlers come back when training ends, except the
    default (die) after a run that finished: its model.pt is complete, and a SIGTERM in the
    second the process takes to exit would make it end with 143, so that Snakemake or Slurm
    retried a finished job. From then on the signal is noted and the process exits 0.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __enter__(self):
        self.signum = 0
        self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, exc_type, *exc):
        for s, handler in self.previous.items():
            finished = exc_type is None and handler == signal.SIG_DFL
            signal.signal(s, _after_finish if finished else handler)

    def _handle(self, signum, frame):
        self.signum = signum
        print(f"received signal {signum}: checkpointing after this step", file=sys.stderr, flush=True)


def _after_finish(signum, frame):
    print(f"received signal {signum} after training finished (its outputs are complete): exiting normally",
          file=sys.stderr, flush=True)


@dataclass
class ResumeState:
    """What last.pt holds to continue a run exactly, and what a finished run is rebuilt from."""

    fingerprint: dict  # engine.RunSpec.fingerprint(): which run this is
    arithmetic: dict  # numerics.arithmetic(): what the numbers were computed with
    provenance: dict  # provenance.provenance() of the attempt that wrote it
    history: list  # one row per finished epoch
    best: dict  # the selected epoch so far: score, epoch, metrics, state_dict
    epoch: int  # the next epoch to train ...
    step: int  # ... and the next step in it
    epoch_so_far: dict | None  # loss sum, correct, count, seconds and lr of that epoch's first steps
    complete: bool  # every epoch trained: model.pt and history.csv follow from this state alone
    state_dict: dict  # the model, optimiser and scheduler now
    optimizer: dict
    scheduler: dict
    rng: dict
    ema: dict | None  # the weights' moving average now (recipes with ema_decay)

    @classmethod
    def fresh(cls, fingerprint: dict, arithmetic: dict, provenance: dict) -> "ResumeState":
        return cls(fingerprint, arithmetic, provenance, history=[], epoch=1, step=0, epoch_so_far=None,
                   best={"score": -1.0, "epoch": 0, "metrics": {}, "state_dict": None}, complete=False,
                   state_dict={}, optimizer={}, scheduler={}, rng={}, ema=None)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}  # no deep copy of the weights
        d["position"] = {"epoch": d.pop("epoch"), "step": d.pop("step")}
        return d

    @classmethod
    def from_dict(cls, d: dict, path) -> "ResumeState":
        """Raises CheckpointError naming the first missing or malformed field."""
        try:
            kw = {f.name: d[f.name] for f in fields(cls) if f.name not in ("epoch", "step")}
            kw.update(epoch=int(d["position"]["epoch"]), step=int(d["position"]["step"]))
            best = {k: kw["best"][k] for k in ("score", "epoch", "metrics", "state_dict")}
            if not isinstance(kw["history"], list) or (kw["complete"] and not isinstance(best["state_dict"], dict)):
                raise TypeError("'history' or 'best' (malformed)")
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: resume checkpoint lacks field {e}") from e
        return cls(**kw)


def rng_state() -> dict:
    """Host generators only. Nothing in training draws from the default CUDA generators (the
    epoch plan has its own CPU generator), and their states, one per visible GPU, would not fit
    a resume that sees fewer GPUs."""
    np_state = np.random.get_state()
    return {"python": _to_python(random.getstate()), "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]), "torch": torch.get_rng_state()}


def set_rng_state(s: dict) -> None:
    """Restore what rng_state saved; CUDA states in older checkpoints are ignored."""
    random.setstate((s["python"][0], tuple(s["python"][1]), s["python"][2]))
    np.random.set_state(("MT19937", s["numpy_keys"].numpy().astype(np.uint32), s["numpy_pos"], 0, 0.0))
    torch.set_rng_state(s["torch"])


def _to_python(x):
    """Turn tuples (random.getstate) into lists so weights_only loading accepts them."""
    if isinstance(x, tuple):
        return [_to_python(v) for v in x]
    return x


def set_aside(path: Path) -> Path:
    """Keep an unusable file for inspection under a new name; nothing is deleted."""
    aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
    while aside.exists():
        aside = aside.with_name(aside.name + "x")
    os.replace(path, aside)
    return aside


def _show(value):
    return value[:12] if isinstance(value, str) and len(value) == 64 else value  # digests


def differences(old: dict, new: dict, prefix: str = "") -> str:
    """What differs between two fingerprints, key by key: "seed 0 -> 7, recipe.lr 0.05 -> 0.01"."""
    out = []
    for k, v in new.items():
        was = old.get(k)
        if isinstance(was, dict) and isinstance(v, dict):
            out.append(differences(was, v, f"{prefix}{k}."))
        elif was != v:
            out.append(f"{prefix}{k} {_show(was)} -> {_show(v)}")
    return ", ".join(o for o in out if o)


def find_resume(path: Path, fingerprint: dict, now: dict, deterministic: bool, log) -> ResumeState | None:
    """The state in ``path`` if it belongs to this run; None to start over. An unreadable or
    incomplete file is set aside. A deterministic run refuses a resume that cannot be exact."""
    if not path.exists():
        return None
    try:
        raw = checkpoint.load(path)
        if raw.get("fingerprint") != fingerprint:
            old = raw.get("fingerprint") if isinstance(raw.get("fingerprint"), dict) else {}
            log(f"ignoring resume checkpoint {path}: made by another run (it differs in: "
                f"{differences(old, fingerprint)}); training this one from scratch")
            return None
        state = ResumeState.from_dict(raw, path)
    except CheckpointError as e:  # torn, foreign or incomplete: keep it for inspection, start over
        aside = set_aside(path)
        log(f"ignoring resume checkpoint {path} (moved to {aside.name}): {e}")
        return None
    if state.complete:
        if state.arithmetic.get("training_code") == now["training_code"]:
            return state
        log(f"{path} is from a finished run of other training code: training again from scratch")
        return None
    changed = "; ".join(f"{k} {_show(state.arithmetic.get(k))!r} -> {_show(v)!r}"
                        for k, v in now.items() if state.arithmetic.get(k) != v)
    if changed and deterministic:
        raise CheckpointError(f"{path}: this deterministic run cannot resume exactly here ({changed}); "
                              f"resume it where it started, or delete {path} to train again from scratch")
    if changed:
        log(f"resuming with other arithmetic ({changed}): not bit-identical to an uninterrupted run")
    return state


def find_finished_model(path: Path, fingerprint: dict, now: dict) -> dict | None:
    """model.pt, if it already holds this very run, finished (same fingerprint, same training
    code): what to keep when last.pt is gone. The train rule marks model.pt update(), so Snakemake
    leaves it in place for this check (and puts it back if the job fails)."""
    if not path.is_file():
        return None
    try:
        raw = checkpoint.load(path)
    except CheckpointError:
        return None  # not ours to judge or move: it is replaced only when training succeeds
    same = raw.get("fingerprint") == fingerprint and isinstance(raw.get("history"), list)
    code = raw.get("arithmetic") if isinstance(raw.get("arithmetic"), dict) else {}
    same_code = code.get("training_code") == now["training_code"]
    return raw if same and same_code and isinstance(raw.get("state_dict"), dict) else None


DIVERGED = "diverged.json"
DIVERGED_FORMAT = "cifar100-resnet18/diverged/1"  # marks a record this project wrote


def divergence_record(fingerprint: dict, message: str) -> dict:
    return {"format": DIVERGED_FORMAT, "fingerprint": fingerprint, "message": message}


def _is_divergence_record(record) -> bool:
    """Written by divergence_record, or by earlier versions (exactly fingerprint and message)."""
    if not isinstance(record, dict) or not isinstance(record.get("fingerprint"), dict):
        return False
    keys = set(record)
    return (record.get("format") == DIVERGED_FORMAT and keys == {"format", "fingerprint", "message"}) or (
        keys == {"fingerprint", "message"} and {"recipe_name", "seed"} <= set(record["fingerprint"]))


def refuse_if_diverged(path: Path, fingerprint: dict, log) -> None:
    """Fail at once if this very run (same recipe, seed, ...) diverged before; forget other runs'
    records. Only a record this project wrote is ever deleted: any other file of that name (a
    user's, a folder, random bytes) is moved aside, whole."""
    if not (path.exists() or path.is_symlink()):
        return
    try:
        record = read_json(path) if path.is_file() else None
    except OutputError:
        record = None
    if not _is_divergence_record(record):
        aside = set_aside(path)
        log(f"ignoring {path} (moved to {aside.name}): not a divergence record of this project")
        return
    if record["fingerprint"] == fingerprint:
        raise Diverged(f"{record['message']} (in an earlier attempt, recorded in {path}; change the recipe "
                       "or delete that file to try again)")
    path.unlink()  # this project's record of other settings: they no longer apply here

