"""envs/*.yaml hold what their rules import: no missing package, nothing extra, every version pinned.

Conda cannot build them here (no channels), so this compares each env's package list with the
third-party imports of the scripts whose rules name it (`conda:`), and of the package modules those
scripts import (cifar100.deps, the same reading as the rules' code inputs).
"""

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, SCRIPTS

from cifar100 import deps

# Import name -> conda-forge package. A new third-party import fails the test until it is added here.
CONDA_NAME = {
    "numpy": "numpy",
    "scipy": "scipy",
    "sklearn": "scikit-learn",
    "matplotlib": "matplotlib-base",  # no Qt/GUI backends: figures are written to files
    "seaborn": "seaborn",
    "yaml": "pyyaml",
    "jsonschema": "jsonschema",
    "torch": "pytorch",
    "torchvision": "torchvision",
    "cv2": "opencv",
    "PIL": "pillow",
    "pandas": "pandas",
}
# Imports inside a function that only some rules reach: needed by those rules alone. Anything not
# listed counts wherever it is imported, in a function or not.
ONLY_FOR = {
    "sklearn": {"report"},  # metrics.classification_report: only report.py calls it
}


def workflow_text() -> str:
    return "\n".join(p.read_text() for p in [REPO / "Snakefile", *sorted(REPO.glob("rules/*.smk"))])


def rules() -> dict[str, tuple[str, str]]:
    """rule -> (its script under scripts/, its conda env), for every rule that runs a script."""
    parts = re.split(r"^rule (\w+):\n", workflow_text(), flags=re.M)
    found = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        script = re.search(r"\bscript\(\s*\"([^\"]+)\"\s*\)", body)
        if script:
            env = re.search(r"^\s+conda:\s*\n\s+\"([^\"]+)\"", body, flags=re.M)
            found[name] = (script[1], env[1] if env else None)
    return found


def third_party_imports(path: Path) -> tuple[set[str], set[str]]:
    """(imports at module level, imports inside functions) of a file, as top-level names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    in_functions = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                    for n in ast.walk(f)}
    top, lazy = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = {node.module.split(".")[0]}
        else:
            continue
        names -= {deps.PACKAGE, *sys.stdlib_module_names}
        (lazy if id(node) in in_functions else top).update(names)
    return top, lazy


def needed(rule: str, script: str) -> set[str]:
    """Import names the rule's script can reach: its own, and those of every package module it uses."""
    files = [SCRIPTS / script, *map(Path, deps.package_modules(SCRIPTS / script, SCRIPTS / deps.PACKAGE))]
    names = set()
    for f in files:
        top, lazy = third_party_imports(f)
        names |= top | {n for n in lazy if rule in ONLY_FOR.get(n, {rule})}
    return names


def env_packages(env: str) -> dict[str, str]:
    spec = yaml.safe_load((REPO / env).read_text())
    assert spec["channels"] == ["conda-forge", "nodefaults"], f"{env}: channels must be conda-forge, nodefaults"
    pins = {}
    for dep in spec["dependencies"]:
        assert isinstance(dep, str) and re.fullmatch(r"[A-Za-z0-9_.-]+=\S+", dep), (
            f"{env}: {dep!r} is not pinned as name=version")
        name, version = dep.split("=", 1)
        pins[name] = version
    return pins


RULES = rules()
ENVS = sorted({env for _, env in RULES.values() if env})


def test_the_workflow_was_read():
    # Guards the parsing above: the rules this project is known to have, each with an env.
    assert {"train", "evaluate", "gradcam", "samples", "report", "aggregate"} <= RULES.keys(), RULES
    assert ENVS == ["envs/analysis.yaml", "envs/data.yaml", "envs/train.yaml"], ENVS
    missing_env = [name for name, (_, env) in RULES.items() if env is None]
    assert not missing_env, f"rules without conda: {missing_env}"


@pytest.mark.parametrize("env", ENVS)
def test_env_lists_exactly_what_its_rules_import(env):
    users = {name: script for name, (script, e) in RULES.items() if e == env}
    wanted, why = {"python"}, {}
    for rule, script in users.items():
        for name in needed(rule, script):
            assert name in CONDA_NAME, f"{script} (rule {rule}) imports {name}: add its conda package to CONDA_NAME"
            wanted.add(CONDA_NAME[name])
            why.setdefault(CONDA_NAME[name], rule)
    listed = set(env_packages(env))
    missing = sorted(wanted - listed)
    extra = sorted(listed - wanted)
    assert not missing, f"{env} lacks {missing}, imported by rule(s) {[why[m] for m in missing]}"
    assert not extra, f"{env} lists {extra}, which none of its rules ({sorted(users)}) imports"


def test_only_for_names_lazy_imports_that_exist():
    # Keeps ONLY_FOR honest: each entry is a function-level import reached by the rules it names.
    for name, rule_names in ONLY_FOR.items():
        for rule in rule_names:
            script = RULES[rule][0]
            files = [SCRIPTS / script, *map(Path, deps.package_modules(SCRIPTS / script, SCRIPTS / deps.PACKAGE))]
            assert any(name in third_party_imports(f)[1] for f in files), f"{rule} no longer imports {name}"


def test_training_env_has_pytorch_with_cuda():
    pins = env_packages("envs/train.yaml")
    assert "cuda" in pins["pytorch"], f"envs/train.yaml: pytorch={pins['pytorch']} would install the CPU build"
