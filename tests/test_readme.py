"""A new user's first hour: the README's commands work after exactly the install step it gives, and
the report they build reads well in a real browser.

Fresh-install check without a fresh 5 GB environment: a `sitecustomize` on PYTHONPATH refuses,
in every Python process a command starts (snakemake and each job's script), every module of an
installed distribution that `pip install -e .` would not have installed (neither a declared runtime
dependency nor one of theirs), as if it were absent. A command that passes here passes in a
fresh virtual environment that holds only what pyproject.toml declares.
"""

import ast
import csv
import importlib.metadata as metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from helpers import REPO, SCRIPTS
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from report_browser import survey
from test_envs import third_party_imports

README = (REPO / "README.md").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# What every fresh virtual environment holds before `pip install -e .` (Python 3.12 and later: no setuptools).
VENV_BASE = {"pip"}

GUARD = '''\
"""Hide the modules named in UNDECLARED_MODULES, as if not installed (tests/test_readme.py)."""
import importlib.machinery
import os
import sys

HIDDEN = frozenset(os.environ.get("UNDECLARED_MODULES", "").split())


class Declared(importlib.machinery.PathFinder):
    """sys.path's finder, blind to the hidden top-level modules: importing one raises
    ModuleNotFoundError and importlib.util.find_spec returns None, as when it is absent."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if path is None and name in HIDDEN:
            with open(os.environ["UNDECLARED_LOG"], "a") as log:
                log.write(f"{name}\\t{' '.join(sys.argv[:2])}\\n")
            return None
        return super().find_spec(name, path, target)


sys.meta_path[:] = [Declared if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
'''


def declared_distributions() -> set[str]:
    """The distributions `pip install -e .` installs: the project, its runtime dependencies and
    theirs (markers evaluated for this machine, no extras), read from the installed metadata."""
    todo, seen = [Requirement(r) for r in PYPROJECT["dependencies"]], {canonicalize_name(PYPROJECT["name"])}
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # declared but not installed here: nothing can import it
        todo += [r for r in map(Requirement, requires) if r.marker is None or r.marker.evaluate({"extra": ""})]
    return seen | VENV_BASE


def undeclared_modules() -> set[str]:
    """Top-level modules of installed distributions that a fresh `pip install -e .` would lack."""
    declared = declared_distributions()
    return {module for module, dists in metadata.packages_distributions().items()
            if module.isidentifier() and not any(canonicalize_name(d) in declared for d in dists)}


def declared_only_env(folder: Path, refuse=()) -> dict:
    """An environment whose Python processes can import only what pyproject.toml declares (and
    the standard library); refused imports are logged to folder/refused.log."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(GUARD)
    path = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    refused = " ".join(sorted(undeclared_modules() | set(refuse)))
    return {**os.environ, "PYTHONPATH": path, "UNDECLARED_MODULES": refused,
            "UNDECLARED_LOG": str(folder / "refused.log"), "OMP_NUM_THREADS": "1"}


def snakemake(*args, env, cwd=REPO, timeout=1200) -> subprocess.CompletedProcess:
    """`snakemake ...` as the README types it (the console script pip installed beside python)."""
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "snakemake"]
    return subprocess.run([*cmd, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def failed(p: subprocess.CompletedProcess, env: dict, wd: Path | None = None) -> str:
    """What went wrong: the output's end, the failed jobs' logs and the imports the guard refused."""
    log = Path(env["UNDECLARED_LOG"])
    refused = log.read_text() if log.exists() else "(none)"
    jobs = [wd / m for m in re.findall(r"log: (\S+) \(check log file", p.stderr)] if wd else []
    job_logs = "".join(f"\n--- {j}:\n{j.read_text()[-1500:]}" for j in jobs if j.exists())
    return f"rc {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}{job_logs}\nrefused imports:\n{refused}"


def readme_blocks() -> list[str]:
    """Every line of the README's (indented) code blocks."""
    return [line.strip() for line in README.splitlines() if line.startswith("    ") and line.strip()]


# ---- the README itself --------------------------------------------------------------------------

def test_first_screen_says_what_it_is_and_gives_the_commands():
    first = "\n".join(README.splitlines()[:50])
    for command in ['python -m pip install -e . && snakemake --cores all',
                    'python -m pip install -e ".[test]" && python -m pytest',
                    "snakemake --cores 2 --configfile tests/tiny.yaml",
                    "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu",
                    "snakemake --profile profiles/slurm"]:
        assert command in first, f"not on the README's first screen: {command}"
    assert first.startswith("# ResNet-18 on CIFAR-100")


def test_ci_runs_exactly_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in readme_blocks(), f".ci/run runs {ci!r}, which the README does not give"


def test_readme_is_a_first_page_not_a_manual():
    # About 150 lines of prose, plus the reruns table (one row per group of files) that a test checks.
    table = README.split("<!-- reruns-table -->", 1)[-1].split("<!-- /reruns-table -->", 1)[0]
    lines = README.splitlines()
    assert len(lines) - table.count("\n") <= 170, f"{len(lines)} lines: reference material belongs in --help, " \
        "captions, comments"
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", README), "a dated figure"
    for heading in ("## Cluster", "## Study statistics", "## Recipes", "## Outputs"):
        assert heading in README, heading


def test_every_path_the_readme_names_exists():
    named = set(re.findall(r"\b((?:scripts|tests|profiles|envs)/[\w./-]+\.(?:py|yaml|sh|css))\b", README))
    assert named, "the README names no file"
    missing = sorted(p for p in named if not (REPO / p).exists())
    assert not missing, missing


def test_readme_names_every_script():
    missing = sorted(p.name for p in SCRIPTS.glob("*.py") if p.name not in README)
    assert not missing, f"scripts the README does not name: {missing}"


def test_nested_config_example_sets_a_nested_key():
    import yaml
    from snakemake.cli import parse_config
    from snakemake.utils import update_config

    from cifar100 import config as cfg

    example = re.search(r"--config '(analysis=\{[^']+\})'", README)
    assert example, "the README shows no nested --config example"
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(config, parse_config([example[1]]))  # as snakemake merges --config over the configfile
    cfg.validate(config)
    assert config["analysis"]["ece_bins"] == 10 and config["analysis"]["samples"] == cfg.default("analysis", "samples")


# ---- --help keeps the docstring's line breaks ------------------------------------------------------

@pytest.mark.parametrize("path", sorted(SCRIPTS.glob("*.py")), ids=lambda p: p.name)
def test_help_text_keeps_its_line_breaks(path):
    """The description argparse prints (RawDescriptionHelpFormatter) is the module docstring as
    Python reads it: a backslash at a line's end in a plain string joins the example's lines."""
    tree = ast.parse(path.read_text())
    literal = tree.body[0].value
    source_lines = literal.end_lineno - literal.lineno + 1
    assert ast.get_docstring(tree, clean=False).count("\n") + 1 == source_lines, (
        f"{path.name}: the docstring loses line breaks; make it a raw string (r\"\"\"...)")


# ---- declared dependencies --------------------------------------------------------------------------

def test_declared_dependencies_cover_every_import_of_the_code():
    """Every third-party import of the scripts and the package (lazy ones too) is declared."""
    files = [*SCRIPTS.glob("*.py"), *(SCRIPTS / "cifar100").glob("*.py")]
    undeclared = undeclared_modules()
    missing = {}
    for f in files:
        top, lazy = third_party_imports(f)
        for name in (top | lazy) & undeclared:
            missing.setdefault(name, []).append(f.name)
    assert not missing, f"imported but not in pyproject.toml's dependencies: {missing}"


def test_report_dependency_is_declared():
    """`snakemake --report` needs pygments, which snakemake does not declare (issue 20)."""
    assert "pygments" in declared_distributions()


# ---- the README's commands with only the declared dependencies (slow: runs the tiny workflow) -----

@pytest.fixture(scope="module")
def tiny_run(try_it_here):
    """The README's "try it here", then its report command, with only the declared dependencies
    (run once for the session, in a copy of the repository: tests/conftest.py)."""
    return try_it_here.root, try_it_here.workdir


@pytest.mark.slow
def test_try_it_here_and_report_work_with_only_the_declared_dependencies(tiny_run):
    root, wd = tiny_run
    assert (wd / "report.html").stat().st_size > 100_000
    # the guard was on: the run's processes met it (snakemake probes optional modules)
    assert (root / "guard" / "refused.log").exists()


@pytest.mark.slow
def test_the_check_would_catch_an_undeclared_report_dependency(try_it_here):
    """The issue's failure, reproduced by refusing pygments: the check is not vacuous."""
    root, wd = try_it_here.root, try_it_here.workdir
    env = declared_only_env(root / "guard_no_pygments", refuse={"pygments"})
    p = snakemake(*try_it_here.configs, "-d", wd, "--report", root / "no_pygments.html", env=env,
                  cwd=try_it_here.workflow)
    assert p.returncode != 0 and "pygments must be installed" in p.stdout + p.stderr, failed(p, env)


@pytest.mark.slow
def test_cluster_command_plans_with_only_the_declared_dependencies(tmp_path):
    """`snakemake --profile profiles/slurm -n` after `pip install -e .`: the Slurm executor plugin
    imports and the plan is made (the profile runs jobs in the environment snakemake runs in)."""
    env = declared_only_env(tmp_path / "guard")
    p = snakemake("--profile", "profiles/slurm", "--configfile", "tests/tiny.yaml", "-d", tmp_path / "run", "-n",
                  env=env, timeout=300)
    assert p.returncode == 0 and "train" in p.stdout, failed(p, env)


# ---- the report in a real browser -------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser_facts(tiny_run):
    """Layout facts and screenshots of the tiny report in headless Chromium at 1280x720 and
    1920x1080 (Chromium installed from Debian's packages when missing)."""
    root, wd = tiny_run
    shots = root / "screenshots"
    facts = survey(wd / "report.html", shots)
    print(f"report screenshots: {shots}")
    return wd, facts


def overlaps(a, b) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


@pytest.mark.slow
def test_headline_is_in_view_and_nothing_is_above_the_scroll_origin(browser_facts):
    _, facts = browser_facts
    for size, f in facts.items():
        page = f["first_page"]
        assert page["headings"][0] == "Headline results", (size, page["headings"])
        headline, pane = page["headline"], page["pane"]
        assert pane["top"] <= headline["top"] and headline["bottom"] <= page["window"]["height"], (size, headline)
        # Snakemake centres its pane: a page taller than the window once lost its top to negative overflow
        assert page["content"]["top"] >= pane["top"] - 0.5, (size, page["content"], pane)


@pytest.mark.slow
def test_rule_graph_covers_no_text_or_table(browser_facts):
    _, facts = browser_facts
    for size, f in facts.items():
        page = f["first_page"]
        assert page["graph"] is not None, size
        covered = [b for b in page["blocks"] if overlaps(b, page["graph"])]
        assert not covered, (size, page["graph"], covered)


@pytest.mark.slow
def test_every_figure_shows_at_full_size_from_its_top_left_corner(browser_facts):
    _, facts = browser_facts
    for size, f in facts.items():
        assert any(p.endswith("confusion_matrix.svg") for p in f["figures"]), size
        for path, fig in f["figures"].items():
            assert fig["shown"][0] >= fig["natural"][0] - 1 and fig["shown"][1] >= fig["natural"][1] - 1, (
                size, path, fig)
            assert fig["left"] >= 0 and fig["top"] >= 0, (size, path, fig)


@pytest.mark.slow
def test_tables_show_as_tables(browser_facts):
    """A table's information panel shows the table itself (headers as in the file), not only a download."""
    wd, facts = browser_facts
    for size, f in facts.items():
        assert f["tables"], size
        width = int(size.split("x")[0])
        for path, info in f["tables"].items():
            tables = info["tables"]
            assert tables and all(t["rows"] >= 2 for t in tables), (size, path, tables)
            # the information panel keeps its half of the window beside a wide figure
            assert info["nav_width"] >= 0.45 * width, (size, path, info["nav_width"])
            if path.endswith(".csv"):
                with open(wd / path, newline="") as fh:
                    rows = list(csv.reader(fh))
                assert tables[0]["header"] == rows[0] and tables[0]["rows"] == len(rows), (size, path)


@pytest.mark.slow
def test_no_placeholder_figures(browser_facts):
    """One recipe: nothing to compare, so the comparison figures of the study are not listed."""
    _, facts = browser_facts
    for size, f in facts.items():
        names = {p.rsplit("/", 1)[-1] for p in f["results"]}
        assert not names & {"recipe_differences.png", "variance_sources.png"}, size
