# ResNet-18 on CIFAR-100: train on GPU nodes, analyse on CPU nodes.
#
#   snakemake --cores all                                   # this machine
#   snakemake --profile profiles/slurm                      # a SLURM cluster
#   snakemake --cores 2 --configfile tests/tiny.yaml        # tiny synthetic run, minutes on a laptop
#   snakemake --report report.html                          # every figure and table, captioned
#
# Each rule is the contract between Snakemake and its script: every path the script reads or writes
# comes in as a quoted argument. The rules that run the model (train, evaluate, gradcam: GPU jobs)
# write arrays only and depend on the declared model code (cifar100/deps.py MODEL_CODE, the same list
# that keys a finished training); every figure and statistic is a CPU rule whose code inputs are
# the modules its script imports. So a plot or statistic edit never queues a GPU job.

import json
import signal
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


# train.py stops itself ahead of its Slurm time limit (cifar100/deadline.py). A USR1 sent to the
# whole job step instead (`scancel --signal=USR1`, or a site's `--signal=USR1@N`) reaches the
# snakemake running the job too, which it would kill: ignore it here, so that train.py alone
# handles it (checkpoint, exit non-zero, retried by Snakemake, resumes).
def ignore_signal(signum, frame):
    pass


signal.signal(signal.SIGUSR1, ignore_signal)


# Next to the Snakefile, so that `-d /scratch/run1` still finds it; --configfile and --config
# merge over it key by key.
configfile: Path(workflow.basedir) / "config.yaml"


SCRIPTS = Path(workflow.basedir) / "scripts"
CAPTIONS = SCRIPTS / "captions"
sys.path.insert(0, str(SCRIPTS))
from cifar100 import busy, config as cfg, deps, plan  # noqa: E402

# Another snakemake running in this folder: say so, rather than Snakemake's IncompleteFilesException
# advising --rerun-incomplete (its files are being written, not broken). Jobs it submits skip this.
if not (workflow.remote_exec or workflow.subprocess_exec):
    busy.refuse_if_busy(Path.cwd(), sys.argv)

# The schema (scripts/cifar100/config.schema.yaml) fills in defaults and checks every key and
# combination, and no string, folder or config file name may hold shell syntax: before any job
# starts; the error names the key.
cfg.check_workflow_config(config, Path.cwd(), workflow.basedir, workflow.configfiles)

SIZES = config["analysis"]


wildcard_constraints:
    recipe="[A-Za-z0-9_-]+",
    seed=r"\d+",


# ---- the dataset: read where it is, never an output (Snakemake never deletes what it did not make).
# DATA_VERSION names what it holds (a parameter of train: new data retrains); results of other data
# than the official CIFAR-100 go to results/<data version>/, so no run ever overwrites another's.
DATA_DIR = plan.data_dir(config)
DATA_VERSION = plan.data_version(config, DATA_DIR)
DATASET_NAME = Path(DATA_DIR).name if config["dataset"] == "synthetic" else "cifar100"
MANIFEST = f"results/datasets/{DATASET_NAME}/manifest.json"
RESULTS = plan.results_root(DATA_VERSION)
RUN = f"{RESULTS}/{{recipe}}/seed{{seed}}"
RECIPE = f"{RESULTS}/{{recipe}}"


def script(name):
    return str(SCRIPTS / name)


def code(name):
    """A CPU rule's code: the package modules scripts/<name> imports, directly or indirectly."""
    return deps.package_modules(SCRIPTS / name, SCRIPTS / "cifar100")


PER_RUN = "{recipe} seed {seed}"
PER_RECIPE = "{recipe}"


def in_report(path, category, subcategory=None):
    """A file shown in `snakemake --report`, captioned by scripts/captions/<its stem>.rst."""
    return report(
        path,
        caption=str(CAPTIONS / f"{Path(path).stem}.rst"),
        category=category,
        subcategory=subcategory,
    )


def seeds_of(pattern):
    """One file per seed of a recipe, e.g. every seed's summary.json."""

    def files(wildcards):
        return expand(pattern, recipe=wildcards.recipe, seed=config["seeds"])

    return files


def recipe_json(wildcards):
    return json.dumps(config["recipes"][wildcards.recipe], sort_keys=True)


def flag(name, on):
    return f"--{name}" if on else f"--no-{name}"


def checkpoint_margin(wildcards, resources):
    """train.py's --checkpoint-margin from the profile's train resource checkpoint_margin_s, if set."""
    margin = resources.get("checkpoint_margin_s")
    return [] if margin is None else ["--checkpoint-margin", int(margin)]


report: str(CAPTIONS / "workflow.rst")


# Downloading needs the internet, which compute nodes often lack: always run it where snakemake runs.
localrules:
    all,
    dataset,


# The manifest is what Snakemake owns of this step. Rules take it as ancient(): recreating it
# never retrains; DATA_VERSION (a parameter of train) reruns training when the data changes.
rule dataset:
    input:
        script=ancient(script("download.py")),
    output:
        manifest=MANIFEST,
    log:
        "results/logs/dataset.log",
    conda:
        "envs/data.yaml"
    params:
        data_dir=config["data_dir"],
        dataset=config["dataset"],
        synthetic=json.dumps(config["synthetic"], sort_keys=True),
    shell:
        "python {input.script:q} --data-dir {params.data_dir:q} --dataset {params.dataset:q}"
        " --synthetic {params.synthetic:q} --manifest {output.manifest:q} > {log:q} 2>&1"


# model.pt is update(): Snakemake leaves it in place for train.py, which keeps it when it already
# holds this very run, finished (same fingerprint: data, settings, model code) even if last.pt
# was deleted, and puts it back if the job fails.
rule train:
    input:
        dataset=ancient(MANIFEST),
        script=script("train.py"),
        code=deps.model_code(),
    output:
        model=update(f"{RUN}/model.pt"),
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
        data_dir=DATA_DIR,
        data_version=DATA_VERSION,
        recipe=recipe_json,
        selection=config["selection"],
        val_size=plan.val_size_args(config),
        precision=config["precision"],
        deterministic=flag("deterministic", config["deterministic"]),
        compile=flag("compile", config["compile"]),
        margin=checkpoint_margin,
    # exec: the signals SLURM sends before a time limit reach python, not an intermediate shell.
    shell:
        "exec python {input.script:q} --recipe {wildcards.recipe:q} --recipe-json {params.recipe:q}"
        " --seed {wildcards.seed:q} --data-dir {params.data_dir:q} --model {output.model:q}"
        " --history {output.history:q} --selection {params.selection:q} {params.val_size:q}"
        " --precision {params.precision:q} {params.deterministic:q} {params.compile:q}"
        " --threads {threads:q} {params.margin:q} > {log:q} 2>&1"


rule evaluate:
    input:
        dataset=ancient(MANIFEST),
        checkpoint=rules.train.output.model,
        script=script("evaluate.py"),
        code=deps.model_code(),
    output:
        predictions=f"{RUN}/predictions.npz",
        metrics=f"{RUN}/metrics.json",
    log:
        f"{RUN}/logs/evaluate.log",
    benchmark:
        f"{RUN}/benchmarks/evaluate.tsv"
    conda:
        "envs/train.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        data_dir=DATA_DIR,
    shell:
        "python {input.script:q} --checkpoint {input.checkpoint:q} --data-dir {params.data_dir:q}"
        " --predictions {output.predictions:q} --metrics {output.metrics:q} > {log:q} 2>&1"


rule samples:
    input:
        dataset=ancient(MANIFEST),
        predictions=rules.evaluate.output.predictions,
        script=script("samples.py"),
        code=code("samples.py"),
    output:
        figure=in_report(f"{RUN}/samples.png", "evaluation", PER_RUN),
    log:
        f"{RUN}/logs/samples.log",
    conda:
        "envs/analysis.yaml"
    params:
        data_dir=DATA_DIR,
        n=SIZES["samples"],
    shell:
        "python {input.script:q} --predictions {input.predictions:q} --data-dir {params.data_dir:q}"
        " --n {params.n:q} --figure {output.figure:q} > {log:q} 2>&1"


rule curves:
    input:
        history=rules.train.output.history,
        metrics=rules.evaluate.output.metrics,
        script=script("curves.py"),
        code=code("curves.py"),
    output:
        figure=in_report(f"{RUN}/training_curves.png", "training", PER_RUN),
    log:
        f"{RUN}/logs/curves.log",
    conda:
        "envs/analysis.yaml"
    shell:
        "python {input.script:q} --history {input.history:q} --metrics {input.metrics:q}"
        " --figure {output.figure:q} > {log:q} 2>&1"


rule confusion:
    input:
        dataset=ancient(MANIFEST),
        predictions=rules.evaluate.output.predictions,
        script=script("confusion.py"),
        code=code("confusion.py"),
    output:
        matrix=in_report(f"{RUN}/confusion_matrix.png", "evaluation", PER_RUN),
        matrix_vector=in_report(f"{RUN}/confusion_matrix.svg", "evaluation", PER_RUN),
        per_class=f"{RUN}/per_class_accuracy.csv",
        class_extremes=in_report(f"{RUN}/class_extremes.png", "evaluation", PER_RUN),
        superclass=in_report(f"{RUN}/superclass_confusion.png", "evaluation", PER_RUN),
        summary=f"{RUN}/confusion_summary.json",
    log:
        f"{RUN}/logs/confusion.log",
    conda:
        "envs/analysis.yaml"
    params:
        data_dir=DATA_DIR,
    shell:
        "python {input.script:q} --predictions {input.predictions:q} --data-dir {params.data_dir:q}"
        " --matrix {output.matrix:q} --matrix-vector {output.matrix_vector:q} --per-class {output.per_class:q}"
        " --class-extremes {output.class_extremes:q} --superclass {output.superclass:q}"
        " --summary {output.summary:q} > {log:q} 2>&1"


rule errors:
    input:
        dataset=ancient(MANIFEST),
        predictions=rules.evaluate.output.predictions,
        script=script("errors.py"),
        code=code("errors.py"),
    output:
        gallery=in_report(f"{RUN}/errors_gallery.png", "errors", PER_RUN),
        pairs=f"{RUN}/confusion_pairs.csv",
        histogram=in_report(f"{RUN}/confidence_histogram.png", "errors", PER_RUN),
        summary=f"{RUN}/errors_summary.json",
    log:
        f"{RUN}/logs/errors.log",
    conda:
        "envs/analysis.yaml"
    params:
        data_dir=DATA_DIR,
        gallery_size=SIZES["gallery_size"],
        top_pairs=SIZES["top_pairs"],
    shell:
        "python {input.script:q} --predictions {input.predictions:q} --data-dir {params.data_dir:q}"
        " --gallery-size {params.gallery_size:q} --top-pairs {params.top_pairs:q}"
        " --gallery {output.gallery:q} --pairs {output.pairs:q} --histogram {output.histogram:q}"
        " --summary {output.summary:q} > {log:q} 2>&1"


rule report:
    input:
        dataset=ancient(MANIFEST),
        predictions=rules.evaluate.output.predictions,
        metrics=rules.evaluate.output.metrics,
        script=script("report.py"),
        code=code("report.py"),
    output:
        report_csv=in_report(f"{RUN}/classification_report.csv", "tables", PER_RUN),
        report_json=f"{RUN}/classification_report.json",
        report_txt=f"{RUN}/classification_report.txt",
        reliability=in_report(f"{RUN}/reliability_diagram.png", "evaluation", PER_RUN),
        summary=f"{RUN}/summary.json",
    log:
        f"{RUN}/logs/report.log",
    conda:
        "envs/analysis.yaml"
    params:
        data_dir=DATA_DIR,
        ece_bins=SIZES["ece_bins"],
    shell:
        "python {input.script:q} --predictions {input.predictions:q} --metrics {input.metrics:q}"
        " --data-dir {params.data_dir:q} --ece-bins {params.ece_bins:q}"
        " --report-csv {output.report_csv:q} --report-json {output.report_json:q}"
        " --report-txt {output.report_txt:q} --reliability {output.reliability:q}"
        " --summary {output.summary:q} > {log:q} 2>&1"


# Grad-CAM runs the model, so its maps are a GPU job in the training environment; the figures and
# the sanity check's statistics are drawn from them on a CPU node (gradcam_figures).
rule gradcam:
    input:
        dataset=ancient(MANIFEST),
        checkpoint=rules.train.output.model,
        predictions=rules.evaluate.output.predictions,
        script=script("gradcam.py"),
        code=deps.model_code(deps.GRADCAM_CODE),
    output:
        maps=f"{RUN}/gradcam_maps.npz",
    log:
        f"{RUN}/logs/gradcam.log",
    benchmark:
        f"{RUN}/benchmarks/gradcam.tsv"
    conda:
        "envs/train.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        data_dir=DATA_DIR,
        n=SIZES["gradcam_images"],
        layer=SIZES["gradcam_layer"],
    shell:
        "python {input.script:q} --checkpoint {input.checkpoint:q} --predictions {input.predictions:q}"
        " --data-dir {params.data_dir:q} --n {params.n:q} --layer {params.layer:q}"
        " --maps {output.maps:q} > {log:q} 2>&1"


rule gradcam_figures:
    input:
        dataset=ancient(MANIFEST),
        maps=rules.gradcam.output.maps,
        script=script("gradcam_figures.py"),
        code=code("gradcam_figures.py"),
    output:
        correct=in_report(f"{RUN}/gradcam_correct.png", "interpretability", PER_RUN),
        incorrect=in_report(f"{RUN}/gradcam_incorrect.png", "interpretability", PER_RUN),
        summary=f"{RUN}/gradcam_summary.json",
    log:
        f"{RUN}/logs/gradcam_figures.log",
    conda:
        "envs/analysis.yaml"
    params:
        data_dir=DATA_DIR,
    shell:
        "python {input.script:q} --maps {input.maps:q} --data-dir {params.data_dir:q}"
        " --correct {output.correct:q} --incorrect {output.incorrect:q}"
        " --summary {output.summary:q} > {log:q} 2>&1"


rule aggregate:
    input:
        summaries=seeds_of(f"{RUN}/summary.json"),
        histories=seeds_of(f"{RUN}/history.csv"),
        per_class=seeds_of(f"{RUN}/per_class_accuracy.csv"),
        script=script("aggregate.py"),
        code=code("aggregate.py"),
    output:
        seeds_summary=in_report(f"{RECIPE}/seeds_summary.csv", "tables", PER_RECIPE),
        seeds_per_class=f"{RECIPE}/seeds_per_class.csv",
        curves=in_report(f"{RECIPE}/seeds_curves.png", "replicates", PER_RECIPE),
    log:
        f"{RECIPE}/logs/aggregate.log",
    conda:
        "envs/analysis.yaml"
    shell:
        "python {input.script:q} --summaries {input.summaries:q} --histories {input.histories:q}"
        " --per-class {input.per_class:q} --seeds-summary {output.seeds_summary:q}"
        " --seeds-per-class {output.seeds_per_class:q} --curves {output.curves:q} > {log:q} 2>&1"


rule compare:
    input:
        summaries=expand(rules.aggregate.output.seeds_summary, recipe=config["runs"]),
        # seeds_study's outputs (defined below): mean churn and the ensemble's gain per recipe
        churn=expand(f"{RECIPE}/churn.csv", recipe=config["runs"]),
        ensemble=expand(f"{RECIPE}/ensemble.csv", recipe=config["runs"]),
        script=script("compare.py"),
        code=code("compare.py"),
    output:
        table=in_report(f"{RESULTS}/recipes_summary.csv", "tables"),
        figure=in_report(f"{RESULTS}/recipes_comparison.png", "replicates"),
    log:
        f"{RESULTS}/logs/compare.log",
    conda:
        "envs/analysis.yaml"
    shell:
        "python {input.script:q} --summaries {input.summaries:q} --churn {input.churn:q}"
        " --ensemble {input.ensemble:q} --table {output.table:q}"
        " --figure {output.figure:q} > {log:q} 2>&1"


# ---- the reproducibility study: CPU analysis of files every run already wrote, never retraining
def study_figure(path, shown):
    """A study figure joins the report only when it has something to show (one recipe: no pair
    to compare, no family of vary variants; the figure would only say so)."""
    return in_report(path, "reproducibility") if shown else path


def every_summary():
    return expand(
        rules.report.output.summary, recipe=config["runs"], seed=config["seeds"]
    )


rule seeds_study:
    input:
        dataset=ancient(MANIFEST),
        predictions=seeds_of(rules.evaluate.output.predictions),
        histories=seeds_of(rules.train.output.history),
        script=script("seeds_study.py"),
        code=code("seeds_study.py"),
    output:
        churn=f"{RECIPE}/churn.csv",
        churn_per_class=f"{RECIPE}/churn_per_class.csv",
        ensemble=f"{RECIPE}/ensemble.csv",
        test_set_noise=f"{RECIPE}/test_set_noise.csv",
        selection_optimism=f"{RECIPE}/selection_optimism.csv",
        figure=in_report(f"{RECIPE}/seeds_agreement.png", "reproducibility", PER_RECIPE),
    log:
        f"{RECIPE}/logs/seeds_study.log",
    conda:
        "envs/analysis.yaml"
    params:
        data_dir=DATA_DIR,
        seeds=config["seeds"],
        ece_bins=SIZES["ece_bins"],
    shell:
        "python {input.script:q} --recipe {wildcards.recipe:q} --predictions {input.predictions:q}"
        " --histories {input.histories:q} --seeds {params.seeds:q} --data-dir {params.data_dir:q}"
        " --ece-bins {params.ece_bins:q} --churn {output.churn:q} --churn-per-class {output.churn_per_class:q}"
        " --ensemble {output.ensemble:q} --test-set-noise {output.test_set_noise:q}"
        " --selection-optimism {output.selection_optimism:q} --figure {output.figure:q} > {log:q} 2>&1"


rule differences:
    input:
        summaries=every_summary(),
        script=script("differences.py"),
        code=code("differences.py"),
    output:
        table=f"{RESULTS}/recipe_differences.csv",
        figure=study_figure(f"{RESULTS}/recipe_differences.png", plan.has_pairs(config)),
    log:
        f"{RESULTS}/logs/differences.log",
    conda:
        "envs/analysis.yaml"
    params:
        recipes=plan.runs_json(config),
        pairs=plan.pairs_args(config),
        interval_width=config["study"]["interval_width"],
        effect=config["study"]["effect"],
        alpha=config["study"]["alpha"],
        power=config["study"]["power"],
    shell:
        "python {input.script:q} --summaries {input.summaries:q} --recipes-json {params.recipes:q}"
        " --pairs {params.pairs:q} --interval-width {params.interval_width:q}"
        " --effect {params.effect:q} --alpha {params.alpha:q} --power {params.power:q}"
        " --table {output.table:q} --figure {output.figure:q} > {log:q} 2>&1"


rule variance:
    input:
        summaries=every_summary(),
        script=script("variance.py"),
        code=code("variance.py"),
    output:
        table=f"{RESULTS}/variance_sources.csv",
        figure=study_figure(
            f"{RESULTS}/variance_sources.png", plan.has_families(config)
        ),
    log:
        f"{RESULTS}/logs/variance.log",
    conda:
        "envs/analysis.yaml"
    params:
        recipes=plan.runs_json(config),
    shell:
        "python {input.script:q} --summaries {input.summaries:q} --recipes-json {params.recipes:q}"
        " --table {output.table:q} --figure {output.figure:q} > {log:q} 2>&1"


# The report's first page (scripts/captions/workflow.rst) includes this file.
rule headline:
    input:
        recipes_summary=rules.compare.output.table,
        runs=expand(
            rules.report.output.summary, recipe=config["runs"], seed=config["seeds"]
        ),
        script=script("headline.py"),
        code=code("headline.py"),
    output:
        headline=in_report(f"{RESULTS}/headline.rst", "tables"),
    log:
        f"{RESULTS}/logs/headline.log",
    conda:
        "envs/analysis.yaml"
    shell:
        "python {input.script:q} --recipes-summary {input.recipes_summary:q} --runs {input.runs:q}"
        " --headline {output.headline:q} > {log:q} 2>&1"


# ---- what `snakemake` builds: every output of these rules, for every recipe and seed. A new rule
# joins by its name here; the tests and the README's outputs table check against this same list.
PER_RUN_RULES = [
    "train",
    "evaluate",
    "samples",
    "curves",
    "confusion",
    "errors",
    "report",
    "gradcam",
    "gradcam_figures",
]
PER_RECIPE_RULES = ["aggregate", "seeds_study"]
STUDY_RULES = ["compare", "headline", "differences", "variance"]


def targets():
    files = []
    for name in PER_RUN_RULES:
        files += expand(
            list(getattr(rules, name).output),
            recipe=config["runs"],
            seed=config["seeds"],
        )
    for name in PER_RECIPE_RULES:
        files += expand(list(getattr(rules, name).output), recipe=config["runs"])
    for name in STUDY_RULES:
        files += list(getattr(rules, name).output)
    return files


rule all:
    default_target: True
    input:
        targets(),
