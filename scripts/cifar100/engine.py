"""The training loop, readable top to bottom: seeding, optimiser and schedule, the epoch loop,
per-epoch evaluation, model selection, preemption-safe checkpoints and exact resume.

Resume contract: ``last.pt`` in the run folder (not a Snakemake output, so a failed job keeps
it) holds model, optimiser, scheduler, history, best model, RNG states and the position inside
the epoch. Shuffling and augmentation draw from a generator seeded by (seed, epoch), so a
resumed run replays exactly the batches it would have seen: with ``deterministic`` on the CPU
an interrupted run ends bit-identical to an uninterrupted one.
"""

import contextlib
import os
import random
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import checkpoint
from .data import Dataset
from .exceptions import CheckpointError, Diverged, Preempted
from .files import read_json, remove_stale_temps, write_csv, write_json
from .model import resnet18
from .pipeline import DeviceSplit, eval_batches, num_batches, train_batches

HISTORY_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc",
                  "val_loss", "val_acc", "seconds", "images_per_s"]
CUDA_CHECK_EVERY = 50  # steps between NaN checks on CUDA (each check is a host-device sync)


@dataclass
class RunSpec:
    recipe: dict
    recipe_name: str = "baseline"
    seed: int = 0
    selection: str = "best_test"  # best_test | last | best_val
    val_size: int = 5000
    deterministic: bool = False
    precision: str = "bf16"  # bf16 | fp32; CUDA only, the CPU always trains in fp32
    compile: bool = False

    def fingerprint(self, num_classes: int, device: torch.device) -> dict:
        """What a resume checkpoint must match to be reused. The device type is part of it: the
        epoch's shuffling generator, and fused vs foreach optimizer state, differ between devices."""
        return {"recipe": self.recipe, "recipe_name": self.recipe_name, "seed": self.seed,
                "selection": self.selection, "val_size": self.val_size, "num_classes": num_classes,
                "device": device.type}


def pick_device(name: str | None = None) -> torch.device:
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        warnings.warn("deterministic: true makes runs bit-reproducible but slower "
                      "(deterministic kernels, no cuDNN autotuning)", stacklevel=2)
    else:
        torch.backends.cudnn.benchmark = True


def make_optimizer(model: nn.Module, r: dict, device: torch.device) -> torch.optim.Optimizer:
    # Fused SGD is one kernel for all parameters on CUDA; foreach is the fast CPU path.
    impl = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.SGD(model.parameters(), lr=r["lr"], momentum=r["momentum"],
                           weight_decay=r["weight_decay"], nesterov=r["nesterov"], **impl)


def make_scheduler(opt, r: dict, steps_per_epoch: int):
    """Returns (scheduler, steps_per_call): step/cosine/constant step per epoch, onecycle per batch."""
    kind = r["schedule"]
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(opt, r["step_size"], r["gamma"]), False
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=r["epochs"]), False
    if kind == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=r["lr"], total_steps=r["epochs"] * steps_per_epoch), True
    if kind == "constant":
        return torch.optim.lr_scheduler.StepLR(opt, 1, 1.0), False
    raise ValueError(f"unknown schedule {kind!r}")


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


class StopFlag:
    """SIGTERM / SIGUSR1 set a flag; the loop checkpoints after the current step and exits.

    A context manager, so the previous handlers come back when training ends.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __enter__(self):
        self.signum = 0
        self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        self.signum = signum
        print(f"received signal {signum}: checkpointing after this step", file=sys.stderr, flush=True)


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
        loss = loss.detach()
        self.loss_sum += loss.double() * len(y)
        self.correct += (out.argmax(1) == y).sum()
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
    for x, y in eval_batches(split, batch_size, channels_last):
        with amp():
            out = model(x)
        loss += nn.functional.cross_entropy(out.float(), y, reduction="sum")
        correct += (out.argmax(1) == y).sum()
    return loss.item() / len(split), correct.item() / len(split)


@torch.no_grad()
def predict(model, split: DeviceSplit, amp, channels_last=False, batch_size=None) -> torch.Tensor:
    """Logits (float32, CPU) for every image of ``split``, in order."""
    batch_size = batch_size or eval_batch_size(split.device)
    model.eval()
    outs = []
    for x, _ in eval_batches(split, batch_size, channels_last):
        with amp():
            outs.append(model(x).float())
    return torch.cat(outs).cpu()


def autocast_for(device: torch.device, precision: str):
    if device.type == "cuda" and precision == "bf16":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def resolve_precision(device: torch.device, precision: str, log) -> str:
    """bf16 only where the GPU has it natively (Ampere and newer); emulated bf16 is slower than fp32."""
    if device.type != "cuda":
        if precision != "fp32":
            log("CPU run: training in fp32 (bf16 autocast is used on CUDA only)")
        return "fp32"
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        log(f"{torch.cuda.get_device_name(device)} has no native bf16: training in fp32")
        return "fp32"
    return precision


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {"python": random.getstate(), "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(("MT19937", s["numpy_keys"].numpy().astype(np.uint32), s["numpy_pos"], 0, 0.0))
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _to_python(x):
    """Turn tuples (random.getstate) into lists so weights_only loading accepts them."""
    if isinstance(x, tuple):
        return [_to_python(v) for v in x]
    return x


DIVERGED = "diverged.json"


def refuse_if_diverged(path: Path, fingerprint: dict) -> None:
    """Fail at once if this very run (same recipe, seed, ...) diverged before; forget other runs'."""
    if not path.exists():
        return
    record = read_json(path)
    if record.get("fingerprint") == fingerprint:
        raise Diverged(f"{record['message']} (in an earlier attempt, recorded in {path}; change the recipe "
                       "or delete that file to try again)")
    path.unlink()


def find_resume(path: Path, fingerprint: dict, log) -> dict | None:
    """The resume state in ``path`` if it belongs to this run and is unfinished, else None."""
    if not path.exists():
        return None
    try:
        state = checkpoint.load(path)
    except CheckpointError as e:  # torn or foreign: keep it aside for inspection, start over
        aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
        os.replace(path, aside)
        log(f"ignoring resume checkpoint {path} (moved to {aside.name}): {e}")
        return None
    if state.get("fingerprint") != fingerprint:
        old = state.get("fingerprint") or {}
        log(f"ignoring resume checkpoint {path}: made for recipe {old.get('recipe_name')!r} seed "
            f"{old.get('seed')} with other settings; this run is recipe {fingerprint['recipe_name']!r} "
            f"seed {fingerprint['seed']}")
        return None
    if state.get("complete"):
        log(f"{path} is from a finished run: training again from scratch")
        return None
    return state


def train(ds: Dataset, spec: RunSpec, out_dir, device=None, log=print) -> dict:
    """Train one (recipe, seed) run into ``out_dir``; returns the selected checkpoint's metrics."""
    out_dir = Path(out_dir)
    r = spec.recipe
    device = pick_device(device)
    cuda = device.type == "cuda"
    seed_everything(spec.seed, spec.deterministic)
    amp = autocast_for(device, resolve_precision(device, spec.precision, log))

    train_idx, val_idx = np.arange(len(ds.train)), None
    if spec.selection == "best_val":
        train_idx, val_idx = val_split_indices(ds.train.labels, spec.val_size)
    train_split = DeviceSplit(ds.train.images[train_idx], ds.train.labels[train_idx], device)
    test_split = DeviceSplit(ds.test.images, ds.test.labels, device)
    val_split = None if val_idx is None else DeviceSplit(ds.train.images[val_idx], ds.train.labels[val_idx], device)

    model = resnet18(ds.num_classes, r["width"]).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    steps = num_batches(len(train_split), r["batch_size"])
    opt = make_optimizer(model, r, device)
    sched, per_step = make_scheduler(opt, r, steps)
    criterion = nn.CrossEntropyLoss(label_smoothing=r["label_smoothing"])
    # dynamic=False: the partial last batch and eval batches compile once each, as static graphs.
    net = torch.compile(model, dynamic=False) if spec.compile else model

    fingerprint = spec.fingerprint(ds.num_classes, device)
    last_path = out_dir / "last.pt"
    remove_stale_temps(out_dir)  # of an attempt killed while saving (SIGKILL, node failure)
    history, best = [], {"score": -1.0, "epoch": 0, "state_dict": None, "metrics": {}}
    epoch0, step0, partial = 1, 0, None
    state = find_resume(last_path, fingerprint, log)
    if state is not None:
        model.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history, best = state["history"], state["best"]
        epoch0, step0, partial = state["position"]["epoch"], state["position"]["step"], state["partial"]
        _set_rng_state(state["rng"])
        log(f"resuming from {last_path}: epoch {epoch0}, step {step0}")

    def run_meta(epoch: int) -> dict:
        return {"model_args": {"num_classes": ds.num_classes, "width": r["width"]},
                "recipe": r, "recipe_name": spec.recipe_name, "seed": spec.seed,
                "selection": spec.selection, "epoch": epoch, "fine_names": ds.fine_names,
                "coarse_names": ds.coarse_names or [], "versions": checkpoint.versions()}

    def save_resume(epoch: int, step: int, acc: dict | None, complete=False) -> None:
        checkpoint.save(last_path, {
            **run_meta(epoch - 1 if step == 0 else epoch), "state_dict": model.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "history": history,
            "best": best, "position": {"epoch": epoch, "step": step}, "partial": acc,
            "rng": _to_python(_rng_state()), "fingerprint": fingerprint, "complete": complete})

    refuse_if_diverged(out_dir / DIVERGED, fingerprint)
    try:
        with StopFlag() as stop:
            for epoch in range(epoch0, r["epochs"] + 1):
                acc = partial or {"loss_sum": 0.0, "correct": 0, "count": 0, "seconds": 0.0,
                                  "lr": opt.param_groups[0]["lr"]}
                lr = acc["lr"]  # the epoch's starting lr, also when resuming mid-epoch (onecycle moves it per step)
                partial = None
                stats = EpochStats(device, acc["loss_sum"], acc["correct"], acc["count"])
                t0 = time.perf_counter()
                bar = Progress(steps)
                model.train()
                for step, x, y in train_batches(train_split, r["batch_size"], spec.seed, epoch, step0, cuda):
                    train_step(net, opt, criterion, amp, x, y, step, stats)
                    if per_step:
                        sched.step()
                    check_finite(stats, epoch, step, steps, cuda, last_path)
                    bar.update(step + 1, epoch)
                    if stop.signum:
                        bar.close()
                        check_finite(stats, epoch, step, steps, cuda, last_path, force=True)
                        save_resume(epoch, step + 1, {**stats.read(), "lr": lr,
                                                      "seconds": acc["seconds"] + time.perf_counter() - t0})
                        raise Preempted(stop.signum)
                bar.close()
                step0 = 0
                if not per_step:
                    sched.step()
                seconds = acc["seconds"] + time.perf_counter() - t0
                test_loss, test_acc = evaluate(net, test_split, amp, cuda)
                total = stats.read()
                count = total["count"]
                row = {"epoch": epoch, "lr": lr, "train_loss": total["loss_sum"] / count,
                       "train_acc": total["correct"] / count, "test_loss": test_loss, "test_acc": test_acc,
                       "val_loss": "", "val_acc": "", "seconds": round(seconds, 3),
                       "images_per_s": round(count / max(seconds, 1e-9), 1)}
                if val_split is not None:
                    row["val_loss"], row["val_acc"] = evaluate(net, val_split, amp, cuda)
                history.append(row)
                score = {"best_test": test_acc, "best_val": row["val_acc"], "last": epoch}[spec.selection]
                if score > best["score"]:
                    best = {"score": score, "epoch": epoch, "metrics": dict(row),
                            "state_dict": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}}
                save_resume(epoch + 1, 0, None)
                write_csv(out_dir / "history.csv", history, HISTORY_FIELDS)
                log(f"epoch {epoch}/{r['epochs']} lr {lr:.4g} train loss {row['train_loss']:.4f} "
                    f"acc {row['train_acc']:.4f} | test loss {test_loss:.4f} acc {test_acc:.4f} | "
                    f"{seconds:.1f}s {row['images_per_s']:.0f} img/s")
                if stop.signum:
                    raise Preempted(stop.signum)
    except Diverged as e:  # remembered, so that Snakemake's retries do not diverge again and again
        write_json(out_dir / DIVERGED, {"fingerprint": fingerprint, "message": str(e)})
        raise
    # Also here: a run resumed after its last epoch (killed while saving) has no loop iteration left.
    write_csv(out_dir / "history.csv", history, HISTORY_FIELDS)
    checkpoint.save(out_dir / "model.pt", {**run_meta(best["epoch"]), "state_dict": best["state_dict"],
                                           "metrics": best["metrics"]})
    save_resume(r["epochs"] + 1, 0, None, complete=True)
    log(f"selected epoch {best['epoch']} by {spec.selection}: test acc {best['metrics']['test_acc']:.4f}")
    return best["metrics"]
