#!/usr/bin/env python
"""Benchmark this project's training pipeline against the notebook's, side by side, in one process.

    python scripts/bench.py --device cpu                       # this repository's CPU figures
    python scripts/bench.py --device cuda --json bench.json    # on a GPU: the H100 targets

Both train the baseline recipe's ResNet-18 (config.yaml) on random data of CIFAR-100's shape:
(a) the project: numerics.numerics and engine.build (splits on the device, model, optimizer,
schedule, autocast, compile), engine.train_epoch's step (train_step, the schedule, check_finite)
and engine.evaluate; its data pipeline also with each recipe augmentation beside crop+flip.
(b) the notebook: PIL images through RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor,
Normalize; DataLoader(batch, shuffle, 2 workers); fp32, NCHW, torch.optim.SGD, loss.item() a step.

Reported: data, training-step and evaluation images/s, peak memory, the ratios (a)/(b), the
projected 100-epoch time 100 * (50000/train_ips + 10000/eval_ips) and the targets (``judge``, also
gpu_check.py's). Steady state: warm-up steps and an evaluation pass run untimed first; CUDA timings
are synchronised; data pipelines run in interleaved rounds, the best of each, so a drifting load
favours none. CUDA memory: allocated (peak, timed region), reserved (what the caching allocator
holds at the end: it gives nothing back while training), context (the rest in use: CUDA context,
library handles) and process = reserved + context, what nvidia-smi shows and the 3 GB target is
checked against. CPU: the main process's peak RSS (VmHWM reset after warm-up; workers not included).
"""

import argparse
import datetime
import itertools
import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cifar100 import config as cfg
from cifar100 import data, engine, numerics
from cifar100.cli import run_cli
from cifar100.exceptions import UserError
from cifar100.files import write_json
from cifar100.model import resnet18
from cifar100.pipeline import MEAN, PAD, PLAIN, SIZE, STD, Augment, train_batches
from cifar100.provenance import device_name

TRAIN_SIZE, TEST_SIZE, NUM_CLASSES = 50_000, 10_000, 100  # CIFAR-100's, for the 100-epoch projection
EVAL_PASSES, ROUNDS, WORKERS = 3, 3, 2  # timed evaluation passes of (a), data rounds, (b)'s DataLoader workers
# The recipe keys of each augmentation timed beside plain crop+flip (the config.yaml recipes' settings).
AUGMENTATIONS = {"cutout 8": {"cutout": 8}, "mixup 1.0": {"mixup": 1.0},
                 "cutmix 1.0 p 0.5": {"cutmix": 1.0, "cutmix_prob": 0.5}}
# (comparison, threshold); the GPU's are issue 10's for one H100-class GPU at width 64 and batch 128.
TARGETS = {"cuda": {"train_ratio": (">=", 5.0), "train_ips": (">=", 30_000), "projected_100_epochs_s": ("<", 180),
                    "peak_memory_gb": ("<", 3.0), "augment_overhead_pct": ("<", 5.0)},
           "cpu": {"data_ratio": (">=", 10.0), "train_ratio": (">=", 1.0), "eval_ratio": (">=", 1.0)}}
# (help, CUDA default, CPU default): a GPU needs many steps for a stable figure; on 2 CPU cores a
# width-64 step takes seconds, so the CPU runs width 16 (the same architecture) and few steps.
PER_DEVICE = {"steps": ("timed training steps per pipeline", 200, 6), "warmup": ("untimed warm-up steps", 20, 1),
              "data_batches": ("timed batches of each data pipeline", 200, 100),
              "eval_n": ("test images", 10_000, 1000), "width": ("ResNet-18 width", 64, 16)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default: %(default)s)")
    for key, (what, gpu, cpu) in PER_DEVICE.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=int, help=f"{what} (default: {gpu} on CUDA, {cpu} on CPU)")
    p.add_argument("--n", type=int, default=TRAIN_SIZE, help="training images (default: %(default)s)")
    p.add_argument("--batch-size", type=int, help="training batch size (default: the baseline recipe's, 128)")
    p.add_argument("--precision", choices=cfg.choices("precision"), default=cfg.default("precision"),
                   help="autocast of (a) on CUDA; the CPU and (b) run fp32 (default: %(default)s)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile the model of (a), as training does (default: %(default)s)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own, one per core)")
    p.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                   help="also run (b), the notebook's pipeline (default: %(default)s)")
    p.add_argument("--json", help="also write the results as JSON to this path (default: none)")
    return p


# ---- measuring --------------------------------------------------------------------------------

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, fn, count: int) -> float:
    """Seconds taken by ``count`` calls of ``fn``, the device drained before and after."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(count):
        fn()
    sync(device)
    return time.perf_counter() - t0


def endless(epoch_batches):
    """Batches epoch after epoch; ``epoch_batches(epoch)`` gives one epoch's."""
    for epoch in itertools.count(1):
        yield from epoch_batches(epoch)


def data_rates(device, streams: dict, warmup: int, batches: int, batch_size: int) -> dict:
    """Images/s of each stream of batches: ``batches`` in ROUNDS interleaved rounds, the best round of each."""
    for stream in streams.values():
        for _ in range(max(warmup, 1)):  # the first batch of (b) waits for its workers to start
            next(stream)
    per_round, best = max(1, batches // ROUNDS), dict.fromkeys(streams, 0.0)
    for _ in range(ROUNDS):
        for name, stream in streams.items():
            best[name] = max(best[name], per_round * batch_size / timed(device, lambda: next(stream), per_round))
    return best


def reset_peaks(device) -> str:
    """After warm-up: the peaks from here on. Returns what they are."""
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return "CUDA allocator, allocated peak after warm-up; context from mem_get_info"
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM
        return "process peak RSS (VmHWM), reset after warm-up"
    except OSError:
        return "process peak RSS (VmHWM) since the start (/proc/self/clear_refs not writable)"


def peaks(device) -> dict:
    if device.type != "cuda":
        return {"peak_memory_bytes": int(re.search(r"VmHWM:\s*(\d+)", Path("/proc/self/status").read_text())[1]) * 1024}
    sync(device)
    free, total = torch.cuda.mem_get_info(device)  # of every process: the GPU check runs this one alone
    reserved = torch.cuda.memory_reserved(device)
    return {"peak_memory_bytes": torch.cuda.max_memory_allocated(device), "reserved_peak_bytes": reserved,
            "context_bytes": total - free - reserved, "process_peak_bytes": total - free,
            "nvidia_smi_bytes": nvidia_smi_bytes()}


def nvidia_smi_bytes() -> int | None:
    """nvidia-smi's figure for this process, a check of process_peak_bytes (None where it cannot see it)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    mib = [m.strip() for pid, _, m in (ln.partition(",") for ln in out.splitlines()) if pid.strip() == str(os.getpid())]
    return int(mib[0]) * 2**20 if mib and mib[0].isdigit() else None


def random_dataset(n: int, eval_n: int) -> data.Dataset:
    rng = np.random.default_rng(0)
    train, test = (data.Split(rng.integers(0, 256, (k, SIZE, SIZE, 3), dtype=np.uint8),
                              rng.integers(0, NUM_CLASSES, k), None) for k in (n, eval_n))
    return data.Dataset(train, test, [f"class{i}" for i in range(NUM_CLASSES)], None)


# ---- (a) this project's pipeline, (b) the notebook's ----------------------------------------------

def bench_project(args, recipe: dict, ds: data.Dataset) -> dict:
    device, cuda, bs = args.device, args.device.type == "cuda", recipe["batch_size"]
    spec = engine.RunSpec(recipe, "baseline", seed=0, selection="last", val_size=1, deterministic=False,
                          precision=args.precision, compile=args.compile)
    with numerics.numerics(spec.deterministic, spec.precision, device, log=lambda _: None) as precision:
        p = engine.build(ds, spec, device, precision)

        def batches(augment):
            return endless(lambda epoch: train_batches(p.train, bs, 0, epoch, channels_last=p.channels_last,
                                                       augment=augment))
        augments = {name: Augment.from_recipe({**recipe, **keys}, NUM_CLASSES) for name, keys in AUGMENTATIONS.items()}
        rates = data_rates(device, {"crop+flip": batches(PLAIN), **{k: batches(a) for k, a in augments.items()}},
                           args.warmup, args.data_batches, bs)
        plain = rates.pop("crop+flip")
        res = {"data_ips": plain, "augment_plain_ips": plain, "augmentations": {
            name: {"data_ips": ips, "extra_us_per_image": 1e6 * (1 / ips - 1 / plain)} for name, ips in rates.items()}}
        stats, train = engine.EpochStats(device), batches(p.augment)

        def step():  # engine.train_epoch's step
            i, x, y = next(train)
            engine.train_step(p.net, p.opt, p.criterion, p.amp, x, y, i, stats)
            p.sched.step()
            engine.check_finite(stats, 0, i, p.steps, cuda, "(benchmark)")

        def evaluate():  # eval mode: with compile, a second graph, warmed up too
            engine.evaluate(p.net, p.test, p.amp, p.channels_last)
            p.model.train()

        t0 = time.perf_counter()
        timed(device, step, args.warmup)
        evaluate()
        res["warmup_s"] = time.perf_counter() - t0
        res["memory"] = reset_peaks(device)
        res["train_ips"] = args.steps * bs / timed(device, step, args.steps)
        res["eval_ips"] = EVAL_PASSES * len(p.test) / timed(device, evaluate, EVAL_PASSES)
        res.update(peaks(device))
    for aug in res["augmentations"].values():  # its extra time per image, as a share of a training step's
        aug["overhead_pct"] = 100 * aug["extra_us_per_image"] * 1e-6 * res["train_ips"]
    return res


class NotebookDataset(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR100 does per item: a PIL image from the uint8 array, transformed."""

    def __init__(self, split: data.Split, transform):
        self.split, self.transform = split, transform

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.split.images[i])), int(self.split.labels[i])


def bench_reference(args, recipe: dict, ds: data.Dataset) -> dict:
    from torchvision import transforms as T

    device, bs = args.device, recipe["batch_size"]
    if device.type == "cuda":
        torch.cuda.empty_cache()  # (a)'s cached blocks
    numerics.set_precision("bf16")  # the notebook runs with torch's defaults (TF32 convolutions)
    norm = T.Normalize(MEAN, STD)
    train_tf = T.Compose([T.RandomCrop(SIZE, padding=PAD), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    loader = torch.utils.data.DataLoader(NotebookDataset(ds.train, train_tf), bs, shuffle=True, num_workers=WORKERS)
    test_loader = torch.utils.data.DataLoader(NotebookDataset(ds.test, T.Compose([T.ToTensor(), norm])), bs,
                                              num_workers=WORKERS)
    batches = endless(lambda epoch: loader)  # a new epoch restarts the workers, as in the notebook
    res = {"data_ips": data_rates(device, {"notebook": batches}, args.warmup, args.data_batches, bs)["notebook"]}
    model = resnet18(NUM_CLASSES, recipe["width"]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                          weight_decay=recipe["weight_decay"], nesterov=recipe["nesterov"])
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe["label_smoothing"])
    totals = {"loss": 0.0, "correct": 0}

    def step():
        x, y = next(batches)
        x, y = x.to(device), y.to(device)
        opt.zero_grad()
        out = model(x)
        loss = criterion(out, y)
        loss.backward()
        opt.step()
        totals["loss"] += loss.item()
        totals["correct"] += (out.argmax(1) == y).sum().item()

    model.train()
    timed(device, step, max(args.warmup, 1))
    res["memory"] = reset_peaks(device)  # evaluation needs less than training: its warm-up batch may count
    res["train_ips"] = args.steps * bs / timed(device, step, args.steps)
    model.eval()
    with torch.no_grad():
        test = iter(test_loader)
        model(next(test)[0].to(device))  # untimed: waits for the workers to start

        def eval_batch():
            x, y = next(test)
            totals["correct"] += (model(x.to(device)).argmax(1) == y.to(device)).sum().item()
        res["eval_ips"] = (len(ds.test) - bs) / timed(device, eval_batch, len(test_loader) - 1)
    res.update(peaks(device))
    return res


# ---- targets and report ---------------------------------------------------------------------------

def target_values(results: dict) -> dict:
    """Every target's measured value (None where not measured)."""
    a, ratios = results["project"], results["ratios"]
    return {"data_ratio": ratios.get("data_ips"), "train_ratio": ratios.get("train_ips"),
            "eval_ratio": ratios.get("eval_ips"), "train_ips": a["train_ips"],
            "projected_100_epochs_s": a["projected_100_epochs_s"],
            "peak_memory_gb": a["process_peak_bytes"] / 1e9 if "process_peak_bytes" in a else None,
            "augment_overhead_pct": max(x["overhead_pct"] for x in a["augmentations"].values())}


def judge(values: dict, device_type: str) -> dict:
    """Each target of the device: its value, threshold and verdict (None: not measured)."""
    out = {}
    for key, (op, limit) in TARGETS[device_type].items():
        v = values.get(key)
        ok = None if v is None else v >= limit if op == ">=" else v < limit
        out[key] = {"value": v, "target": f"{op} {limit:g}", "pass": ok}
    return out


def target_lines(targets: dict) -> list[str]:
    return [f"  {key:24s}{'-' if t['value'] is None else format(t['value'], ',.2f'):>12s}  {t['target']:>10s}  "
            f"{ {None: 'not measured', True: 'PASS', False: 'FAIL'}[t['pass']]}" for key, t in targets.items()]


ROWS = [("data pipeline (img/s)", "data_ips"), ("training step (img/s)", "train_ips"),
        ("evaluation (img/s)", "eval_ips"), ("peak memory (MB)", "peak_memory_bytes"),
        ("  reserved (MB)", "reserved_peak_bytes"), ("  + context (MB)", "context_bytes"),
        ("  = process (MB)", "process_peak_bytes"), ("  nvidia-smi (MB)", "nvidia_smi_bytes"),
        ("projected 100 epochs (s)", "projected_100_epochs_s")]


def report(r: dict) -> str:
    a, b, ratios = r["project"], r["reference"] or {}, r["ratios"]

    def cell(x, key):
        return "-" if x.get(key) is None else f"{x[key] / (1e6 if key.endswith('bytes') else 1):,.0f}"
    lines = [f"device: {r['device_name']} ({r['device']}, {r['cores']} cores, {r['threads']} torch threads), "
             f"torch {r['torch']}",
             f"settings: batch {r['batch_size']}, width {r['width']}, n {r['n']}, steps {r['steps']} (+{r['warmup']} "
             f"warm-up), data batches {r['data_batches']}, eval images {r['eval_n']}, precision {r['precision']}, "
             f"compile {r['compile']}",
             f"memory: {a['memory']}; load average {r['loadavg_start']} -> {r['loadavg_end']}",
             "",
             f"{'':28s}{'(a) project':>16s}{'(b) notebook':>16s}{'(a)/(b)':>10s}"]
    lines += [f"{label:28s}{cell(a, key):>16s}{cell(b, key):>16s}{f'{ratios[key]:.2f}x' if key in ratios else '':>10s}"
              for label, key in ROWS if a.get(key) is not None]
    lines += ["", f"{'augmentation (data pipeline)':28s}{'img/s':>16s}{'extra us/img':>16s}{'of a step':>10s}",
              f"{'  crop+flip':28s}{a['augment_plain_ips']:>16,.0f}"]
    lines += [f"{'  + ' + name:28s}{x['data_ips']:>16,.0f}{x['extra_us_per_image']:>16,.2f}{x['overhead_pct']:>9.1f}%"
              for name, x in a["augmentations"].items()]
    where = "H100-class GPU, width 64, batch 128" if r["device"] == "cuda" else "CPU"
    return "\n".join([*lines, "", f"targets ({where}):", *target_lines(r["targets"])])


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.device = numerics.pick_device(args.device)
    for key, (_, gpu, cpu) in PER_DEVICE.items():
        if getattr(args, key) is None:
            setattr(args, key, gpu if args.device.type == "cuda" else cpu)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = {**cfg.load(cfg.REPO_CONFIG)["recipes"]["baseline"], "width": args.width}
    recipe["batch_size"] = args.batch_size or recipe["batch_size"]
    if args.reference and args.eval_n <= recipe["batch_size"]:
        raise UserError(f"--eval-n must exceed the batch size ({recipe['batch_size']}): "
                        "the reference's first evaluation batch is its untimed warm-up")
    ds = random_dataset(args.n, args.eval_n)
    r = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": args.device.type,
         "device_name": device_name(args.device), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
         "torch": torch.__version__, "batch_size": recipe["batch_size"], "width": recipe["width"], "n": args.n,
         **{k: getattr(args, k) for k in ("steps", "warmup", "data_batches", "eval_n", "compile")},
         "precision": numerics.resolve_precision(args.device, args.precision, log=lambda _: None),  # as numerics
         "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    t0 = time.perf_counter()
    r["project"] = bench_project(args, recipe, ds)
    r["reference"] = bench_reference(args, recipe, ds) if args.reference else None
    r["seconds"], r["loadavg_end"] = round(time.perf_counter() - t0, 1), [round(x, 2) for x in os.getloadavg()]
    for x in filter(None, (r["project"], r["reference"])):
        x["projected_100_epochs_s"] = 100 * (TRAIN_SIZE / x["train_ips"] + TEST_SIZE / x["eval_ips"])
    b = r["reference"]
    r["ratios"] = {} if b is None else {k: r["project"][k] / b[k] for k in ("data_ips", "train_ips", "eval_ips")}
    r["targets"] = judge(target_values(r), r["device"])
    print(report(r), flush=True)
    if args.json:
        write_json(args.json, r)
    return r


if __name__ == "__main__":
    run_cli(main)
