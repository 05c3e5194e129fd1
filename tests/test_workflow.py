"""The whole DAG on the tiny config, run by Snakemake as a user would, and what reruns after an edit.

The shared run (the README's "try it here", tests/conftest.py) lives in folders whose names hold a
space and non-ASCII letters, and so does its data_dir: every rule must still work. A data_dir
holding shell syntax (`$(...)`, backticks, `;`) is refused in one line before any job, and nothing
of it runs.
"""

import os
import re
import shutil
import stat
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from helpers import ODD_DATA_DIR, REPO, results_root, same_weights, workflow_outputs
from helpers import snakemake as run_snakemake

from cifar100 import data, deps, files

pytestmark = pytest.mark.slow

GPU_RULES = {"train", "evaluate", "gradcam"}  # the rules that run the model
ANALYSIS_RULES = {"samples", "curves", "confusion", "errors", "report", "gradcam_figures", "aggregate", "compare",
                  "headline", "seeds_study", "differences", "variance"}
# A data_dir a careless (or hostile) config could hold: refused before any job, nothing of it runs.
HOSTILE_DATA_DIR = "data dir ü; $(touch pwned-dollar) `touch pwned-backtick` && touch pwned-and"
MARKERS = ("pwned-dollar", "pwned-backtick", "pwned-and")


def snakemake(workflow: Path, workdir: Path, *args, check=True, configs=None):
    configs = configs or [workflow / "tests" / "tiny.yaml", workflow.parent / "odd.yaml"]
    p = run_snakemake("-s", workflow / "Snakefile", "-d", workdir, "--configfile", *configs, *args)
    if check and p.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}")
    return p


def planned(workflow, workdir, *args, configs=None) -> dict:
    """{rule: count} of what a dry run would execute."""
    out = snakemake(workflow, workdir, "-n", *args, configs=configs).stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.fixture(scope="module")
def run(try_it_here):
    """A private copy of the workflow (so edits below touch only the copy) and one full run of it:
    the session's "try it here" (tests/conftest.py), made with tests/tiny.yaml and odd.yaml."""
    assert try_it_here.configs[1:] == ["tests/tiny.yaml", try_it_here.workflow.parent / "odd.yaml"]
    return try_it_here.workflow, try_it_here.workdir


@pytest.fixture(scope="module")
def expected(run):
    """Every output the rules declare, as Snakemake lists them."""
    workflow, wd = run
    return workflow_outputs(workflow / "Snakefile", wd, workflow / "tests/tiny.yaml", workflow.parent / "odd.yaml")


def test_every_declared_output_exists_for_every_seed(run, expected):
    workflow, wd = run
    assert any("seed1/" in f for f in expected) and any(f.endswith("recipes_summary.csv") for f in expected)
    missing = [f for f in expected if not (wd / f).is_file()]
    assert not missing, missing
    for seed in (0, 1):
        for name in ["logs/train.log", "logs/evaluate.log", "benchmarks/train.tsv"]:
            assert (results_root(wd) / f"baseline/seed{seed}" / name).is_file(), f"seed{seed}/{name} missing"
    assert not [p for p in wd.rglob(f"*{files.TEMP_MARKER}*") if files.is_temp_name(p.name)], "temp files left behind"


def test_readme_outputs_tables_name_every_output(expected):
    readme = (REPO / "README.md").read_text()
    named = {token.rsplit("/", 1)[-1] for token in re.findall(r"`([^`\s]+)`", readme)}
    missing = sorted({Path(f).name for f in expected} - named)
    assert not missing, f"outputs missing from the README's tables: {missing}"


def test_config_text_never_runs_as_a_command(run):
    workflow, wd = run
    p = snakemake(workflow, wd, "--cores", "1", "--config", f"data_dir={HOSTILE_DATA_DIR}", check=False)
    refusal = [line for line in (p.stdout + p.stderr).splitlines() if line.startswith("config key data_dir: ")]
    assert p.returncode != 0 and len(refusal) == 1 and "holds shell syntax" in refusal[0], p.stderr[-2000:]
    for marker in MARKERS:
        assert not list(workflow.parent.rglob(marker)), f"{marker}: a config value ran as shell code"
        assert not Path(marker).exists()


def test_synthetic_data_lives_in_its_own_folder(run):
    _, wd = run
    data_dir = wd / ODD_DATA_DIR
    (synthetic,) = data_dir.glob("synthetic-*")
    assert (synthetic / "cifar-100-python" / "meta").is_file()
    assert not (data_dir / "cifar-100-python").exists(), "synthetic data where real CIFAR-100 lives"
    assert not list(data_dir.glob(".incoming-*"))


def test_training_learned_and_seeds_differ(run):
    _, wd = run
    logits = [np.load(results_root(wd) / f"baseline/seed{s}/predictions.npz")["logits"] for s in (0, 1)]
    assert logits[0].shape == (200, 10) and not np.array_equal(logits[0], logits[1])
    labels = np.load(results_root(wd) / "baseline/seed0/predictions.npz")["labels"]
    assert all((lg.argmax(1) == labels).mean() > 0.3 for lg in logits)  # chance is 0.1


def test_up_to_date_after_the_run(run):
    assert planned(*run) == {}


@contextmanager
def edited(path: Path, text="\n# edited\n"):
    """Edit a file as a person would (new content, newer mtime: Snakemake checks both), then undo
    the edit so that the next test starts from an up-to-date workflow again."""
    original = path.read_text()
    path.write_text(original + text + f"# at {time.time()}\n")
    t = time.time() + 5
    os.utime(path, (t, t))
    try:
        yield
    finally:
        path.write_text(original)


def readme_rerun_table() -> dict[str, set[str]]:
    """The README's "what reruns when you edit" table: {file under scripts/: rules planned}. A row
    names its files in backticks, then its rules in backticks; "every analysis" stands for every
    CPU rule, "nothing" for none."""
    text = (REPO / "README.md").read_text()
    section = text.split("<!-- reruns-table -->", 1)[-1].split("<!-- /reruns-table -->", 1)[0]
    table = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        rules = set(re.findall(r"`(\w+)`", cells[1])) | (ANALYSIS_RULES if "every analysis" in cells[1] else set())
        for name in re.findall(r"`([^`]+\.py)`", cells[0]):
            assert name not in table, f"{name} is in two rows of the README's table"
            table[name] = rules
    return table


def test_what_reruns_after_each_edit_is_the_readmes_table(run):
    """Every package module and every script edited in turn, each plan compared with the README's
    table; the GPU rules appear only for the code that runs the model (deps.MODEL_CODE, cam.py and
    the GPU rules' own scripts)."""
    workflow, wd = run
    files = sorted(str(p.relative_to(workflow / "scripts")) for p in (workflow / "scripts").rglob("*.py")
                   if "egg-info" not in str(p))
    actual = {}
    for name in files:
        with edited(workflow / "scripts" / name):
            actual[name] = set(planned(workflow, wd)) - {"all"}
    model_code = {f"cifar100/{m}" for m in deps.GRADCAM_CODE} | {f"{r}.py" for r in GPU_RULES}
    gpu = {name: sorted(jobs & GPU_RULES) for name, jobs in actual.items() if jobs & GPU_RULES}
    assert set(gpu) <= model_code, f"editing these queues GPU jobs: {gpu}"
    table = readme_rerun_table()
    wrong = {name: jobs for name, jobs in actual.items() if table.get(name) != jobs}
    assert not wrong and sorted(table) == files, "plans differ from the README's table; actual rows:\n" + "\n".join(
        f"| `{n}` | {', '.join(f'`{r}`' for r in sorted(rules)) or 'nothing'} |" for n, rules in wrong.items())


def test_a_new_import_in_a_module_becomes_a_code_input_of_its_rules(run):
    """metrics.py starts to import cam.py: every rule whose script uses metrics now lists cam.py,
    with no edit of the Snakefile."""
    workflow, wd = run
    metrics = workflow / "scripts/cifar100/metrics.py"
    st = metrics.stat()
    before = snakemake(workflow, wd, "-n", "--forcerun", "confusion").stdout
    with edited(metrics, "\nfrom . import cam  # noqa: F401\n"):
        os.utime(metrics, ns=(st.st_atime_ns, st.st_mtime_ns))
        after = snakemake(workflow, wd, "-n", "--forcerun", "confusion").stdout

    def inputs(out):
        return out.split("rule confusion:", 1)[1].split("output:", 1)[0]

    assert "cifar100/cam.py" not in inputs(before) and "cifar100/cam.py" in inputs(after)


def test_a_newer_download_script_never_refetches_existing_data(run):
    workflow, wd = run
    with edited(workflow / "scripts/download.py"):
        assert planned(workflow, wd) == {}


# What each analysis key changes; only the Grad-CAM keys change what the model is asked to compute.
ANALYSIS_KEYS = {"samples": ("samples", 5), "gallery_size": ("errors", 5), "top_pairs": ("errors", 3),
                 "ece_bins": ("report", 7), "gradcam_images": ("gradcam", 2), "gradcam_layer": ("gradcam", "layer3")}


def test_every_analysis_key_is_checked_below():
    assert set(ANALYSIS_KEYS) == set(cfg_schema()["properties"]["analysis"]["properties"])


def cfg_schema():
    from cifar100 import config

    return config.schema()


@pytest.mark.parametrize("key", sorted(ANALYSIS_KEYS))
def test_changing_an_analysis_key_queues_no_gpu_job_unless_the_model_must_compute_more(run, tmp_path, key):
    workflow, wd = run
    rule, value = ANALYSIS_KEYS[key]
    override = tmp_path / "analysis.yaml"
    override.write_text(f"analysis:\n  {key}: {value}\n")
    jobs = set(planned(workflow, wd, configs=[workflow / "tests/tiny.yaml", workflow.parent / "odd.yaml", override]))
    assert rule in jobs
    assert not jobs & GPU_RULES - ({"gradcam"} if key.startswith("gradcam") else set()), sorted(jobs)


def test_changing_val_size_under_best_test_plans_nothing(run):
    assert planned(*run, "--config", "val_size=123") == {}


def test_changing_a_recipe_reruns_training(run):
    workflow, wd = run
    jobs = planned(workflow, wd, "--config", "selection=last")
    assert jobs.get("train") == 2


def test_command_line_lists_and_booleans_read_as_yaml(run):
    jobs = planned(*run, "--config", "seeds=[0,1,2]", "deterministic=true")
    assert jobs.get("train") == 1  # only the new seed; seeds 0 and 1 are up to date


def test_other_synthetic_settings_are_another_dataset_and_retrain(run):
    workflow, wd = run
    jobs = planned(workflow, wd, "--config", "synthetic={'noise': 0.5}")
    assert jobs.get("dataset") == 1 and jobs.get("train") == 2


def test_switching_to_real_data_offline_fails_cleanly_and_keeps_the_synthetic_set(run):
    """The README's "try it here", then the main job in the same folder, on a machine without
    internet: one line naming the problem; the synthetic set and every result are still there."""
    workflow, wd = run
    def results():  # every result but the logs (the failed job's own log is rewritten, as it should be)
        return {p: p.stat().st_mtime_ns for p in (wd / "results").rglob("*") if p.is_file() and "logs" not in p.parts}

    before = results()
    synthetic = next((wd / ODD_DATA_DIR).glob("synthetic-*"))
    p = snakemake(workflow, wd, "--cores", "1", "--config", "dataset=cifar100", check=False)
    assert p.returncode != 0
    log = (wd / "results/logs/dataset.log").read_text()
    assert "cannot download CIFAR-100" in log and log.count("\n") == 1
    assert (synthetic / "cifar-100-python" / "train").is_file()
    assert not (wd / ODD_DATA_DIR / "cifar-100-python").exists()
    assert results() == before  # nothing deleted, rewritten or added


def test_lost_session_rerun_incomplete_rebuilds_a_finished_training_without_training(run):
    """The login node died while seed 0's training job finished: Snakemake marks the job incomplete
    and --rerun-incomplete deletes its outputs. The rerun rebuilds them from the complete last.pt."""
    workflow, wd = run
    run_dir = results_root(wd) / "baseline/seed0"
    weights = (run_dir / "model.pt").read_bytes()
    history = (run_dir / "history.csv").read_text()
    for name in ("model.pt", "history.csv"):
        (run_dir / name).unlink()
    t0 = time.time()
    snakemake(workflow, wd, "--cores", "2", "--rerun-incomplete", "--until", "train")
    log = (run_dir / "logs/train.log").read_text()
    assert "rebuilding model.pt and history.csv from it, no training" in log and "epoch 1/" not in log
    assert (run_dir / "history.csv").read_text() == history
    import torch

    def state(blob):
        import io
        return torch.load(io.BytesIO(blob), weights_only=True)["state_dict"]

    old, new = state(weights), state((run_dir / "model.pt").read_bytes())
    assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)
    assert time.time() - t0 < 120


def test_a_finished_model_survives_losing_last_pt_and_the_dataset_manifest(run):
    """A user deletes last.pt to save disk, later the dataset's manifest goes: the dataset step and
    training are planned again, but the intact finished model.pt is kept, not retrained."""
    workflow, wd = run
    run_dir = results_root(wd) / "baseline/seed0"
    shutil.copy(run_dir / "model.pt", wd.parent / "model-before.pt")
    (run_dir / "last.pt").unlink()
    (manifest,) = (wd / "results/datasets").glob("*/manifest.json")
    manifest.unlink()
    snakemake(workflow, wd, "--cores", "2", "--until", "train")
    log = (run_dir / "logs/train.log").read_text()
    assert "kept, history.csv rebuilt from it, no training" in log and "epoch 1/" not in log
    assert same_weights(run_dir / "model.pt", wd.parent / "model-before.pt")


def test_results_of_other_data_live_apart(run, tmp_path):
    """The try-it-here run's results and those of another dataset in the same working directory
    never share a folder: the other data's runs are planned under results/<its data version>/."""
    workflow, wd = run
    data.write_synthetic(tmp_path / "d", train_size=30, test_size=10, num_classes=3, num_coarse=1)
    override = tmp_path / "other.yaml"
    override.write_text(f"dataset: cifar100\ndata_dir: '{tmp_path / 'd'}'\nseeds: [0]\n")
    out = snakemake(workflow, wd, "-n", configs=[workflow / "tests/tiny.yaml", override]).stdout
    outputs = " ".join(line for line in out.splitlines() if line.strip().startswith("output:"))
    planned_files = re.findall(r"results/[^\s,]+", outputs)
    apart = [f for f in planned_files if re.match(r"results/(md5-[0-9a-f]+|datasets)/", f)]
    assert len(planned_files) > 20 and apart == planned_files, planned_files
    assert str(results_root(wd).name).startswith("synthetic-")


def test_html_report_holds_every_figure(run):
    workflow, wd = run
    snakemake(workflow, wd, "--report", wd / "report-again.html")
    html = (wd / "report-again.html").read_text(errors="replace")
    for category in ("training", "evaluation", "errors", "interpretability", "replicates", "tables"):
        assert category in html
    # the summary tables are report items, and the headline numbers open the first page
    for table in ("seeds_summary.csv", "recipes_summary.csv", "classification_report.csv", "confusion_matrix.svg"):
        assert table in html, table
    assert "top-1" in html and "macro F1" in html


# --- a pre-staged dataset: used as it is, read-only; training follows its content -------------------

@pytest.fixture(scope="module")
def prestaged(run, tmp_path_factory):
    """CIFAR-100 "pre-staged" by an admin: a read-only folder (synthetic content in the official
    layout), trained on for one seed in a fresh working directory."""
    workflow, _ = run
    root = tmp_path_factory.mktemp("prestaged")
    data.write_synthetic(root / "shared data", train_size=300, test_size=100, num_classes=10, num_coarse=5)
    folder = root / "shared data" / "cifar-100-python"
    for p in [*folder.iterdir(), folder]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    override = root / "prestaged.yaml"
    override.write_text(f"dataset: cifar100\ndata_dir: '{root / 'shared data'}'\nseeds: [0]\n")
    configs = [workflow / "tests/tiny.yaml", override]
    wd = root / "work"
    snakemake(workflow, wd, "--cores", "2", "--until", "train", configs=configs)
    yield workflow, wd, configs, folder
    for p in [folder, *folder.iterdir()]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_prestaged_data_is_read_in_place_and_a_second_invocation_plans_no_training(prestaged):
    workflow, wd, configs, folder = prestaged
    assert (results_root(wd) / "baseline/seed0/model.pt").is_file()
    assert sorted(p.name for p in folder.parent.iterdir()) == ["cifar-100-python"]  # nothing added
    assert "train" not in planned(workflow, wd, configs=configs)


def test_changed_data_in_place_reruns_training(prestaged):
    workflow, wd, configs, folder = prestaged
    test = data.load(folder.parent).test
    folder.chmod(folder.stat().st_mode | stat.S_IWUSR)
    (folder / "test").chmod(0o644)
    data.write_split(folder / "test", test.images[::-1], test.labels[::-1], test.coarse[::-1])
    assert planned(workflow, wd, configs=configs).get("train") == 1


def test_partial_prestaged_folder_stops_before_any_job_naming_the_file(run, tmp_path):
    workflow, wd = run
    data.write_synthetic(tmp_path / "d", train_size=30, test_size=10, num_classes=3, num_coarse=1)
    (tmp_path / "d/cifar-100-python/test").unlink()
    before = sorted(p.name for p in (tmp_path / "d/cifar-100-python").iterdir())
    p = snakemake(workflow, wd, "-n", "--config", "dataset=cifar100", f"data_dir={tmp_path / 'd'}", check=False)
    assert p.returncode != 0 and "cifar-100-python/test: missing from the dataset folder" in p.stdout + p.stderr
    assert sorted(p.name for p in (tmp_path / "d/cifar-100-python").iterdir()) == before


# --- every bad input is one line before any job starts ----------------------------------------------
# (each bad value of a config file, in this process: tests/test_config.py)

def test_bad_config_stops_before_any_job_naming_the_key(run, tmp_path):
    workflow, wd = run
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipes: {baseline: {epochs: 2.0}}\n")
    p = snakemake(workflow, wd, "-n", configs=[workflow / "tests/tiny.yaml", bad], check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "config key recipes/baseline/epochs: 2.0 is not of type 'integer'" in out, out[-3000:]


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    """Our own loader (train.py --config, the scripts run standalone) names file, line and column.
    (Snakemake itself reads --configfile files and says only "not valid JSON or YAML".)"""
    from helpers import run_script

    bad = tmp_path / "my config.yaml"
    bad.write_text("seeds: [0, 1]\nruns: [baseline\nselection: last\n")
    p = run_script("train.py", "--config", bad, check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert f"{bad}: line 3, column 10: not valid YAML" in p.stderr and "not valid YAML" in p.stderr


def test_number_written_as_float_on_the_command_line_is_refused(run):
    p = snakemake(*run, "-n", "--config", "val_size=1e3", check=False)
    assert p.returncode != 0 and "config key val_size" in p.stdout + p.stderr
