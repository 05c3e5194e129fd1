"""Which package modules a rule's results depend on (the Snakefile's code inputs).

Two kinds of rules, two answers:
- The rules that run the model on a GPU (train, evaluate, Grad-CAM) depend on ``MODEL_CODE``, a
  declared list of the modules that decide the model's numbers. The same list is hashed into the
  fingerprint that decides whether a finished ``last.pt`` may be reused (numerics.arithmetic), so
  the two can never disagree. Argument parsing, config loading, file writing and the like are not
  in it: editing them queues no GPU job.
- CPU rules depend on every package module their script imports, read from its source (directly
  or through another module), so a new import needs no edit anywhere else.
"""

import ast
import functools
from pathlib import Path

PACKAGE = "cifar100"
PACKAGE_DIR = Path(__file__).resolve().parent
# The modules whose source decides a model's weights (training) and outputs (logits): the model,
# the batches it sees (order, augmentation, normalisation), the numerics, the resume state and the
# loop. A new module that changes what a model computes is added here, and nowhere else.
MODEL_CODE = ("model.py", "pipeline.py", "numerics.py", "resume.py", "engine.py")
# Grad-CAM's maps also depend on how they are computed from the model.
GRADCAM_CODE = (*MODEL_CODE, "cam.py")


def model_code(names=MODEL_CODE, package_dir=PACKAGE_DIR) -> list[str]:
    """The paths of ``names`` in the package, for a GPU rule's code inputs and the fingerprint."""
    return [str(Path(package_dir) / n) for n in names]


def _imported(path: Path, package_dir: Path) -> frozenset[Path]:
    """Package modules imported by the file at ``path`` (absolute and relative imports)."""
    return _imports_in(path.read_text(), path.parent == package_dir, package_dir)


# Cached by source text: the Snakefile asks once per rule and most scripts share modules, so
# parsing each module once saves most of a second at every snakemake start.
@functools.lru_cache(maxsize=None)
def _imports_in(source: str, in_package: bool, package_dir: Path) -> frozenset[Path]:
    tree = ast.parse(source)
    found = set()

    def add(name: str) -> None:
        module = package_dir / f"{name}.py"
        if module.is_file():
            found.add(module)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE:
                    found.add(package_dir / "__init__.py")
                    if len(parts) > 1:
                        add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            relative = node.level == 1 and in_package
            parts = (node.module or "").split(".") if node.module else []
            if relative or (node.level == 0 and parts and parts[0] == PACKAGE):
                found.add(package_dir / "__init__.py")
                sub = parts[0] if relative and parts else (parts[1] if len(parts) > 1 else None)
                if sub:
                    add(sub)
                else:  # from cifar100 import data, metrics / from . import data
                    for alias in node.names:
                        add(alias.name)
    return frozenset(found)


def package_modules(script, package_dir) -> list[str]:
    """Every module of the package that ``script`` needs, directly or through other modules,
    sorted (``__init__.py`` included when any is)."""
    package_dir = Path(package_dir)
    todo, seen = [Path(script)], set()
    while todo:
        for module in _imported(todo.pop(), package_dir):
            if module not in seen:
                seen.add(module)
                if module.name != "__init__.py":
                    todo.append(module)
    return sorted(str(m) for m in seen)
