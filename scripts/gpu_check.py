#!/usr/bin/env python
"""The Python half of scripts/gpu_check.sh: wheels, the measurements that bench.py does not make, the table.

    python scripts/gpu_check.py prepare --wheels .gpu_wheels        # here: download, then check offline
    python scripts/gpu_check.py install --wheels .gpu_wheels --site /tmp/gpu_check_site
    python scripts/gpu_check.py dataset --data-dir D                # full-size synthetic set
    python scripts/gpu_check.py train --data-dir D --out-dir O --seeds 0 1 --epochs 2 --json O/pack2.json
    python scripts/gpu_check.py save --checkpoint O/seed0/last.pt --json save.json
    python scripts/gpu_check.py table --results results/gpu_check

Only the standard library at the top: ``prepare`` and ``install`` run before snakemake and
jsonschema (which the project's package needs) are importable.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))
from cifar100.cli import run_cli  # noqa: E402  (standard library only, as is cifar100.exceptions)

# What the GPU machine lacks (its python3 holds torch, numpy, pytest, pyyaml, ...). Pinned at
# --prepare to the versions installed here, which the CPU test suite ran with.
MISSING = ["snakemake", "jsonschema"]
# The GPU machine: CPython 3.12 on x86-64 Linux; wheels for any of these platforms install there.
PYTHON_VERSION = "3.12"
PLATFORMS = ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64"]
WHEELS_LIMIT_MB = 40  # the folder travels with the working tree to the GPU machine (64 MiB in all)
FULL = {"train_size": 50_000, "test_size": 10_000, "num_classes": 100, "num_coarse": 20}
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+) ")  # engine.train's one line per epoch


# ---- wheels ---------------------------------------------------------------------------------

def pip(*args, check=True, isolated=True) -> subprocess.CompletedProcess:
    # --isolated: ignore this machine's pip config and PIP_* variables (extra indexes, find-links),
    # so that an offline check sees the wheel folder alone.
    cmd = [sys.executable, "-m", "pip", *(["--isolated"] if isolated else []), *args]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode:
        raise SystemExit(f"gpu_check: {' '.join(cmd[2:5])} ... failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p


def target_args() -> list[str]:
    return ["--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp",
            *[a for plat in PLATFORMS for a in ("--platform", plat)]]


def prepare(wheels: Path) -> None:
    """Download the wheels (building the few that PyPI has as sources only), then resolve offline."""
    from importlib.metadata import version

    wheels.mkdir(exist_ok=True)
    reqs = [f"{name}=={version(name)}" for name in MISSING]
    (wheels / "requirements.txt").write_text("\n".join(reqs) + "\n")
    built = []
    for _ in range(20):  # each round builds one pure-Python wheel that PyPI has as a source only
        p = pip("download", "-d", str(wheels), "--find-links", str(wheels), *target_args(),
                "-r", str(wheels / "requirements.txt"), check=False, isolated=False)
        if p.returncode == 0:
            break
        m = re.search(r"satisfies the requirement (\S+)", p.stderr)
        if not m or m[1] in built:
            raise SystemExit(f"gpu_check: pip download failed:\n{p.stderr[-3000:]}")
        built.append(m[1])
        print(f"no wheel of {m[1]} on the index: building it here", flush=True)
        pip("wheel", "--no-deps", "-w", str(wheels), m[1], isolated=False)
    else:
        raise SystemExit("gpu_check: pip download did not converge")
    stray = [f.name for f in wheels.iterdir() if not f.name.endswith(".whl") and f.name != "requirements.txt"]
    if stray:
        raise SystemExit(f"gpu_check: {wheels} holds non-wheels: {stray}")
    check_offline(wheels)


def check_offline(wheels: Path) -> list[str]:
    """Resolve the requirements against the folder alone, for the GPU machine's Python and platform."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        pip("install", "--dry-run", "--ignore-installed", "--no-index", "--find-links", str(wheels),
            "--target", str(Path(tmp) / "site"), "--report", str(report), *target_args(),
            "-r", str(wheels / "requirements.txt"))
        names = sorted(item["metadata"]["name"] for item in json.loads(report.read_text())["install"])
    size = sum(f.stat().st_size for f in wheels.iterdir()) / 2**20
    print(f"{wheels}: {len(names)} packages resolve offline for CPython {PYTHON_VERSION}, {size:.1f} MB")
    if size > WHEELS_LIMIT_MB:
        raise SystemExit(f"gpu_check: {wheels} is {size:.1f} MB, over the {WHEELS_LIMIT_MB} MB it may take")
    return names


def normalise(name: str) -> str:
    """A distribution's name as wheel files spell it (PEP 503, with underscores)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def install(wheels: Path, site: Path) -> None:
    """Install what the running Python lacks into ``site`` (for PYTHONPATH), never touching its packages.

    pip first resolves against the installed packages (dry run); only what it would add or
    upgrade goes to ``site``, one wheel at a time without dependencies. An old pip without
    --report falls back to installing the whole set there.
    """
    reqs = ["-r", str(wheels / "requirements.txt")]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        p = pip("install", "--dry-run", "--no-index", "--find-links", str(wheels), "--report", str(report),
                *reqs, check=False)
        if p.returncode == 0:
            names = {normalise(item["metadata"]["name"]) for item in json.loads(report.read_text())["install"]}
            files = [str(f) for f in sorted(wheels.glob("*.whl")) if normalise(f.name.split("-")[0]) in names]
            if len(files) != len(names):
                raise SystemExit(f"gpu_check: pip resolved {sorted(names)} but {wheels} holds wheels of "
                                 f"{sorted(normalise(Path(f).name.split('-')[0]) for f in files)}")
            if files:
                pip("install", "--no-index", "--no-deps", "--no-compile", "--target", str(site), *files)
            print(f"installed into {site}: {', '.join(sorted(names)) or 'nothing (all present)'}")
            return
    pip("install", "--no-index", "--find-links", str(wheels), "--no-compile", "--target", str(site), *reqs)
    print(f"installed the whole set into {site} (pip lacks --report)")


# ---- measurements ---------------------------------------------------------------------------

def dataset(data_dir: Path) -> None:
    from cifar100 import data

    t0 = time.perf_counter()
    data.write_synthetic(data_dir, seed=0, **FULL)
    print(f"wrote {FULL} to {data_dir} in {time.perf_counter() - t0:.1f} s")


def baseline_recipe(epochs: int) -> dict:
    from cifar100 import config

    return {**config.load(config.REPO_CONFIG)["recipes"]["baseline"], "epochs": epochs}


class Lines:
    """A child's output, each line stamped with time.perf_counter() as it arrives."""

    def __init__(self, proc, log_path: Path):
        self.proc, self.lines = proc, []
        self.thread = threading.Thread(target=self._read, args=(log_path,), daemon=True)
        self.thread.start()

    def _read(self, log_path):
        with open(log_path, "w") as log:
            for line in self.proc.stdout:
                self.lines.append((time.perf_counter(), line.rstrip("\n")))
                log.write(line)
                log.flush()


def epoch_times(lines, start: float) -> dict:
    """Wall-clock epoch times from the epoch lines: the first from process start (start-up, data
    loading, cuDNN autotuning included), the others from line to line (training, evaluation, the
    last.pt and history.csv writes)."""
    stamps = [t for t, line in lines if EPOCH_LINE.match(line)]
    if not stamps:
        return {"first_epoch_s": None, "epoch_s": [], "steady_epoch_s": None}
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"first_epoch_s": stamps[0] - start, "epoch_s": gaps,
            "steady_epoch_s": statistics.median(gaps) if gaps else None}


def training_images(lines) -> int | None:
    """Images per epoch, from train.py's first line ("training ... on cuda: 50000 images, ...")."""
    for _, line in lines:
        m = re.search(r": (\d+) images, \d+ classes", line)
        if m:
            return int(m[1])
    return None


def read_history(path: Path) -> list[dict]:
    import csv

    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def train(data_dir: Path, out_dir: Path, seeds: list[int], epochs: int, log_dir: Path, device="cuda",
          **recipe_changes) -> dict:
    """Run one train.py per seed, all at once on the one GPU, and time their epochs."""
    recipe = {**baseline_recipe(epochs), **{k: v for k, v in recipe_changes.items() if v is not None}}
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    runs, t0 = [], time.perf_counter()
    for seed in seeds:
        run_dir = out_dir / f"seed{seed}"
        shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, never a resume
        cmd = [sys.executable, str(SCRIPTS / "train.py"), "--recipe-json", json.dumps(recipe), "--seed", str(seed),
               "--data-dir", str(data_dir), "--model", str(run_dir / "model.pt"), "--device", device,
               "--precision", "bf16", "--no-deterministic", "--no-compile", "--selection", "last"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        runs.append((seed, run_dir, proc, Lines(proc, log_dir / f"seed{seed}.log")))
    out = {"seeds": seeds, "epochs": epochs, "recipe": recipe, "device": device, "runs": []}
    for seed, run_dir, proc, lines in runs:
        rc = proc.wait()
        lines.thread.join()
        history = read_history(run_dir / "history.csv")
        last = run_dir / "last.pt"
        train_s = [float(row["seconds"]) for row in history]
        out["runs"].append({
            "seed": seed, "returncode": rc, **epoch_times(lines.lines, t0), "train_s": train_s,
            "images_per_s": [float(row["images_per_s"]) for row in history],
            "images": training_images(lines.lines),
            "test_acc": [float(row["test_acc"]) for row in history],
            "last_pt_bytes": last.stat().st_size if last.exists() else None,
            "tail": [line for _, line in lines.lines[-3:]] if rc else []})
    return summarise_runs(out)


def summarise_runs(out: dict) -> dict:
    """Aggregate throughput of the concurrent runs, from their steady (second and later) epochs."""
    done = [r for r in out["runs"] if r["returncode"] == 0 and r["steady_epoch_s"]]
    out["ok"] = len(done) == len(out["runs"])
    if done:
        out["aggregate_ips_wall"] = sum(r["images"] / r["steady_epoch_s"] for r in done)  # epochs end to end
        out["aggregate_ips_train"] = sum(statistics.median(r["images_per_s"][1:] or r["images_per_s"]) for r in done)
        r = done[0]
        out["steady_epoch_s"] = statistics.median(x["steady_epoch_s"] for x in done)
        out["first_epoch_s"] = statistics.median(x["first_epoch_s"] for x in done)
        out["train_part_s"] = statistics.median(statistics.median(x["train_s"][1:] or x["train_s"]) for x in done)
        out["projected_100_epochs_s"] = out["first_epoch_s"] + 99 * out["steady_epoch_s"]
        out["last_pt_bytes"] = r["last_pt_bytes"]
    return out


def time_save(path: Path, repeats: int) -> dict:
    """Seconds to write a real last.pt as training does (checkpoint.save: temp file, fsync, rename),
    its tensors on the GPU as in training (so the device-to-host copy counts)."""
    import torch

    from cifar100 import checkpoint

    device = "cuda" if torch.cuda.is_available() else "cpu"
    state = checkpoint.load(path, map_location=device)
    state.pop("format", None)
    target = path.with_name("save_timing.pt")
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        checkpoint.save(target, state)
        seconds.append(time.perf_counter() - t0)
    size = target.stat().st_size
    target.unlink()
    return {"checkpoint": str(path), "bytes": size, "repeats": repeats, "seconds": seconds,
            "median_s": statistics.median(seconds), "device": device}


# ---- the table --------------------------------------------------------------------------------

def read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def fmt(value, spec="{:,.0f}", missing="-") -> str:
    return missing if value is None else spec.format(value)


def pytest_result(results: Path) -> str:
    try:
        suite = ET.parse(results / "pytest.xml").getroot()
    except (OSError, ET.ParseError):
        return "no report"
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    bad = [c.get("name") for c in suite.iter("testcase")
           if c.find("failure") is not None or c.find("error") is not None]
    text = f"{passed} passed, {n['failures']} failed, {n['errors']} errors, {n['skipped']} skipped"
    return text + (f" ({', '.join(bad)})" if bad else "")


def stages(results: Path) -> list[dict]:
    rows = []
    path = results / "stages.tsv"
    for line in path.read_text().splitlines() if path.exists() else []:
        name, budget, rc, ms = line.split("\t")
        status = {"0": "ok", "124": "TIMEOUT", "137": "KILLED", "skipped": "skipped (no time left)"}.get(rc, f"rc {rc}")
        rows.append({"stage": name, "budget_s": int(budget), "rc": rc, "status": status,
                     "seconds": int(ms) / 1000 if ms.isdigit() else None})
    return rows


BENCHES = [("bf16", "bench_bf16"), ("fp32", "bench_fp32"), ("bf16 + compile", "bench_bf16_compile"),
           ("fp32 + compile", "bench_fp32_compile")]


def table(results: Path) -> tuple[str, dict]:
    """The report: stages, bench figures, full-size training, packing, save cost, targets."""
    summary = {"stages": stages(results), "pytest": pytest_result(results)}
    env = read(results / "environment.json") or {}
    lines = [f"GPU check: {env.get('gpu', '?')}, torch {env.get('torch', '?')}, CUDA {env.get('cuda', '?')}, "
             f"python {env.get('python', '?')}, {env.get('date', '')}; results in {results}", "",
             f"{'stage':24s}{'budget':>8s}{'took':>8s}  result"]
    for s in summary["stages"]:
        result = summary["pytest"] if s["stage"] == "pytest" and s["rc"] in ("0", "1") else s["status"]
        lines.append(f"{s['stage']:24s}{s['budget_s']:>7d}s{fmt(s['seconds'], '{:.0f}s'):>8s}  {result}")

    lines += ["", "bench.py --device cuda (batch 128, width 64, steady state; "
              "memory in MB, process = reserved + context)",
              f"{'':18s}{'train img/s':>12s}{'eval img/s':>12s}{'x notebook':>11s}{'allocated':>11s}"
              f"{'reserved':>10s}{'context':>9s}{'process':>9s}{'100 ep (s)':>11s}"]
    benches, reference = {}, None
    for label, name in BENCHES:
        b = read(results / f"{name}.json")
        if b is None:
            lines.append(f"{label:18s}  (no result)")
            continue
        a = b["project"]
        reference = reference or b.get("reference")
        benches[name] = {"train_ips": a["train_ips"], "eval_ips": a["eval_ips"],
                         "train_ratio": b["ratios"].get("train_ips"), **{k: a.get(k) for k in (
                             "allocated_peak_bytes", "reserved_peak_bytes", "context_bytes", "process_peak_bytes",
                             "projected_100_epochs_s", "warmup_s")}}
        m = benches[name]
        lines.append(f"{label:18s}{a['train_ips']:>12,.0f}{a['eval_ips']:>12,.0f}"
                     f"{fmt(m['train_ratio'], '{:.1f}x'):>11s}"
                     + "".join(f"{fmt(m[k] and m[k] / 1e6):>{w}s}" for k, w in (
                         ("allocated_peak_bytes", 11), ("reserved_peak_bytes", 10), ("context_bytes", 9),
                         ("process_peak_bytes", 9)))
                     + f"{a['projected_100_epochs_s']:>11,.0f}")
    if reference:
        mb = {k: reference.get(k) and reference[k] / 1e6 for k in ("allocated_peak_bytes", "reserved_peak_bytes")}
        lines.append(f"{'notebook (fp32)':18s}{reference['train_ips']:>12,.0f}{reference['eval_ips']:>12,.0f}"
                     f"{'1.0x':>11s}{fmt(mb['allocated_peak_bytes']):>11s}{fmt(mb['reserved_peak_bytes']):>10s}")
    summary["bench"] = {**benches, "notebook": reference}

    full = read(results / "train.json")
    summary["train"] = full
    lines.append("")
    if full and full.get("steady_epoch_s"):
        eval_save = full["steady_epoch_s"] - full["train_part_s"]
        lines += [f"train.py, full-size synthetic set (50,000 / 10,000 images, 100 classes, width 64, batch 128, "
                  f"bf16, {full['epochs']} epochs):",
                  f"  first epoch {full['first_epoch_s']:.1f} s (start-up and data loading included), then "
                  f"{full['steady_epoch_s']:.2f} s per epoch = {full['train_part_s']:.2f} s training + "
                  f"{eval_save:.2f} s evaluation, last.pt and history writes",
                  f"  projected 100 epochs: {full['projected_100_epochs_s']:.0f} s = "
                  f"{full['projected_100_epochs_s'] / 60:.1f} min; test accuracy by epoch "
                  f"{[round(a, 3) for a in full['runs'][0]['test_acc']]}"]
    else:
        lines.append("train.py, full-size synthetic set: no result")

    save = read(results / "save.json")
    summary["save"] = save
    if save:
        share = f" = {100 * save['median_s'] / full['steady_epoch_s']:.1f}% of an epoch" if full and full.get(
            "steady_epoch_s") else ""
        lines.append(f"last.pt write: {save['bytes'] / 1e6:.0f} MB in {save['median_s']:.2f} s "
                     f"(median of {save['repeats']}, temp file + fsync + rename){share}")
    else:
        lines.append("last.pt write: no result")

    lines += ["", "trainings at once on the one GPU (train.py as above; steady epochs):",
              f"{'runs':>6s}{'img/s, epochs end to end':>26s}{'img/s, training only':>22s}{'vs one run':>12s}"]
    packs = {"1": full, "2": read(results / "pack2.json"), "4": read(results / "pack4.json")}
    one = full.get("aggregate_ips_wall") if full else None
    for n, p in packs.items():
        if p and p.get("aggregate_ips_wall"):
            lines.append(f"{n:>6s}{p['aggregate_ips_wall']:>26,.0f}{p['aggregate_ips_train']:>22,.0f}"
                         f"{fmt(one and p['aggregate_ips_wall'] / one, '{:.2f}x'):>12s}")
        else:
            lines.append(f"{n:>6s}{'no result':>26s}")
    summary["packing"] = {n: p and {k: p.get(k) for k in ("aggregate_ips_wall", "aggregate_ips_train", "ok")}
                          for n, p in packs.items()}

    from bench import GPU_TARGETS as TARGETS  # one set of targets: bench.py's (imported here, it needs torch)

    b = benches.get("bench_bf16", {})
    checks = {"train_ratio": (b.get("train_ratio"), ">="), "train_ips": (b.get("train_ips"), ">="),
              "projected_100_epochs_s": (full and full.get("projected_100_epochs_s"), "<"),
              "peak_memory_gb": (b.get("process_peak_bytes") and b["process_peak_bytes"] / 1e9, "<")}
    lines += ["", "targets (H100-class, bf16 without compile; the 100-epoch time from the real train.py run):"]
    summary["targets"] = {}
    for key, (value, op) in checks.items():
        ok = None if value is None else (value >= TARGETS[key] if op == ">=" else value < TARGETS[key])
        summary["targets"][key] = {"value": value, "target": f"{op} {TARGETS[key]:g}", "pass": ok}
        verdict = {None: "no result", True: "PASS", False: "FAIL"}[ok]
        lines.append(f"  {key:24s}{fmt(value, '{:,.2f}'):>12s}  {op} {TARGETS[key]:<8g}  {verdict}")
    return "\n".join(lines), summary


# ---- command line ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("prepare", "install"):
        s = sub.add_parser(name)
        s.add_argument("--wheels", type=Path, required=True, help="the wheel folder (required)")
        if name == "install":
            s.add_argument("--site", type=Path, required=True, help="folder to install into, for PYTHONPATH (required)")
    s = sub.add_parser("dataset")
    s.add_argument("--data-dir", type=Path, required=True, help="where cifar-100-python/ goes (required)")
    s = sub.add_parser("train")
    s.add_argument("--data-dir", type=Path, required=True, help="the full-size synthetic set (required)")
    s.add_argument("--out-dir", type=Path, required=True, help="one run folder per seed goes here (required)")
    s.add_argument("--seeds", type=int, nargs="+", default=[0], help="one training per seed, at once (default: 0)")
    s.add_argument("--epochs", type=int, default=3, help="epochs of each (default: %(default)s)")
    s.add_argument("--json", type=Path, required=True, help="where the timings go (required)")
    s.add_argument("--logs", type=Path, required=True,
                   help="each training's output goes here as seed<N>.log (required)")
    s.add_argument("--device", default="cuda", help="cuda or cpu (default: %(default)s)")
    s.add_argument("--width", type=int, help="model width (default: the baseline recipe's)")
    s.add_argument("--batch-size", type=int, help="batch size (default: the baseline recipe's)")
    s = sub.add_parser("save")
    s.add_argument("--checkpoint", type=Path, required=True, help="a last.pt written by training (required)")
    s.add_argument("--repeats", type=int, default=5, help="timed writes (default: %(default)s)")
    s.add_argument("--json", type=Path, required=True, help="where the timings go (required)")
    s = sub.add_parser("table")
    s.add_argument("--results", type=Path, required=True, help="the folder gpu_check.sh wrote (required)")
    return p


def main(argv=None):
    a = build_parser().parse_args(argv)
    if a.command in ("train", "save", "table"):  # the package's files module needs no third-party import
        from cifar100.files import write_json, write_text
    if a.command == "prepare":
        prepare(a.wheels)
    elif a.command == "install":
        install(a.wheels, a.site)
    elif a.command == "dataset":
        dataset(a.data_dir)
    elif a.command == "train":
        out = train(a.data_dir, a.out_dir, a.seeds, a.epochs, a.logs, a.device, width=a.width,
                    batch_size=a.batch_size)
        write_json(a.json, out)
        print(json.dumps({k: v for k, v in out.items() if k not in ("runs", "recipe")}, indent=1))
        if not out["ok"]:
            raise SystemExit(f"gpu_check: a training failed: {[r['tail'] for r in out['runs'] if r['returncode']]}")
    elif a.command == "save":
        out = time_save(a.checkpoint, a.repeats)
        write_json(a.json, out)
        print(f"{out['bytes'] / 1e6:.0f} MB in {out['median_s']:.3f} s (median of {out['repeats']})")
    elif a.command == "table":
        text, summary = table(a.results)
        print(text)
        write_text(a.results / "gpu_check.txt", text + "\n")
        write_json(a.results / "gpu_check.json", summary)


if __name__ == "__main__":
    run_cli(main)
