"""The training loop, readable top to bottom: the run's settings and numerics, seeding, optimiser
and schedule, one epoch, the epoch loop with evaluation and model selection, preemption-safe
checkpoints and exact resume.

Resume contract: ``last.pt`` in the run folder (not a Snakemake output, so a failed job keeps
it) holds a ``ResumeState``: model, optimiser, scheduler, the weights' moving average, history,
best model and the position inside the epoch. Shuffling and augmentation (crop, flip, cutout,
mixup, CutMix) come from two CPU generators seeded by (order seed, epoch) and (augment seed,
epoch), so a resumed run replays exactly the batches it would have seen. With ``deterministic`` an
interrupted run ends bit-identical to an uninterrupted one, whatever the core count, and a
resume that could not be exact (another GPU model, torch version or training code) is refused.
A ``last.pt`` marked complete rebuilds model.pt and history.csv in seconds, with no training.
"""

import contextlib
import copy
import hashlib
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import checkpoint
from .data import Dataset
from .deps import model_code
from .exceptions import CheckpointError, ConfigError, Diverged, OutputError, Preempted
from .files import ensure_dir, read_json, remove_stale_temps, write_csv, write_json
from .model import count_parameters, initialise, resnet18
from .pipeline import Augment, DeviceSplit, eval_batches, generator, num_batches, train_batches
from .provenance import device_name, provenance, source_digest

HISTORY_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc",
                  "val_loss", "val_acc", "seconds", "images_per_s",
                  "ema_test_loss", "ema_test_acc", "ema_val_loss", "ema_val_acc"]
CUDA_CHECK_EVERY = 50  # steps between NaN checks on CUDA (each check is a host-device sync)
# Intra-op threads of a deterministic CPU run. The thread count splits every reduction (convolution,
# batch norm), so weights depend on it: a fixed count makes them the same whatever the cores or
# OMP_NUM_THREADS say. 1 runs on every machine without oversubscription; deterministic CPU runs
# are for tests and debugging (a full run belongs on a GPU, where host threads do not touch the sums).
DETERMINISTIC_CPU_THREADS = 1
# Which randomness the run seed drives; data is order and augmentation together.
VARIED = {"all": ("init", "order", "augment"), "init": ("init",), "data": ("order", "augment"),
          "order": ("order",), "augment": ("augment",), "none": ()}
VARY = tuple(VARIED)
# The seed of a component a recipe does not vary: outside the config's seed range (0..2**32-1), so a
# fixed component is never the stream of any varied seed (seeds reach 64-bit streams, pipeline.generator).
FIXED_SEED = 2**32
SELECTIONS = ("best_test", "last", "best_val")
PRECISIONS = ("bf16", "fp32")
# The modules whose source decides the weights (deps.MODEL_CODE, also the GPU rules' code inputs):
# a finished last.pt is reused only with the same code.
TRAINING_CODE = model_code()
# Free space a run needs, in model sizes: last.pt (weights, momentum, best weights, EMA weights)
# and its temp copy while it is replaced, plus model.pt.
CHECKPOINT_MODEL_SIZES = 9
COMPILE_DETERMINISTIC = ("compile: true and deterministic: true cannot be combined: torch.compile's Inductor "
                         "autotunes kernel choices that change the numerics (and caches them on local disk), "
                         "so the run would not be bit-reproducible; set one of them to false")


@dataclass
class RunSpec:
    """One run's settings, every one given by the caller (defaults live in the config schema)."""

    recipe: dict
    recipe_name: str
    seed: int
    selection: str  # best_test | last | best_val
    val_size: int
    deterministic: bool
    precision: str  # bf16 | fp32; CUDA only, the CPU always trains in fp32
    compile: bool

    def __post_init__(self):
        checks = {"selection": (self.selection, SELECTIONS), "precision": (self.precision, PRECISIONS),
                  f"recipes/{self.recipe_name}/vary": (self.recipe.get("vary"), VARY)}
        for key, (value, allowed) in checks.items():
            if value not in allowed:
                raise ConfigError(f"config key {key}: {value!r} is not one of {', '.join(allowed)}")
        if self.compile and self.deterministic:
            raise ConfigError(COMPILE_DETERMINISTIC)

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
        those never retrains. The code is checked apart (``arithmetic``), where it can be explained.
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


def arithmetic(device: torch.device, precision: str) -> dict:
    """What else changes the numbers a run computes: a resume with other values is not exact."""
    a = {"torch": str(torch.__version__), "device": device.type, "device_name": device_name(device),
         "precision": precision, "training_code": source_digest(TRAINING_CODE)}
    if device.type == "cuda":
        a.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    else:  # oneDNN picks kernels by instruction set; the thread count splits the sums
        a.update(cpu_capability=torch.backends.cpu.get_cpu_capability(), threads=torch.get_num_threads())
    return a


def pick_device(name: str | None = None) -> torch.device:
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"--device {name}: not a device name (cpu, cuda, cuda:1, auto)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is visible to this process")
    return device


def set_determinism(deterministic: bool) -> None:
    """Every switch set both ways, so a run after a deterministic one in the same process is not."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    # Filling fresh memory with NaN is a debugging aid (an extra kernel per allocation, 10-15%);
    # every tensor here is written before it is read.
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def set_precision(precision: str) -> None:
    """fp32 means IEEE fp32: cuDNN would otherwise run convolutions in TF32 on Ampere and newer.
    bf16 keeps torch's defaults (TF32 convolutions outside autocast, fp32 matmuls)."""
    torch.backends.cudnn.allow_tf32 = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def numerics(spec: RunSpec, device: torch.device, log):
    """Threads, determinism and TF32 for this run; yields the precision it trains in. The
    process's thread count comes back afterwards."""
    threads = torch.get_num_threads()
    if spec.deterministic and device.type == "cpu":
        torch.set_num_threads(DETERMINISTIC_CPU_THREADS)
    set_determinism(spec.deterministic)
    if spec.deterministic:
        warnings.warn("deterministic: true makes runs bit-reproducible but slower "
                      "(deterministic kernels, no cuDNN autotuning, one CPU thread)", stacklevel=3)
    precision = resolve_precision(device, spec.precision, log)
    set_precision(precision)
    try:
        yield precision
    finally:
        torch.set_num_threads(threads)


def resolve_precision(device: torch.device, precision: str, log) -> str:
    """bf16 only where the chosen GPU has it natively (Ampere and newer); emulated bf16 is slower than fp32."""
    if device.type != "cuda":
        if precision != "fp32":
            log("CPU run: training in fp32 (bf16 autocast is used on CUDA only)")
        return "fp32"
    if precision == "bf16" and torch.cuda.get_device_capability(device) < (8, 0):
        log(f"{torch.cuda.get_device_name(device)} has no native bf16: training in fp32")
        return "fp32"
    return precision


def autocast_for(device: torch.device, precision: str):
    if device.type == "cuda" and precision == "bf16":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def _one_line(text: str, pattern=r"fatal error|No such file|not found|error:") -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return next((ln for ln in lines if re.search(pattern, ln)), lines[0] if lines else "")


def compile_model(model: nn.Module, device: torch.device) -> nn.Module:
    """torch.compile, after a tiny compiled function has run on ``device``: a missing toolchain
    (CUDA headers, ptxas, a C compiler) fails there as one line, not at the model's first forward."""
    try:
        probe = torch.compile(lambda x: x * 2 + 1, dynamic=False)
        probe(torch.ones(8, device=device))
    except Exception as e:
        need = ("the CUDA toolchain Triton compiles with (conda-forge: cuda-nvcc, cuda-cudart-dev and gcc, "
                "of the CUDA version PyTorch was built with)" if device.type == "cuda"
                else "a C++ compiler (conda-forge: gxx)")
        raise ConfigError(f"compile: true, but torch.compile cannot build kernels on {device} here "
                          f"({_one_line(e) or type(e).__name__}): install {need}, or set compile: false") from e
    # dynamic=False: the partial last batch and eval batches compile once each, as static graphs.
    return torch.compile(model, dynamic=False)


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


# --- the resume state -----------------------------------------------------------------------

@dataclass
class ResumeState:
    """What last.pt holds to continue a run exactly, and what a finished run is rebuilt from."""

    fingerprint: dict  # RunSpec.fingerprint(): which run this is
    arithmetic: dict  # arithmetic(): what the numbers were computed with
    provenance: dict  # provenance() of the attempt that wrote it
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
    with numerics(spec, device, log) as precision, StopFlag() as stop:
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
