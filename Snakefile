# ResNet-18 on CIFAR-100: train on GPU nodes, analyse on CPU nodes.
#
#   snakemake --cores all                                   # this machine
#   snakemake --profile profiles/slurm                      # a SLURM cluster
#   snakemake --cores 2 --configfile tests/tiny.yaml        # tiny synthetic run, minutes on a laptop
#   snakemake --report report.html                          # every figure, captioned
#
# Each rule lists the code it runs as an input, so editing a script reruns exactly the jobs that
# use it: a plot change never retrains, a training change reruns everything downstream.

import json
import signal
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


# SLURM's warning before a time limit (profiles/slurm: --signal=USR1@...) reaches every process of
# the job step, the snakemake running the job included, which USR1 would kill: ignore it here, so
# that train.py alone handles it (checkpoint, exit non-zero, retried by Snakemake, resumes).
def ignore_signal(signum, frame):
    pass


signal.signal(signal.SIGUSR1, ignore_signal)


# Next to the Snakefile, so that `-d /scratch/run1` still finds the defaults;
# --configfile and --config merge over it key by key.
configfile: Path(workflow.basedir) / "config.yaml"


SCRIPTS = Path(workflow.basedir) / "scripts"
PKG = SCRIPTS / "cifar100"
CAPTIONS = SCRIPTS / "captions"
sys.path.insert(0, str(SCRIPTS))
from cifar100.config import validate  # noqa: E402

# The schema (scripts/cifar100/config.schema.yaml) plus cross-key checks; the error names the key.
validate(config)

DATA = config["data_dir"]
DATASET = [f"{DATA}/cifar-100-python/{name}" for name in ("train", "test", "meta")]
RUN = "results/{recipe}/seed{seed}"
SIZES = config["analysis"]


wildcard_constraints:
    recipe="[A-Za-z0-9_-]+",
    seed=r"\d+",


def script(name):
    return str(SCRIPTS / name)


def modules(*names):
    """Package modules a rule's script imports: inputs, so that editing one reruns the rule."""
    return [str(PKG / n) for n in names]


CORE = ["data.py", "files.py", "exceptions.py"]
MODEL = ["pipeline.py", "model.py", "engine.py", "checkpoint.py"]
ANALYSIS = [*CORE, "metrics.py", "plots.py"]


def recipe_json(wildcards):
    return json.dumps(config["recipes"][wildcards.recipe], sort_keys=True)


def train_flags(wildcards):
    return (
        f"--selection {config['selection']} --val-size {config.get('val_size', 5000)} "
        f"--precision {config.get('precision', 'bf16')} "
        f"--{'' if config.get('deterministic') else 'no-'}deterministic "
        f"--{'' if config.get('compile') else 'no-'}compile"
    )


def download_flags(wildcards):
    if config["dataset"] != "synthetic":
        return "--dataset cifar100"
    s = config.get("synthetic", {})
    flags = {
        "train-size": "train_size",
        "test-size": "test_size",
        "num-classes": "num_classes",
        "num-coarse": "num_coarse",
        "synthetic-seed": "seed",
        "noise": "noise",
    }
    return "--dataset synthetic " + " ".join(
        f"--{f} {s[k]}" for f, k in flags.items() if k in s
    )


def gradcam_outputs():
    maps = ["gradcam_maps.npz"] if SIZES.get("gradcam_save_maps", True) else []
    return ["gradcam_summary.json", *maps]


def run_outputs():
    """Every file one (recipe, seed) run ends with."""
    per_run = [
        "model.pt", "history.csv", "predictions.npz", "metrics.json", "samples.png",
        "training_curves.png", "confusion_matrix.png", "per_class_accuracy.csv",
        "class_extremes.png", "superclass_confusion.png", "confusion_summary.json",
        "errors_gallery.png", "confusion_pairs.csv", "confidence_histogram.png",
        "errors_summary.json", "classification_report.csv", "classification_report.json",
        "classification_report.txt", "reliability_diagram.png", "summary.json",
        "gradcam_correct.png", "gradcam_incorrect.png", *gradcam_outputs(),
    ]  # fmt: skip
    return expand(
        f"{RUN}/{{name}}", recipe=config["runs"], seed=config["seeds"], name=per_run
    )


def seeds_of(pattern):
    """One file per seed of a recipe, e.g. every seed's summary.json."""

    def files(wildcards):
        return expand(pattern, recipe=wildcards.recipe, seed=config["seeds"])

    return files


def data_dir(wildcards, input):
    """data_dir, as the folder above cifar-100-python/ of the dataset inputs."""
    return str(Path(input.data[0]).parents[1])


def download_dir(wildcards, output):
    return str(Path(output.meta).parents[1])


def run_dir(wildcards, output):
    """The folder of a rule's outputs (scripts take a folder and write fixed names into it)."""
    return str(Path(output[0]).parent)


def caption(name):
    return str(CAPTIONS / f"{name}.rst")


report: str(CAPTIONS / "workflow.rst")


# Downloading needs the internet, which compute nodes often lack: always run it where snakemake runs.
localrules:
    all,
    download,


rule all:
    input:
        run_outputs(),
        expand("results/{recipe}/seeds_summary.csv", recipe=config["runs"]),
        expand("results/{recipe}/seeds_per_class.csv", recipe=config["runs"]),
        expand("results/{recipe}/seeds_curves.png", recipe=config["runs"]),
        "results/recipes_summary.csv",
        "results/recipes_comparison.png",


# ancient(): a newer download.py (a fresh clone, a git pull) must not make Snakemake delete
# and re-fetch data that is already there, pre-staged or downloaded.
rule download:
    input:
        script=ancient(script("download.py")),
    output:
        train=DATASET[0],
        test=DATASET[1],
        meta=DATASET[2],
    log:
        "results/logs/download.log",
    conda:
        "envs/train.yaml"
    params:
        data_dir=download_dir,
        flags=download_flags,
    shell:
        "python {input.script} --data-dir {params.data_dir} {params.flags} > {log} 2>&1"


rule train:
    input:
        data=DATASET,
        script=script("train.py"),
        code=modules(*CORE, *MODEL, "config.py"),
    output:
        model=f"{RUN}/model.pt",
        history=f"{RUN}/history.csv",
    log:
        f"{RUN}/logs/train.log",
    benchmark:
        f"{RUN}/benchmarks/train.tsv"
    conda:
        "envs/train.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        data_dir=data_dir,
        out_dir=run_dir,
        recipe=recipe_json,
        flags=train_flags,
    # exec: the signals SLURM sends before a time limit reach python, not an intermediate shell.
    shell:
        "exec python {input.script} --recipe {wildcards.recipe} --recipe-json {params.recipe:q}"
        " --seed {wildcards.seed} --data-dir {params.data_dir} --out-dir {params.out_dir}"
        " {params.flags} > {log} 2>&1"


rule evaluate:
    input:
        data=DATASET,
        model=rules.train.output.model,
        script=script("evaluate.py"),
        code=modules(*CORE, *MODEL),
    output:
        predictions=f"{RUN}/predictions.npz",
        metrics=f"{RUN}/metrics.json",
    log:
        f"{RUN}/logs/evaluate.log",
    benchmark:
        f"{RUN}/benchmarks/evaluate.tsv"
    conda:
        "envs/train.yaml"
    resources:
        gpu=1,
    params:
        data_dir=data_dir,
        out_dir=run_dir,
    shell:
        "python {input.script} --checkpoint {input.model} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} > {log} 2>&1"


rule samples:
    input:
        data=DATASET,
        predictions=rules.evaluate.output.predictions,
        script=script("samples.py"),
        code=modules(*ANALYSIS),
    output:
        figure=report(
            f"{RUN}/samples.png",
            caption=caption("samples"),
            category="evaluation",
            subcategory="{recipe} seed {seed}",
        ),
    log:
        f"{RUN}/logs/samples.log",
    conda:
        "envs/analysis.yaml"
    params:
        data_dir=data_dir,
        n=SIZES["samples"],
    shell:
        "python {input.script} --predictions {input.predictions} --data-dir {params.data_dir}"
        " --n {params.n} --out {output.figure} > {log} 2>&1"


rule curves:
    input:
        history=rules.train.output.history,
        script=script("curves.py"),
        code=modules(*ANALYSIS),
    output:
        figure=report(
            f"{RUN}/training_curves.png",
            caption=caption("training_curves"),
            category="training",
            subcategory="{recipe} seed {seed}",
        ),
    log:
        f"{RUN}/logs/curves.log",
    conda:
        "envs/analysis.yaml"
    shell:
        "python {input.script} --history {input.history} --out {output.figure} > {log} 2>&1"


rule confusion:
    input:
        data=DATASET,
        predictions=rules.evaluate.output.predictions,
        script=script("confusion.py"),
        code=modules(*ANALYSIS),
    output:
        matrix=report(
            f"{RUN}/confusion_matrix.png",
            caption=caption("confusion_matrix"),
            category="evaluation",
            subcategory="{recipe} seed {seed}",
        ),
        per_class=f"{RUN}/per_class_accuracy.csv",
        extremes=report(
            f"{RUN}/class_extremes.png",
            caption=caption("class_extremes"),
            category="evaluation",
            subcategory="{recipe} seed {seed}",
        ),
        superclass=report(
            f"{RUN}/superclass_confusion.png",
            caption=caption("superclass_confusion"),
            category="evaluation",
            subcategory="{recipe} seed {seed}",
        ),
        summary=f"{RUN}/confusion_summary.json",
    log:
        f"{RUN}/logs/confusion.log",
    conda:
        "envs/analysis.yaml"
    params:
        data_dir=data_dir,
        out_dir=run_dir,
    shell:
        "python {input.script} --predictions {input.predictions} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} > {log} 2>&1"


rule errors:
    input:
        data=DATASET,
        predictions=rules.evaluate.output.predictions,
        script=script("errors.py"),
        code=modules(*ANALYSIS),
    output:
        gallery=report(
            f"{RUN}/errors_gallery.png",
            caption=caption("errors_gallery"),
            category="errors",
            subcategory="{recipe} seed {seed}",
        ),
        pairs=f"{RUN}/confusion_pairs.csv",
        histogram=report(
            f"{RUN}/confidence_histogram.png",
            caption=caption("confidence_histogram"),
            category="errors",
            subcategory="{recipe} seed {seed}",
        ),
        summary=f"{RUN}/errors_summary.json",
    log:
        f"{RUN}/logs/errors.log",
    conda:
        "envs/analysis.yaml"
    params:
        data_dir=data_dir,
        out_dir=run_dir,
        gallery=SIZES["gallery_size"],
        pairs=SIZES["top_pairs"],
    shell:
        "python {input.script} --predictions {input.predictions} --data-dir {params.data_dir}"
        " --gallery-size {params.gallery} --top-pairs {params.pairs} --out-dir {params.out_dir} > {log} 2>&1"


rule report:
    input:
        data=DATASET,
        predictions=rules.evaluate.output.predictions,
        metrics=rules.evaluate.output.metrics,
        script=script("report.py"),
        code=modules(*ANALYSIS),
    output:
        csv=f"{RUN}/classification_report.csv",
        json=f"{RUN}/classification_report.json",
        txt=f"{RUN}/classification_report.txt",
        reliability=report(
            f"{RUN}/reliability_diagram.png",
            caption=caption("reliability_diagram"),
            category="evaluation",
            subcategory="{recipe} seed {seed}",
        ),
        summary=f"{RUN}/summary.json",
    log:
        f"{RUN}/logs/report.log",
    conda:
        "envs/analysis.yaml"
    params:
        data_dir=data_dir,
        out_dir=run_dir,
        bins=SIZES["ece_bins"],
    shell:
        "python {input.script} --predictions {input.predictions} --metrics {input.metrics}"
        " --data-dir {params.data_dir} --ece-bins {params.bins} --out-dir {params.out_dir} > {log} 2>&1"


# Grad-CAM runs the model, so it goes to a GPU node with the training environment.
rule gradcam:
    input:
        data=DATASET,
        model=rules.train.output.model,
        predictions=rules.evaluate.output.predictions,
        script=script("gradcam.py"),
        code=modules(*ANALYSIS, *MODEL, "cam.py"),
    output:
        correct=report(
            f"{RUN}/gradcam_correct.png",
            caption=caption("gradcam_correct"),
            category="interpretability",
            subcategory="{recipe} seed {seed}",
        ),
        incorrect=report(
            f"{RUN}/gradcam_incorrect.png",
            caption=caption("gradcam_incorrect"),
            category="interpretability",
            subcategory="{recipe} seed {seed}",
        ),
        extra=[f"{RUN}/{name}" for name in gradcam_outputs()],
    log:
        f"{RUN}/logs/gradcam.log",
    benchmark:
        f"{RUN}/benchmarks/gradcam.tsv"
    conda:
        "envs/train.yaml"
    resources:
        gpu=1,
    params:
        data_dir=data_dir,
        out_dir=run_dir,
        n=SIZES["gradcam_images"],
        layer=SIZES["gradcam_layer"],
        maps="--save-maps" if SIZES.get("gradcam_save_maps", True) else "--no-save-maps",
    shell:
        "python {input.script} --checkpoint {input.model} --predictions {input.predictions}"
        " --data-dir {params.data_dir} --n {params.n} --layer {params.layer} {params.maps}"
        " --out-dir {params.out_dir} > {log} 2>&1"


rule aggregate:
    input:
        summaries=seeds_of(f"{RUN}/summary.json"),
        histories=seeds_of(f"{RUN}/history.csv"),
        per_class=seeds_of(f"{RUN}/per_class_accuracy.csv"),
        script=script("aggregate.py"),
        code=modules(*ANALYSIS, "replicates.py"),
    output:
        summary="results/{recipe}/seeds_summary.csv",
        per_class="results/{recipe}/seeds_per_class.csv",
        curves=report(
            "results/{recipe}/seeds_curves.png",
            caption=caption("seeds_curves"),
            category="replicates",
            subcategory="{recipe}",
        ),
    log:
        "results/logs/aggregate_{recipe}.log",
    conda:
        "envs/analysis.yaml"
    params:
        out_dir=run_dir,
    shell:
        "python {input.script} --summaries {input.summaries} --histories {input.histories}"
        " --per-class {input.per_class} --out-dir {params.out_dir} > {log} 2>&1"


rule compare:
    input:
        summaries=expand("results/{recipe}/seeds_summary.csv", recipe=config["runs"]),
        script=script("compare.py"),
        code=modules(*ANALYSIS, "replicates.py"),
    output:
        table="results/recipes_summary.csv",
        figure=report(
            "results/recipes_comparison.png",
            caption=caption("recipes_comparison"),
            category="replicates",
        ),
    log:
        "results/logs/compare.log",
    conda:
        "envs/analysis.yaml"
    shell:
        "python {input.script} --summaries {input.summaries} --out-table {output.table}"
        " --out-figure {output.figure} > {log} 2>&1"
