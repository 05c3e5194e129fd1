"""The training loop, readable top to bottom: the run's settings, optimiser and schedule, one
epoch, evaluation, building a run, and ``train``: the epoch loop with evaluation, model selection
and a checkpoint after every epoch. How the numbers are computed (device, precision, determinism,
compile) is numerics.py's; the resume state, the preemption signals and finding an earlier
attempt are resume.py's.
"""

import copy
import hashlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import checkpoint
from .data import Dataset
from .exceptions import CheckpointError, Diverged, OutputError, Preempted
from .files import ensure_dir, remove_stale_temps, write_csv, write_json
from .model import count_parameters, initialise, resnet18
from .numerics import arithmetic, autocast_for, compile_model, numerics, pick_device, seed_everything
from .pipeline import Augment, DeviceSplit, eval_batches, generator, num_batches, train_batches
from .provenance import provenance
from .resume import (DIVERGED, ResumeState, StopFlag, divergence_record, find_finished_model, find_resume,
                     refuse_if_diverged, rng_state, set_rng_state)

HISTORY_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc",
                  "val_loss", "val_acc", "seconds", "images_per_s",
                  "ema_test_loss", "ema_test_acc", "ema_val_loss", "ema_val_acc"]
CUDA_CHECK_EVERY = 50  # steps between NaN checks on CUDA (each check is a host-device sync)
# Which randomness the run seed drives; data is order and augmentation together.
VARIED = {"all": ("init", "order", "augment"), "init": ("init",), "data": ("order", "augment"),
          "order": ("order",), "augment": ("augment",), "none": ()}
# The seed of a component a recipe does not vary: outside the config's seed range (0..2**32-1), so a
# fixed component is never the stream of any varied seed (seeds reach 64-bit streams, pipeline.generator).
FIXED_SEED = 2**32
# Free space a run needs, in model sizes: last.pt (weights, momentum, best weights, EMA weights)
# and its temp copy while it is replaced, plus model.pt.
CHECKPOINT_MODEL_SIZES = 9


@dataclass
class RunSpec:
    """One run's settings, every one given by the caller: defaults, allowed values and the rules
    across keys live in the config schema, checked once (config.validate) before a RunSpec is made."""

    recipe: dict
    recipe_name: str
    seed: int
    selection: str  # best_test | last | best_val
    val_size: int
    deterministic: bool
    precision: str  # bf16 | fp32; CUDA only, the CPU always trains in fp32
    compile: bool

    def _seed_of(self, part: str) -> int:
        return self.seed if part in VARIED[self.recipe["vary"]] else FIXED_SEED

    @property
    def init_seed(self) -> int:
        """Seeds the model's initialisation."""
        return self._seed_of("init")

    @property
    def order_seed(self) -> int:
        """Seeds each epoch's order."""
        return self._seed_of("order")

    @property
    def augment_seed(self) -> int:
        """Seeds each epoch's augmentations: crops, flips, cutout, mixup and CutMix draws."""
        return self._seed_of("augment")

    def fingerprint(self, data: str, precision: str) -> dict:
        """What a checkpoint must match to belong to this run: exactly what changes its arithmetic.

        The recipe and seed; the data's content (``data_version``); the held-out size only where
        a validation split is taken; the precision actually used (the CPU trains in fp32 whatever
        the config says). Not the recipe's name, nor a setting the run does not use, so changing
        those never retrains. The code is checked apart (``numerics.arithmetic``), where it can be
        explained.
        """
        return {"recipe": self.recipe, "seed": self.seed, "selection": self.selection,
                "val_size": self.val_size if self.selection == "best_val" else None,
                "deterministic": self.deterministic, "precision": precision, "compile": self.compile,
                "data": data}


def data_version(ds: Dataset) -> str:
    """A digest of everything a model learns from and is tested on: the images, labels and class
    names of both splits as loaded (so it follows the content, whatever the files or folder are
    called). Recorded in last.pt and model.pt; evaluation refuses a model of other data."""
    h = hashlib.sha256()
    for split in (ds.train, ds.test):
        for array in (split.images, split.labels):
            a = np.ascontiguousarray(array)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(a).cast("B"))
    h.update("\n".join(ds.fine_names).encode())
    return "sha256-" + h.hexdigest()[:24]


def optimizer_impl(device: torch.device) -> dict:
    # Fused SGD is one kernel for all parameters on CUDA; foreach is the fast CPU path.
    return {"fused": True, "foreach": None} if device.type == "cuda" else {"fused": None, "foreach": True}


def make_optimizer(model: nn.Module, r: dict, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=r["lr"], momentum=r["momentum"],
                           weight_decay=r["weight_decay"], nesterov=r["nesterov"], **optimizer_impl(device))


class Schedule:
    """The learning rate of every step: the recipe's torch scheduler (stepped at each epoch's end,
    or after every step for onecycle) times a linear warm-up, (t + 1) / W at step t < W =
    warmup_epochs * steps_per_epoch. Stepped after every training step. The torch scheduler
    always sees its own rate, so without warm-up the rates are exactly its own."""

    def __init__(self, opt, main, per_step: bool, steps_per_epoch: int, warmup_steps: int):
        self.opt, self.main, self.per_step = opt, main, per_step
        self.steps_per_epoch, self.warmup_steps, self.t = steps_per_epoch, warmup_steps, 0
        self._apply([g["lr"] for g in opt.param_groups])

    def warmup_factor(self) -> float:
        return min(1.0, (self.t + 1) / self.warmup_steps) if self.warmup_steps else 1.0

    def _apply(self, main_lrs) -> None:
        self.main_lrs, factor = list(main_lrs), self.warmup_factor()
        for group, lr in zip(self.opt.param_groups, self.main_lrs):
            group["lr"] = lr * factor

    def step(self) -> None:
        for group, lr in zip(self.opt.param_groups, self.main_lrs):
            group["lr"] = lr  # the torch scheduler continues from its own rate
        self.t += 1
        if self.per_step or self.t % self.steps_per_epoch == 0:
            self.main.step()
        self._apply([g["lr"] for g in self.opt.param_groups])

    def state_dict(self) -> dict:
        return {"main": self.main.state_dict(), "t": self.t, "main_lrs": self.main_lrs}

    def load_state_dict(self, state: dict) -> None:
        if not {"main", "t", "main_lrs"} <= set(state):
            raise CheckpointError("the resume checkpoint's scheduler state is of an older version of the "
                                  "training code: delete last.pt to train this run from scratch")
        self.main.load_state_dict(state["main"])
        self.t = state["t"]
        self._apply(state["main_lrs"])


def make_scheduler(opt, r: dict, steps_per_epoch: int) -> Schedule:
    """The recipe's schedule: step, multistep, cosine and constant change the rate per epoch,
    onecycle per step; any of them after ``warmup_epochs`` of linear warm-up."""
    kind, per_step = r["schedule"], False
    if kind == "step":
        main = torch.optim.lr_scheduler.StepLR(opt, r["step_size"], r["gamma"])
    elif kind == "multistep":
        main = torch.optim.lr_scheduler.MultiStepLR(opt, r["milestones"], r["gamma"])
    elif kind == "cosine":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=r["epochs"])
    elif kind == "onecycle":
        main = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r["lr"], total_steps=r["epochs"] * steps_per_epoch)
        per_step = True
    elif kind == "constant":
        main = torch.optim.lr_scheduler.StepLR(opt, 1, 1.0)
    else:
        raise ValueError(f"unknown schedule {kind!r}")
    return Schedule(opt, main, per_step, steps_per_epoch, r.get("warmup_epochs", 0) * steps_per_epoch)


def val_split_indices(labels: np.ndarray, val_size: int, seed: int = 0):
    """Stratified hold-out: about val_size/num_classes images of every class go to validation.

    The split uses a fixed seed, so every replicate holds out the same images.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = max(1, val_size // len(classes))
    val = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes])
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, np.sort(val)


class Progress:
    """A live bar on a terminal; nothing per step in a log file (one line per epoch is logged)."""

    def __init__(self, total: int):
        self.total, self.live = total, sys.stderr.isatty()

    def update(self, step: int, epoch: int) -> None:
        if self.live and (step % 10 == 0 or step == self.total):
            done = int(30 * step / self.total)
            print(f"\repoch {epoch:3d} [{'#' * done}{'.' * (30 - done)}] {step}/{self.total}",
                  end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.live:
            print("\r" + " " * 60 + "\r", end="", file=sys.stderr, flush=True)


class EpochStats:
    """Loss sum, correct count and the first non-finite step of an epoch, kept on the device:
    adding a step costs no host-device sync; ``read`` syncs once."""

    def __init__(self, device, loss_sum=0.0, correct=0, count=0):
        self.loss_sum = torch.tensor(loss_sum, device=device, dtype=torch.float64)
        self.correct = torch.tensor(correct, device=device)
        self.first_bad = torch.tensor(-1, device=device)
        self.count = count

    def add(self, step: int, loss, out, y) -> None:
        """``y``: labels, or the soft targets of a mixed batch (correct: the target's largest share)."""
        loss = loss.detach()
        self.loss_sum += loss.double() * len(y)
        self.correct += (out.argmax(1) == (y if y.ndim == 1 else y.argmax(1))).sum()
        self.count += len(y)
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(loss), step + 1, self.first_bad)

    def read(self) -> dict:
        return {"loss_sum": self.loss_sum.item(), "correct": int(self.correct.item()), "count": self.count}


def train_step(net, opt, criterion, amp, x, y, step: int, stats: EpochStats):
    """One SGD step, the same in training and in scripts/bench.py; returns the loss tensor."""
    with amp():
        out = net(x)
        loss = criterion(out, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    stats.add(step, loss, out, y)
    return loss


class EMA:
    """An exponential moving average of the weights and batch-norm statistics (as timm's
    ModelEmaV2, airbench): after every step, ema = decay * ema + (1 - decay) * model; integer
    buffers (batch counts) are copied. A model of its own, evaluated each epoch beside the trained one."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values()))
        self._ema = [e for e, _ in pairs if e.is_floating_point()]
        self._now = [m for e, m in pairs if e.is_floating_point()]
        self._counts = [(e, m) for e, m in pairs if not e.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self._ema, self._now, 1.0 - self.decay)  # a few fused kernels, not one per tensor
        for e, m in self._counts:
            e.copy_(m)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


def check_finite(stats: EpochStats, epoch: int, step: int, steps: int, cuda: bool, where, force=False) -> None:
    """Stop on a NaN/inf loss: every step on the CPU, every CUDA_CHECK_EVERY steps on CUDA
    (each check is a host-device sync), and always when ``force`` (before any checkpoint)."""
    if cuda and not force and (step + 1) % CUDA_CHECK_EVERY and step + 1 != steps:
        return
    bad = stats.first_bad.item()
    if bad >= 0:
        raise Diverged(f"training diverged at epoch {epoch}, step {bad} of {steps}: the loss became "
                       f"NaN or inf; the last good checkpoint is kept in {where}")


def eval_batch_size(device: torch.device) -> int:
    # Large batches keep a GPU busy; on a CPU, activations of ~256 images still fit in cache
    # (1000 measured about 2x slower than 128 here).
    return 1000 if device.type == "cuda" else 256


@torch.no_grad()
def evaluate(model, split: DeviceSplit, amp, channels_last=False, batch_size=None):
    """Mean cross-entropy and top-1 accuracy of ``model`` on ``split`` (one sync at the end)."""
    batch_size = batch_size or eval_batch_size(split.device)
    model.eval()
    loss = torch.zeros((), device=split.device)
    correct = torch.zeros((), device=split.device, dtype=torch.long)
    for x, y in eval_batches(split, batch_size, channels_last=channels_last):
        with amp():
            out = model(x)
        loss += nn.functional.cross_entropy(out.float(), y, reduction="sum")
        correct += (out.argmax(1) == y).sum()
    return loss.item() / len(split), correct.item() / len(split)


@torch.no_grad()
def predict(model, split: DeviceSplit, amp, channels_last=False, batch_size=None, flip=False) -> torch.Tensor:
    """Logits (float32, CPU) for every image of ``split``, in order. ``flip``: flip test-time
    augmentation, the mean of the logits of each image and of its mirror image."""
    batch_size = batch_size or eval_batch_size(split.device)
    model.eval()
    outs = []
    for x, _ in eval_batches(split, batch_size, channels_last=channels_last):
        with amp():
            out = model(x).float()
            if flip:
                out = (out + model(x.flip(3)).float()) / 2
        outs.append(out)
    return torch.cat(outs).cpu()


def check_replaceable(*paths: Path) -> None:
    """Each output either absent or a file that a finished run may replace: never a folder (a
    rename over it fails after hours of training) and nothing is deleted here."""
    for path in paths:
        if path.is_dir():
            raise OutputError(f"{path}: a folder where this run writes a file; move it away (nothing was changed)")


def check_out_dir(out_dir: Path, num_classes: int, width: int) -> None:
    """Fail before training, not at the first checkpoint, if the run folder is read-only or full."""
    ensure_dir(out_dir)
    try:
        with tempfile.TemporaryFile(dir=out_dir) as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise OutputError(f"cannot write in {out_dir}: {e.strerror or e}") from e
    with torch.device("meta"):
        model_bytes = 4 * count_parameters(resnet18(num_classes, width))
    need, free = CHECKPOINT_MODEL_SIZES * model_bytes, shutil.disk_usage(out_dir).free
    if free < need:
        raise OutputError(f"{out_dir} has {free / 2**20:.0f} MiB free; this run's checkpoints need about "
                          f"{need / 2**20:.0f} MiB")


# --- one run ----------------------------------------------------------------------------------

@dataclass
class Parts:
    """What one run trains with, built once."""

    model: nn.Module
    net: nn.Module  # the model, compiled or not
    opt: torch.optim.Optimizer
    sched: Schedule
    criterion: nn.Module  # cross-entropy with label smoothing; takes labels or soft targets
    amp: object
    train: DeviceSplit
    test: DeviceSplit
    val: DeviceSplit | None
    steps: int  # per epoch
    channels_last: bool
    augment: Augment  # beyond crop and flip
    ema: EMA | None  # the weights' moving average, if the recipe keeps one

    def selected_model(self, spec: RunSpec) -> nn.Module:
        """The model a recipe's model.pt holds: the trained one, or its moving average (ema_model)."""
        return self.ema.model if spec.recipe.get("ema_model") else self.model


def build(ds: Dataset, spec: RunSpec, device: torch.device, precision: str) -> Parts:
    r = spec.recipe
    init = generator("init", spec.init_seed)
    # The process-wide generators drive nothing in training (initialisation and epoch plans have
    # their own streams); seeded from the init stream for any library code that draws.
    seed_everything(int(init.integers(2**32)))
    train_idx, val_idx = np.arange(len(ds.train)), None
    if spec.selection == "best_val":
        train_idx, val_idx = val_split_indices(ds.train.labels, spec.val_size)
    train = DeviceSplit(ds.train.images[train_idx], ds.train.labels[train_idx], device)
    val = None if val_idx is None else DeviceSplit(ds.train.images[val_idx], ds.train.labels[val_idx], device)
    channels_last = device.type == "cuda"
    model = initialise(resnet18(ds.num_classes, r["width"]), init).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    steps = num_batches(len(train), r["batch_size"])
    opt = make_optimizer(model, r, device)
    sched = make_scheduler(opt, r, steps)
    net = compile_model(model, device) if spec.compile else model
    ema = EMA(model, r["ema_decay"]) if r.get("ema_decay") else None
    return Parts(model, net, opt, sched, nn.CrossEntropyLoss(label_smoothing=r["label_smoothing"]),
                 autocast_for(device, precision), train, DeviceSplit(ds.test.images, ds.test.labels, device),
                 val, steps, channels_last, Augment.from_recipe(r, ds.num_classes), ema)


def restore(p: Parts, state: ResumeState, device: torch.device) -> None:
    p.model.load_state_dict(state.state_dict)
    p.opt.load_state_dict(state.optimizer)
    for group in p.opt.param_groups:  # the saving attempt may have run on another device
        group.update(optimizer_impl(device))
    p.sched.load_state_dict(state.scheduler)
    if p.ema is not None:
        p.ema.load_state_dict(state.ema)
    set_rng_state(state.rng)


def train_epoch(p: Parts, spec: RunSpec, epoch: int, state: ResumeState, stop: StopFlag, where):
    """Train ``epoch`` from ``state.step`` on. Returns the epoch's totals and, when a signal
    stopped it, the step to resume at (else None)."""
    so_far = state.epoch_so_far or {"loss_sum": 0.0, "correct": 0, "count": 0, "seconds": 0.0,
                                    "lr": p.opt.param_groups[0]["lr"]}  # onecycle moves lr per step
    cuda = p.train.device.type == "cuda"
    stats = EpochStats(p.train.device, so_far["loss_sum"], so_far["correct"], so_far["count"])
    t0, bar, stopped_at = time.perf_counter(), Progress(p.steps), None
    p.model.train()
    for step, x, y in train_batches(p.train, spec.recipe["batch_size"], spec.order_seed, epoch, state.step,
                                    channels_last=p.channels_last, augment_seed=spec.augment_seed,
                                    augment=p.augment):
        train_step(p.net, p.opt, p.criterion, p.amp, x, y, step, stats)
        p.sched.step()
        if p.ema is not None:
            p.ema.update()
        check_finite(stats, epoch, step, p.steps, cuda, where)
        bar.update(step + 1, epoch)
        if stop.signum:
            check_finite(stats, epoch, step, p.steps, cuda, where, force=True)  # before any checkpoint
            stopped_at = step + 1
            break
    bar.close()
    return {**stats.read(), "lr": so_far["lr"], "seconds": so_far["seconds"] + time.perf_counter() - t0}, stopped_at


def epoch_row(p: Parts, epoch: int, totals: dict) -> dict:
    """The epoch's history row: training totals, test (and validation) loss and accuracy, and
    the same of the weights' moving average where the recipe keeps one."""
    test_loss, test_acc = evaluate(p.net, p.test, p.amp, channels_last=p.channels_last)
    count, seconds = totals["count"], totals["seconds"]
    row = {"epoch": epoch, "lr": totals["lr"], "train_loss": totals["loss_sum"] / count,
           "train_acc": totals["correct"] / count, "test_loss": test_loss, "test_acc": test_acc,
           "val_loss": "", "val_acc": "", "seconds": round(seconds, 3),
           "images_per_s": round(count / max(seconds, 1e-9), 1),
           "ema_test_loss": "", "ema_test_acc": "", "ema_val_loss": "", "ema_val_acc": ""}
    if p.val is not None:
        row["val_loss"], row["val_acc"] = evaluate(p.net, p.val, p.amp, channels_last=p.channels_last)
    if p.ema is not None:
        row["ema_test_loss"], row["ema_test_acc"] = evaluate(p.ema.model, p.test, p.amp, p.channels_last)
        if p.val is not None:
            row["ema_val_loss"], row["ema_val_acc"] = evaluate(p.ema.model, p.val, p.amp, p.channels_last)
    return row


def selected_column(recipe: dict, split: str = "test") -> str:
    """History column of the accuracy of the model a recipe selects: its own, or its EMA's."""
    return f"{'ema_' if recipe.get('ema_model') else ''}{split}_acc"


def selection_score(spec: RunSpec, row: dict) -> float:
    """What model selection maximises, from an epoch's history row."""
    if spec.selection == "last":
        return row["epoch"]
    return row[selected_column(spec.recipe, "val" if spec.selection == "best_val" else "test")]


# The mixup benchmarks' honest figure (openmixup: the median of the last 10 epochs), as a mean.
LAST_EPOCHS = 10


def last_epochs_accuracy(history: list, recipe: dict, n: int = LAST_EPOCHS) -> float:
    """Mean test accuracy of the selected model over the last ``n`` epochs (all, if fewer): no
    epoch is picked by its test score, unlike best_test."""
    values = [float(row[selected_column(recipe)]) for row in history[-n:]]
    return sum(values) / len(values)


def run_meta(ds: Dataset, spec: RunSpec, epoch: int, prov: dict) -> dict:
    """What model.pt and last.pt say about the run besides the weights."""
    return {"model_args": {"num_classes": ds.num_classes, "width": spec.recipe["width"]},
            "recipe": spec.recipe, "recipe_name": spec.recipe_name, "seed": spec.seed,
            "selection": spec.selection, "epoch": epoch, "fine_names": ds.fine_names,
            "coarse_names": ds.coarse_names or [], "run_spec": asdict(spec), "provenance": prov,
            "versions": (prov or {}).get("versions") or checkpoint.versions()}


def write_outputs(model_path: Path, history_path: Path, ds: Dataset, spec: RunSpec, state: ResumeState,
                  log) -> dict:
    """history.csv and model.pt (the selected epoch) from a complete state. model.pt also carries
    the run's fingerprint (its data included), arithmetic and history: evaluation checks the data,
    and the finished run can be recognised from model.pt alone."""
    best = state.best
    write_csv(history_path, state.history, HISTORY_FIELDS)
    checkpoint.save(model_path, {**run_meta(ds, spec, best["epoch"], state.provenance),
                                 "fingerprint": state.fingerprint, "arithmetic": state.arithmetic,
                                 "history": state.history, "state_dict": best["state_dict"],
                                 "metrics": best["metrics"]})
    log(f"selected epoch {best['epoch']} by {spec.selection}: test acc {best['metrics']['test_acc']:.4f}")
    return best["metrics"]


def train(ds: Dataset, spec: RunSpec, out_dir, device=None, log=print, *, model_path=None,
          history_path=None) -> dict:
    """Train one (recipe, seed) run; returns the selected checkpoint's metrics. ``out_dir`` holds
    last.pt; model.pt and history.csv go there too unless ``model_path``/``history_path`` say otherwise."""
    out_dir, device, epochs = Path(out_dir), pick_device(device), spec.recipe["epochs"]
    model_path = Path(model_path or out_dir / "model.pt")
    history_path = Path(history_path or out_dir / "history.csv")
    last_path = out_dir / "last.pt"
    check_out_dir(out_dir, ds.num_classes, spec.recipe["width"])
    check_replaceable(model_path, history_path, last_path)  # a folder there would fail only after training
    remove_stale_temps(out_dir)  # of an attempt killed while saving (SIGKILL, node failure)
    with numerics(spec.deterministic, spec.precision, device, log) as precision, StopFlag() as stop:
        fingerprint, now = spec.fingerprint(data_version(ds), precision), arithmetic(device, precision)
        refuse_if_diverged(out_dir / DIVERGED, fingerprint, log)
        state = find_resume(last_path, fingerprint, now, spec.deterministic, log)
        if state is not None and state.complete:
            log(f"{last_path} holds this run, finished: rebuilding model.pt and history.csv from it, no training")
            return write_outputs(model_path, history_path, ds, spec, state, log)
        kept = find_finished_model(model_path, fingerprint, now) if state is None else None
        if kept is not None:
            log(f"{model_path} holds this run, finished ({last_path.name} is gone): kept, history.csv "
                "rebuilt from it, no training")
            write_csv(history_path, kept["history"], HISTORY_FIELDS)
            checkpoint.save(model_path, kept)  # rewritten as it was: Snakemake sees the job's output
            return kept["metrics"]
        p = build(ds, spec, device, precision)
        if state is None:
            state = ResumeState.fresh(fingerprint, now, provenance(device))
        else:
            restore(p, state, device)
            state.arithmetic, state.provenance = now, provenance(device)
            log(f"resuming from {last_path}: epoch {state.epoch}, step {state.step}")

        def save() -> None:
            state.state_dict, state.optimizer = p.model.state_dict(), p.opt.state_dict()
            state.scheduler, state.rng = p.sched.state_dict(), rng_state()
            state.ema = None if p.ema is None else p.ema.state_dict()
            epoch_done = state.epoch - 1 if state.step == 0 else state.epoch
            checkpoint.save(last_path, {**run_meta(ds, spec, epoch_done, state.provenance), **state.to_dict()})

        try:
            for epoch in range(state.epoch, epochs + 1):
                totals, stopped_at = train_epoch(p, spec, epoch, state, stop, last_path)
                if stopped_at is not None:
                    state.step, state.epoch_so_far = stopped_at, totals
                    save()
                    raise Preempted(stop.signum)
                row = epoch_row(p, epoch, totals)
                state.history.append(row)
                score = selection_score(spec, row)
                if score > state.best["score"]:
                    weights = p.selected_model(spec).state_dict()
                    state.best = {"score": score, "epoch": epoch, "metrics": dict(row), "state_dict":
                                  {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}}
                state.epoch, state.step, state.epoch_so_far, state.complete = epoch + 1, 0, None, epoch == epochs
                save()
                write_csv(history_path, state.history, HISTORY_FIELDS)
                log(f"epoch {epoch}/{epochs} lr {row['lr']:.4g} train loss {row['train_loss']:.4f} "
                    f"acc {row['train_acc']:.4f} | test loss {row['test_loss']:.4f} acc {row['test_acc']:.4f} | "
                    f"{row['seconds']:.1f}s {row['images_per_s']:.0f} img/s")
                if stop.signum and not state.complete:
                    raise Preempted(stop.signum)
        except Diverged as e:  # remembered, so that Snakemake's retries do not diverge again and again
            write_json(out_dir / DIVERGED, divergence_record(fingerprint, str(e)))
            raise
        if not state.complete:  # resumed after its last epoch was saved, before it was marked complete
            state.complete = True
            save()
        # A signal from here on finds the run finished: the outputs follow in a second; exit 0.
        return write_outputs(model_path, history_path, ds, spec, state, log)
