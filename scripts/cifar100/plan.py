"""What the Snakefile works out from the validated config before it plans a job: where the data
is and what it holds, where results go, and which study figures have something to show.

Plain functions of the config, so that the Snakefile keeps to its rules and these can be tested
without Snakemake. Results of different data live apart, so that no run ever overwrites
another's: results/ for the official CIFAR-100, results/<data version>/ for anything else.
"""

import itertools
import json
from pathlib import Path

from . import config as cfg
from . import data
from .exceptions import DataError

MD5_CACHE = Path(".snakemake") / "cifar100-dataset-md5.json"  # in the working directory
# The values of a recipe's ``vary``, in the schema's order (members of a family are listed so).
SOURCES = cfg.choices("recipes", "vary")


def data_dir(config) -> str:
    """The folder holding cifar-100-python/: data_dir for CIFAR-100, a folder of its own keyed by
    its settings for a synthetic set."""
    if config["dataset"] == "synthetic":
        return str(data.synthetic_dir(config["data_dir"], config["synthetic"]))
    return config["data_dir"]


def data_version(config, folder) -> str:
    """What the data holds: training reruns when this changes. A synthetic set is named by its
    settings; CIFAR-100 by the md5 of its files (data.OFFICIAL for the real ones, also before they
    are downloaded). A partial folder stops the workflow here, naming the missing file."""
    if config["dataset"] == "synthetic":
        return Path(folder).name
    return data.content_version(folder, MD5_CACHE) or data.OFFICIAL


def results_root(version: str) -> str:
    return "results" if version == data.OFFICIAL else f"results/{version}"


def runs(config) -> dict:
    """The definitions of the recipes in runs, in runs order: families (recipes identical apart
    from vary) and the default pairs to compare are read from them."""
    return {name: config["recipes"][name] for name in config["runs"]}


def runs_json(config) -> str:
    return json.dumps(runs(config))


def val_size_args(config) -> list:
    """Only best_val holds images out: under another selection val_size changes nothing, so it is
    not a parameter of the training (changing it plans no job)."""
    return ["--val-size", config["val_size"]] if config["selection"] == "best_val" else []


def pairs_args(config) -> list[str]:
    """The study's pairs as differences.py takes them: A:B."""
    return [f"{a}:{b}" for a, b in config["study"]["pairs"]]


# ---- the study's recipes (no scipy here: the Snakefile reads them before every plan)


def default_pairs(runs: list[str], recipes: dict) -> list[tuple[str, str]]:
    """Every pair of recipes in ``runs`` whose ``vary`` is all (in runs order): the recipes a study
    compares, leaving out the one-source variants that only measure variance."""
    main = [r for r in runs if recipes[r].get("vary", "all") == "all"]
    return list(itertools.combinations(main, 2))


def families(recipes: dict) -> list[list[str]]:
    """Groups of recipe names whose definitions are identical apart from ``vary``, with at least two
    members, in the order the recipes are given; members ordered as SOURCES."""
    groups: dict[str, list[str]] = {}
    for name, r in recipes.items():
        key = repr(sorted((k, v) for k, v in r.items() if k != "vary"))
        groups.setdefault(key, []).append(name)
    order = {s: i for i, s in enumerate(SOURCES)}
    out = []
    for names in groups.values():
        if len(names) < 2:
            continue
        varies = [recipes[n].get("vary", "all") for n in names]
        dup = {v for v in varies if varies.count(v) > 1}
        if dup:
            twins = [n for n, v in zip(names, varies) if v in dup]
            raise DataError(f"recipes {', '.join(twins)} are identical (vary: {min(dup)}): "
                            "a study needs each source once per family")
        out.append(sorted(names, key=lambda n: order.get(recipes[n].get("vary", "all"), len(order))))
    return out


def has_pairs(config) -> bool:
    """A study figure joins the report only when it has something to show: a pair to compare."""
    return bool(config["study"]["pairs"] or default_pairs(config["runs"], runs(config)))


def has_families(config) -> bool:
    """... or a family of recipes that differ only in what they vary."""
    try:
        return bool(families(runs(config)))
    except DataError:  # twin recipes: variance.py names them in its one-line error
        return True
