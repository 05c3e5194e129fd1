"""Code inputs are read from the imports (cifar100/deps.py): a new import needs no other edit."""

import shutil

from helpers import SCRIPTS

from cifar100 import deps


def names(script, package):
    return {p.rsplit("/", 1)[-1] for p in deps.package_modules(script, package)}


def test_scripts_depend_on_what_they_import_directly_and_through_other_modules():
    pkg = SCRIPTS / "cifar100"
    train = names(SCRIPTS / "train.py", pkg)
    assert {"engine.py", "numerics.py", "resume.py", "pipeline.py", "model.py", "checkpoint.py", "data.py",
            "__init__.py"} <= train
    assert not train & {"plots.py", "metrics.py", "cam.py"}, "training must never depend on plotting code"
    curves = names(SCRIPTS / "curves.py", pkg)
    assert "plots.py" in curves and not curves & {"engine.py", "model.py"}
    assert "cam.py" in names(SCRIPTS / "gradcam.py", pkg)


def test_adding_an_import_to_a_module_changes_the_inputs_of_every_script_using_it(tmp_path):
    copy = tmp_path / "scripts"
    shutil.copytree(SCRIPTS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    pkg = copy / "cifar100"
    assert "cam.py" not in names(copy / "confusion.py", pkg)
    with open(pkg / "metrics.py", "a") as f:
        f.write("\nfrom . import cam  # noqa: F401\n")
    assert "cam.py" in names(copy / "confusion.py", pkg)
    (pkg / "metrics.py").write_text((pkg / "metrics.py").read_text().replace("from . import cam", "import os"))
    (pkg / "plots.py").write_text("from cifar100.cam import overlay  # noqa: F401\n" + (pkg / "plots.py").read_text())
    assert "cam.py" in names(copy / "curves.py", pkg)  # absolute form, through plots.py
