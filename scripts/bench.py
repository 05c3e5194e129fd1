#!/usr/bin/env python
r"""Benchmark this project's training pipeline against the notebook's, side by side, in one process.

    python scripts/bench.py --device cpu                          # this repository's CPU figures
    python scripts/bench.py --device cuda --json bench.json       # on a GPU: the H100 targets
    python scripts/bench.py --device cuda --compile --precision fp32 --no-reference \
        --reference-json bench.json                               # reuse (b) from the run above

Both pipelines train the same ResNet-18 (cifar100.model) with the baseline recipe's optimizer
(config.yaml) at the same batch size, on synthetic data of CIFAR-100's real shape (uint8
50,000 x 32 x 32 x 3 train images, 100 classes; 10,000 test images):

  (a) project    the code training runs: cifar100.pipeline (whole split on the device, batched
                 crop+flip gather, fused normalisation), cifar100.engine's optimizer, autocast and
                 evaluate; the step is engine.train_step with engine.check_finite, as in
                 engine.train. On CUDA: channels_last, --precision autocast with training's TF32
                 switches (engine.set_precision), and with --compile training's call,
                 engine.compile_model (torch.compile with dynamic=False).
  (b) reference  the notebook: a Dataset returning PIL images through RandomCrop(32, padding=4),
                 RandomHorizontalFlip, ToTensor, Normalize; DataLoader(batch, shuffle, 2 workers);
                 fp32, NCHW, default torch.optim.SGD, loss.item() every step.

For each: data-pipeline images/s alone, training-step images/s (data included), evaluation
images/s, peak memory, the ratios (a)/(b), the projected 100-epoch wall time
100 * (50000/train_ips + 10000/eval_ips) and the issue's targets. For (a) also the data
pipeline's images/s with each recipe augmentation (cutout, mixup, CutMix) on top of crop+flip,
timed the same way in the same run, with its extra time per image as a share of a training step
(the GPU target: under 5%).

Everything is measured at steady state: the training steps and one evaluation pass are warmed up
first, untimed (cuDNN autotuning, compilation, the allocator's first growth), then the peaks are
reset and the timed steps and passes run. CUDA timings are bracketed by torch.cuda.synchronize.
Memory on CUDA, per pipeline: ``allocated`` (max_memory_allocated over the timed steps: tensors
alive at once), ``reserved`` (max_memory_reserved over warm-up and timed steps: what the caching
allocator holds, as it never gives memory back during training) and, once per process,
``context`` (device memory in use, from torch.cuda.mem_get_info, minus what the allocator
reserves: the CUDA context, cuBLAS/cuDNN handles and kernels). ``process`` = reserved + context
is what nvidia-smi shows for the process, and what the 3 GB target is checked against. On the
CPU: the main process's peak RSS (VmHWM, reset after the warm-up), DataLoader workers not included.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cifar100 import config as cfg
from cifar100 import engine
from cifar100.cli import run_cli
from cifar100.exceptions import UserError
from cifar100.files import write_json
from cifar100.model import resnet18
from cifar100.pipeline import MEAN, PAD, PLAIN, SIZE, STD, Augment, DeviceSplit, num_batches, train_batches

TRAIN_SIZE, TEST_SIZE, NUM_CLASSES = 50_000, 10_000, 100
EVAL_PASSES = 3  # timed passes over the evaluation images for (a); (b) times one pass of its loader
GPU_TARGETS = {"train_ratio": 5.0, "train_ips": 30_000.0, "projected_100_epochs_s": 180.0, "peak_memory_gb": 3.0,
               "augment_overhead_pct": 5.0}
# The recipe keys of each augmentation timed beside plain crop+flip (the config.yaml recipes' settings).
AUGMENTATIONS = {"cutout 8": {"cutout": 8}, "mixup 1.0": {"mixup": 1.0},
                 "cutmix 1.0 p 0.5": {"cutmix": 1.0, "cutmix_prob": 0.5}}
AUGMENT_ROUNDS = 3
CPU_TARGETS = {"data_ratio": 10.0, "train_ratio": 1.0, "eval_ratio": 1.0}
# Per-device defaults: a GPU needs many steps for a stable figure, the CPU needs few to finish quickly.
# On 2 CPU cores a width-64 step takes seconds, so the CPU default is width 16 (same architecture).
DEFAULTS = {"cuda": {"steps": 200, "warmup": 20, "data_batches": 200, "eval_n": 10_000, "width": 64},
            "cpu": {"steps": 6, "warmup": 1, "data_batches": 100, "eval_n": 1000, "width": 16}}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default: %(default)s)")
    p.add_argument("--steps", type=int, help="timed training steps per pipeline "
                   f"(default: {DEFAULTS['cuda']['steps']} on CUDA, {DEFAULTS['cpu']['steps']} on the CPU)")
    p.add_argument("--warmup", type=int, help="untimed warm-up steps before each timed region "
                   f"(default: {DEFAULTS['cuda']['warmup']} on CUDA, {DEFAULTS['cpu']['warmup']} on the CPU)")
    p.add_argument("--data-batches", type=int, help="timed batches of the data pipeline alone "
                   f"(default: {DEFAULTS['cuda']['data_batches']} on CUDA, "
                   f"{DEFAULTS['cpu']['data_batches']} on the CPU)")
    p.add_argument("--eval-n", type=int, help="test images evaluated in the timed pass "
                   f"(default: {DEFAULTS['cuda']['eval_n']} on CUDA, {DEFAULTS['cpu']['eval_n']} on the CPU)")
    p.add_argument("--eval-batch", type=int,
                   help="evaluation batch of (a) (default: engine.eval_batch_size, what training uses: "
                        "1000 on CUDA, 256 on the CPU)")
    p.add_argument("--n", type=int, default=TRAIN_SIZE, help="synthetic training images (default: %(default)s)")
    p.add_argument("--width", type=int, help="ResNet-18 width (default: 64, the baseline recipe's, on CUDA; "
                   f"{DEFAULTS['cpu']['width']} on the CPU, so that the default run takes under 3 minutes)")
    p.add_argument("--batch-size", type=int, help="training batch size (default: the baseline recipe's, 128)")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                   help="autocast of (a) on CUDA; the CPU and (b) always run fp32 (default: %(default)s)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile the model of (a) (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of (b) (default: %(default)s)")
    p.add_argument("--config", default=str(cfg.REPO_CONFIG),
                   help="config holding the baseline recipe (default: config.yaml at the repository root)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own, one per core)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the synthetic data and the shuffles (default: %(default)s)")
    p.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                   help="also run (b), the notebook's pipeline (default: %(default)s)")
    p.add_argument("--reference-json", help="with --no-reference: take (b)'s figures from this earlier --json "
                   "of the same device, batch size and width, for the ratios (default: none)")
    p.add_argument("--json", help="also write the results as JSON to this path (default: none)")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    args.device = engine.pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    for key, value in DEFAULTS[args.device.type if args.device.type == "cuda" else "cpu"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


# ---- measurement helpers ------------------------------------------------------------------

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory of one phase: the CUDA allocator's peaks, or the main process's peak RSS on the CPU.

    ``reset`` once warm-up is over; ``peaks`` then gives the steady state's figures.
    """

    def __init__(self, device):
        self.device = device
        self.kind = ("cuda: allocated and reserved peaks, context from mem_get_info" if device.type == "cuda" else
                     "process peak RSS (VmHWM, reset after warm-up)" if self._can_reset() else
                     "process peak RSS since start (getrusage ru_maxrss, cumulative)")
        self.reserved_warmup = 0

    @staticmethod
    def _can_reset() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return "VmHWM" in Path("/proc/self/status").read_text()
        except OSError:
            return False

    def release(self):
        """Before a new pipeline: give the previous one's cached blocks back (CUDA)."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def reset(self):
        """After warm-up. The reserved peak so far is kept: training never returns cached blocks."""
        if self.device.type == "cuda":
            sync(self.device)
            self.reserved_warmup = torch.cuda.max_memory_reserved(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif "VmHWM" in self.kind:
            Path("/proc/self/clear_refs").write_text("5")

    def peaks(self) -> dict:
        if self.device.type == "cuda":
            sync(self.device)
            allocated = torch.cuda.max_memory_allocated(self.device)
            reserved = max(self.reserved_warmup, torch.cuda.max_memory_reserved(self.device))
            return {"peak_memory_bytes": allocated, "allocated_peak_bytes": allocated,
                    "reserved_peak_bytes": reserved}
        if "VmHWM" in self.kind:
            line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM"))
            return {"peak_memory_bytes": int(line.split()[1]) * 1024}
        return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}

    def context_bytes(self) -> int | None:
        """Device memory in use beyond the allocator's: the CUDA context, library handles, kernels.

        mem_get_info counts every process on the device; the GPU check runs this bench alone.
        """
        if self.device.type != "cuda":
            return None
        free, total = torch.cuda.mem_get_info(self.device)
        return total - free - torch.cuda.memory_reserved(self.device)


def nvidia_smi_process_bytes() -> int | None:
    """nvidia-smi's figure for this process, where it can see it (not inside every container)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        pid, _, mib = line.partition(",")
        if pid.strip() == str(os.getpid()) and mib.strip().isdigit():
            return int(mib) * 2**20
    return None


def timed(device, fn, count: int) -> float:
    """Seconds taken by ``count`` calls of ``fn``, the device drained before and after."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(count):
        fn()
    sync(device)
    return time.perf_counter() - t0


def synthetic(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8),
            rng.integers(0, NUM_CLASSES, n, dtype=np.int64))


# ---- (a) this project's pipeline ----------------------------------------------------------

def project_batches(split, batch_size, seed, channels_last, augment=PLAIN):
    """Epoch after epoch of cifar100.pipeline.train_batches, as training draws them."""
    epoch = 1
    while True:
        yield from train_batches(split, batch_size, seed, epoch, channels_last=channels_last, augment=augment)
        epoch += 1


def bench_augmentations(args, recipe, train_split) -> tuple[float, dict]:
    """Data-pipeline images/s of plain crop+flip and of each augmentation on top of it, timed in
    AUGMENT_ROUNDS interleaved rounds, the best round of each: a machine's drifting load then
    favours none of them. Returns (plain images/s, {augmentation: figures})."""
    pipelines = {name: Augment.from_recipe({**recipe, **keys}, NUM_CLASSES) for name, keys in AUGMENTATIONS.items()}
    streams = {name: project_batches(train_split, recipe["batch_size"], args.seed, args.device.type == "cuda", aug)
               for name, aug in {"plain": PLAIN, **pipelines}.items()}
    for batches in streams.values():
        for _ in range(args.warmup):
            next(batches)
    per_round = max(1, args.data_batches // AUGMENT_ROUNDS)
    best = dict.fromkeys(streams, 0.0)
    for _ in range(AUGMENT_ROUNDS):
        for name, batches in streams.items():
            s = timed(args.device, lambda b=batches: next(b), per_round)
            best[name] = max(best[name], per_round * recipe["batch_size"] / s)
    plain = best.pop("plain")
    return plain, {name: {"data_ips": ips, "extra_us_per_image": 1e6 * (1 / ips - 1 / plain)}
                   for name, ips in best.items()}


def bench_project(args, recipe, train_np, test_np, mem):
    device, cuda = args.device, args.device.type == "cuda"
    res = {}
    mem.release()
    train_split = DeviceSplit(*train_np, device)
    test_split = DeviceSplit(*test_np, device)

    batches = project_batches(train_split, recipe["batch_size"], args.seed, cuda)
    for _ in range(args.warmup):
        next(batches)
    s = timed(device, lambda: next(batches), args.data_batches)
    res["data_ips"] = args.data_batches * recipe["batch_size"] / s
    res["augment_plain_ips"], res["augmentations"] = bench_augmentations(args, recipe, train_split)

    # The model, optimizer, compile call and step of engine.train.
    model = resnet18(NUM_CLASSES, recipe["width"]).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = engine.make_optimizer(model, recipe, device)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe["label_smoothing"])
    net = engine.compile_model(model, device) if args.compile else model  # dynamic=False, as training
    amp = engine.autocast_for(device, args.precision)
    steps_per_epoch = num_batches(len(train_split), recipe["batch_size"])
    stats = engine.EpochStats(device)
    batches = project_batches(train_split, recipe["batch_size"], args.seed, cuda)

    def step():  # what engine.train does per step, through the same functions
        i, x, y = next(batches)
        engine.train_step(net, opt, criterion, amp, x, y, i, stats)
        engine.check_finite(stats, 0, i, steps_per_epoch, cuda, "(benchmark)")

    def evaluate():
        engine.evaluate(net, test_split, amp, cuda, args.eval_batch)

    # Warm-up, untimed: training steps, then one evaluation pass (evaluate() switches to eval
    # mode: with compile, a second graph), so that the timed region is the steady state.
    t0 = time.perf_counter()
    model.train()
    for _ in range(args.warmup):
        step()
    evaluate()
    model.train()
    sync(device)
    res["warmup_s"] = time.perf_counter() - t0
    mem.reset()

    s = timed(device, step, args.steps)
    res["train_ips"] = args.steps * recipe["batch_size"] / s
    for aug in res["augmentations"].values():  # its extra time per image, as a share of a training step's
        aug["overhead_pct"] = 100 * aug["extra_us_per_image"] * 1e-6 * res["train_ips"]
    s = timed(device, evaluate, EVAL_PASSES)
    res["eval_ips"] = EVAL_PASSES * len(test_split) / s
    res.update(mem.peaks())
    if cuda:  # while the model, optimizer and data are still held
        res["context_bytes"] = mem.context_bytes()
        res["process_peak_bytes"] = res["reserved_peak_bytes"] + res["context_bytes"]
        res["nvidia_smi_bytes"] = nvidia_smi_process_bytes()
    return res


# ---- (b) the notebook's pipeline ----------------------------------------------------------

class NotebookDataset(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR100 does per item: a PIL image from the uint8 array, transformed."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


class Cycle:
    """Batches of a DataLoader epoch after epoch (a new epoch restarts the workers, as in the notebook)."""

    def __init__(self, loader):
        self.loader, self.it = loader, iter(loader)

    def __next__(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)

    def close(self):
        self.it = None  # the iterator's finaliser shuts its workers down


def bench_reference(args, recipe, train_np, test_np, mem):
    from torchvision import transforms as T

    device = args.device
    res = {}
    mem.release()
    engine.set_precision("bf16")  # the notebook runs with torch's defaults (TF32 convolutions)
    normalize = T.Normalize(MEAN, STD)
    train_tf = T.Compose([T.RandomCrop(SIZE, padding=PAD), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    test_tf = T.Compose([T.ToTensor(), normalize])
    g = torch.Generator().manual_seed(args.seed)
    train_loader = torch.utils.data.DataLoader(NotebookDataset(*train_np, train_tf), batch_size=recipe["batch_size"],
                                               shuffle=True, num_workers=args.workers, generator=g)
    test_loader = torch.utils.data.DataLoader(NotebookDataset(*test_np, test_tf), batch_size=recipe["batch_size"],
                                              shuffle=False, num_workers=args.workers)

    def fetch():
        x, y = next(batches)
        return x.to(device), y.to(device)

    batches = Cycle(train_loader)
    for _ in range(max(args.warmup, 1)):  # the first batch waits for the workers to start
        fetch()
    s = timed(device, fetch, args.data_batches)
    res["data_ips"] = args.data_batches * recipe["batch_size"] / s
    batches.close()

    model = resnet18(NUM_CLASSES, recipe["width"]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                          weight_decay=recipe["weight_decay"], nesterov=recipe["nesterov"])
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe["label_smoothing"])
    stats = {"loss": 0.0, "correct": 0}

    def step():
        x, y = fetch()
        opt.zero_grad()
        out = model(x)
        loss = criterion(out, y)
        loss.backward()
        opt.step()
        stats["loss"] += loss.item()
        stats["correct"] += (out.argmax(1) == y).sum().item()

    batches = Cycle(train_loader)
    model.train()
    for _ in range(max(args.warmup, 1)):
        step()
    mem.reset()  # evaluation below needs less memory than training, so its one warm-up batch may count
    s = timed(device, step, args.steps)
    res["train_ips"] = args.steps * recipe["batch_size"] / s
    batches.close()

    model.eval()
    with torch.no_grad():
        it = iter(test_loader)
        x, y = next(it)  # untimed: waits for the workers to start
        model(x.to(device))
        count, correct = 0, 0

        def eval_batch():
            nonlocal count, correct
            x, y = next(it)
            x, y = x.to(device), y.to(device)
            correct += (model(x).argmax(1) == y).sum().item()
            count += len(y)

        s = timed(device, eval_batch, len(test_loader) - 1)
    res["eval_ips"] = count / s
    res.update(mem.peaks())
    return res


# ---- report -------------------------------------------------------------------------------

def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        model = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def projected_100_epochs(r: dict) -> float:
    return 100 * (TRAIN_SIZE / r["train_ips"] + TEST_SIZE / r["eval_ips"])


def targets(results: dict, cuda: bool) -> dict:
    """Each target's value, threshold and verdict; ratio targets are left out without a reference."""
    a, ratios = results["project"], results["ratios"]
    if cuda:
        values = {"train_ratio": (ratios.get("train_ips"), ">="), "train_ips": (a["train_ips"], ">="),
                  "projected_100_epochs_s": (a["projected_100_epochs_s"], "<"),
                  "peak_memory_gb": (a["process_peak_bytes"] / 1e9, "<"),
                  "augment_overhead_pct": (max(x["overhead_pct"] for x in a["augmentations"].values()), "<")}
        limits = GPU_TARGETS
    else:
        values = {"data_ratio": (ratios.get("data_ips"), ">="), "train_ratio": (ratios.get("train_ips"), ">="),
                  "eval_ratio": (ratios.get("eval_ips"), ">=")}
        limits = CPU_TARGETS
    out = {}
    for key, (value, op) in values.items():
        if value is None:
            continue
        ok = value >= limits[key] if op == ">=" else value < limits[key]
        out[key] = {"value": value, "target": f"{op} {limits[key]:g}", "pass": bool(ok)}
    return out


MEMORY_ROWS = [("peak memory (MB)", "peak_memory_bytes"), ("  reserved peak (MB)", "reserved_peak_bytes"),
               ("  + context (MB)", "context_bytes"), ("  = process (MB)", "process_peak_bytes"),
               ("  nvidia-smi (MB)", "nvidia_smi_bytes")]


def report(results: dict) -> str:
    a, b, ratios = results["project"], results.get("reference") or {}, results["ratios"]
    rows = [("data pipeline (img/s)", "data_ips", "{:,.0f}", 1), ("training step (img/s)", "train_ips", "{:,.0f}", 1),
            ("evaluation (img/s)", "eval_ips", "{:,.0f}", 1),
            *[(label, key, "{:,.0f}", 1e6) for label, key in MEMORY_ROWS if a.get(key) is not None],
            ("projected 100 epochs (s)", "projected_100_epochs_s", "{:,.1f}", 1)]
    cuda = results["device"] == "cuda"
    lines = [f"device: {results['device_name']} ({results['device']}), torch {results['torch']}",
             f"settings: batch {results['batch_size']}, width {results['width']}, n {results['n']}, "
             f"steps {results['steps']} (+{results['warmup']} warm-up), data batches {results['data_batches']}, "
             f"eval images {results['eval_n']} (batch {results['eval_batch']} / {results['batch_size']}), "
             f"precision {results['precision']}, compile {results['compile']}",
             f"memory: {results['memory_kind']}" + (" (peak memory = allocated)" if cuda else "")
             + f"; load average {results['loadavg_start']} -> {results['loadavg_end']}",
             f"(b) the notebook: {results['reference_source']}",
             "", f"{'':28s}{'(a) project':>16s}{'(b) notebook':>16s}{'(a)/(b)':>10s}"]
    for label, key, fmt, div in rows:
        ratio = f"{ratios[key]:.2f}x" if key in ratios else ""
        cells = [fmt.format(r[key] / div) if r.get(key) is not None else "-" for r in (a, b)]
        lines.append(f"{label:28s}{cells[0]:>16s}{cells[1]:>16s}{ratio:>10s}")
    lines += ["", f"{'augmentation (data pipeline)':28s}{'img/s':>16s}{'extra us/img':>16s}{'of a step':>10s}",
              f"{'  crop+flip':28s}{a['augment_plain_ips']:>16,.0f}"]
    for name, aug in a["augmentations"].items():
        lines.append(f"{'  + ' + name:28s}{aug['data_ips']:>16,.0f}{aug['extra_us_per_image']:>16,.2f}"
                     f"{aug['overhead_pct']:>9.1f}%")
    lines += ["", "projected 100-epoch wall time = 100 * (50000/train_ips + 10000/eval_ips), "
              f"(a): {a['projected_100_epochs_s']:.1f} s = {a['projected_100_epochs_s'] / 60:.1f} min",
              f"targets ({'H100' if cuda else 'CPU'}):"]
    for key, t in results["targets"].items():
        lines.append(f"  {key:24s} {t['value']:12,.2f}  {t['target']:>10s}  {'PASS' if t['pass'] else 'FAIL'}")
    if cuda and (results["width"] != 64 or results["batch_size"] != 128):
        lines.append("  (the H100 targets are defined for width 64 and batch 128)")
    return "\n".join(lines)


def load_reference(path, results: dict) -> dict:
    """(b)'s figures from an earlier run's --json, if it measured the same setting."""
    try:
        earlier = json.loads(Path(path).read_text())
        ref = earlier["reference"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"--reference-json {path}: not a bench.py --json with a reference ({e})") from None
    for key in ("device", "device_name", "batch_size", "width", "n"):
        if earlier.get(key) != results[key]:
            raise UserError(f"--reference-json {path}: measured {key} {earlier.get(key)!r}, this run {results[key]!r}")
    return ref


def main(argv=None):
    args = parse_args(argv)
    cuda = args.device.type == "cuda"
    recipe = dict(cfg.load(args.config)["recipes"]["baseline"])
    recipe["width"] = args.width
    recipe["batch_size"] = args.batch_size or recipe["batch_size"]
    if args.reference and args.eval_n <= recipe["batch_size"]:
        raise UserError(f"--eval-n must exceed the batch size ({recipe['batch_size']}): "
                        "the reference's first evaluation batch is its untimed warm-up")
    if args.reference and args.reference_json:
        raise UserError("--reference-json is for --no-reference runs: this run measures (b) itself")
    engine.seed_everything(args.seed)
    engine.set_determinism(False)
    engine.set_precision(args.precision if cuda else "fp32")
    load0 = os.getloadavg()
    train_np = synthetic(args.n, args.seed)
    test_np = synthetic(args.eval_n, args.seed + 1)
    mem = PeakMemory(args.device)

    results = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": args.device.type,
               "device_name": device_name(args.device), "torch": torch.__version__, "python": sys.version.split()[0],
               "batch_size": recipe["batch_size"], "width": recipe["width"], "n": args.n, "steps": args.steps,
               "warmup": args.warmup, "data_batches": args.data_batches, "eval_n": args.eval_n,
               "eval_batch": args.eval_batch or engine.eval_batch_size(args.device),
               "precision": args.precision if cuda else "fp32", "compile": args.compile, "workers": args.workers,
               "memory_kind": mem.kind, "loadavg_start": [round(x, 2) for x in load0]}
    t0 = time.perf_counter()
    results["project"] = bench_project(args, recipe, train_np, test_np, mem)
    if args.reference:
        results["reference"] = bench_reference(args, recipe, train_np, test_np, mem)
        results["reference_source"] = "measured in this run"
    elif args.reference_json:
        results["reference"] = load_reference(args.reference_json, results)
        results["reference_source"] = f"from {args.reference_json}"
    else:
        results["reference"] = None
        results["reference_source"] = "not measured (--no-reference)"
    results["seconds"] = round(time.perf_counter() - t0, 1)
    results["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    for r in (results["project"], results["reference"]):
        if r is not None:
            r["projected_100_epochs_s"] = projected_100_epochs(r)
    a, b = results["project"], results["reference"]
    results["ratios"] = {} if b is None else {k: a[k] / b[k] for k in ("data_ips", "train_ips", "eval_ips")}
    results["targets"] = targets(results, cuda)
    print(report(results), flush=True)
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    run_cli(main)
