"""Loading and validating config.yaml: the schema (config.schema.yaml) holds every key, its type,
range and default; ``validate`` checks a config against it, fills in the defaults and applies the
cross-key rules a schema cannot say. The Snakefile and the scripts run standalone read the same
resolved config, so a default lives in one place."""

import copy
import functools
import math
from pathlib import Path

import yaml

from .exceptions import ConfigError

SCHEMA = Path(__file__).with_name("config.schema.yaml")
REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"
# The official CIFAR-100 training split (for checks that need its size before it is downloaded).
CIFAR100_TRAIN_SIZE = 50_000


def _where(error) -> str:
    path = "/".join(str(p) for p in error.absolute_path)
    return path or "(top level)"


_SCALARS = {"integer": int, "number": (int, float), "boolean": bool}


def _coerce(value, schema: dict):
    """Strings from ``snakemake --config`` turned into the number or boolean the schema expects."""
    kind = schema.get("type")
    if isinstance(value, str) and kind in _SCALARS:
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return parsed if isinstance(parsed, _SCALARS[kind]) else value
    if isinstance(value, list) and kind == "array":
        return [_coerce(v, schema.get("items", {})) for v in value]
    if isinstance(value, dict) and kind == "object":
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for k, v in value.items():
            sub = props.get(k, extra if isinstance(extra, dict) else {})
            value[k] = _coerce(v, sub)
    return value


def fill_defaults(value, schema: dict):
    """Add, in place, every key the schema gives a ``default:`` and ``value`` lacks (recursively,
    recipes included): the schema is the one place defaults live."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    props, extra = schema.get("properties", {}), schema.get("additionalProperties")
    for key, sub in props.items():
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
    for key, v in value.items():
        fill_defaults(v, props.get(key, extra if isinstance(extra, dict) else {}))
    return value


@functools.lru_cache(maxsize=1)
def _schema_text() -> str:
    return SCHEMA.read_text()


def schema() -> dict:
    return yaml.safe_load(_schema_text())


def _node(keys) -> dict:
    node = schema()
    for k in keys:
        node = node["properties"][k] if "properties" in node else node["additionalProperties"]["properties"][k]
    return node


def default(*keys):
    """The schema's default of a key, e.g. ``default("analysis", "samples")`` (argparse defaults
    of the scripts run standalone come from here)."""
    return _node(keys)["default"]


def choices(*keys) -> tuple:
    """The values the schema allows for a key, e.g. ``choices("precision")``; ``choices("recipes",
    "vary")`` for a recipe key (argparse choices and every module's list of them come from here)."""
    return tuple(_node(keys)["enum"])


def _validator(s: dict):
    """JSON-schema validation where an integer is an int (YAML's 2.0 and --config's 1e3 are not)
    and a number is finite (.nan and .inf are not)."""
    import jsonschema

    base = jsonschema.Draft202012Validator

    def is_int(_, x):
        return isinstance(x, int) and not isinstance(x, bool)

    def is_number(_, x):
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    checker = base.TYPE_CHECKER.redefine_many({"integer": is_int, "number": is_number})
    return jsonschema.validators.extend(base, type_checker=checker)(s)


def _check(value, s: dict, prefix: str = "") -> None:
    errors = sorted(_validator(s).iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(x for x in (prefix, _where(e) if e.absolute_path else "") if x) or "(top level)"
        raise ConfigError(f"config key {where}: {e.message}")


def _resolve(value, s: dict, where: str = ""):
    """Coerce command-line strings, check against the schema ``s`` (errors name ``where``/key), and
    fill in the defaults, in place."""
    _coerce(value, s)
    _check(value, s, where)
    return fill_defaults(value, s)


def validate(config: dict) -> dict:
    """Check ``config`` against the schema and across keys, fill in the schema's defaults; raise
    ConfigError naming the key.

    ``--config seeds=[0,1]`` reaches Snakemake as ['0', '1'] and ``deterministic=true`` as 'true':
    such strings are first turned, in place, into the numbers and booleans the schema asks for.
    """
    _resolve(config, schema())
    check_combinations(config)
    return config


def validate_section(name: str, value: dict) -> dict:
    """Validate and complete one top-level section on its own (e.g. ``synthetic`` given to
    download.py run standalone)."""
    return _resolve(value, schema()["properties"][name], name)


def _check_recipe(name: str, r: dict) -> None:
    if r["schedule"] == "step" and ("step_size" not in r or "gamma" not in r):
        raise ConfigError(f"config key recipes/{name}: schedule 'step' needs step_size and gamma")
    if r["schedule"] == "multistep" and ("milestones" not in r or "gamma" not in r):
        raise ConfigError(f"config key recipes/{name}: schedule 'multistep' needs milestones and gamma")
    if r["mixup"] and r["cutmix"]:
        raise ConfigError(f"config key recipes/{name}: mixup and cutmix are alternatives; set one of them to 0")
    if r["ema_model"] and not r["ema_decay"]:
        raise ConfigError(f"config key recipes/{name}/ema_model: the moving average needs ema_decay > 0")
    if r["nesterov"] and r["momentum"] == 0:
        raise ConfigError(f"config key recipes/{name}/nesterov: Nesterov momentum needs momentum > 0")


def train_size(config: dict) -> int:
    """Training images the config's dataset will have (the official split's size for cifar100)."""
    return config["synthetic"]["train_size"] if config["dataset"] == "synthetic" else CIFAR100_TRAIN_SIZE


def check_combinations(config: dict) -> None:
    """Cross-key rules a JSON schema cannot say, checked before any job starts."""
    for name in config["runs"]:
        if name not in config["recipes"]:
            raise ConfigError(f"config key runs: recipe {name!r} is not defined under recipes "
                              f"(defined: {', '.join(sorted(config['recipes']))})")
    for name, r in config["recipes"].items():
        _check_recipe(name, r)
    if config["selection"] == "best_val" and config["val_size"] >= train_size(config):
        raise ConfigError(f"config key val_size: {config['val_size']} held-out images leave nothing to train "
                          f"on: the {config['dataset']} training split has {train_size(config)} (selection best_val)")
    if config["compile"] and config["deterministic"]:
        raise ConfigError("config key compile: torch.compile is not bit-reproducible (Inductor autotunes and "
                          "caches kernel choices); use compile: false with deterministic: true")
    for a, b in config["study"]["pairs"]:
        for name in (a, b):
            if name not in config["runs"]:
                raise ConfigError(f"config key study/pairs: recipe {name!r} of pair [{a}, {b}] is not in runs")
    syn = config["synthetic"]
    if syn["num_coarse"] > syn["num_classes"]:
        raise ConfigError(f"config key synthetic/num_coarse: {syn['num_coarse']} superclasses for "
                          f"{syn['num_classes']} classes (at most one per class)")
    if syn["train_size"] < syn["num_classes"]:
        raise ConfigError(f"config key synthetic/train_size: {syn['train_size']} training images cannot hold "
                          f"all {syn['num_classes']} classes (at least one image per class)")


# What a shell or a Snakemake pattern acts on. Config strings and the working directory reach the
# job scripts Snakemake's Slurm executor writes (and, without pass-command-as-script, a second
# shell inside sbatch --wrap="..."), where the rules' own :q quoting does not reach; braces are
# wildcards to Snakemake. Spaces and non-ASCII letters stay allowed.
SHELL_SYNTAX = frozenset("$`\"'\\;&|<>{}\n\r")


def _strings(value, where: str):
    """(key path, text) of every string in ``value``: values, list items and mapping keys
    (recipe names) alike."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield where or "(top level)", str(k)
            yield from _strings(v, f"{where}/{k}" if where else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _strings(v, f"{where}/{i}")


def check_workflow_config(config: dict, workdir, workflow_dir, configfiles) -> dict:
    """What the Snakefile checks before any job: the schema (defaults filled in, every key and
    combination checked) and no shell syntax in any string, folder or config file name."""
    validate(config)
    refuse_shell_syntax(config, workdir, workflow_dir, configfiles)
    return config


def refuse_shell_syntax(config: dict, workdir, workflow_dir=None, configfiles=()) -> None:
    """Raise ConfigError, naming the key (or folder, or file), if any string of the resolved
    ``config``, the working directory, the workflow's folder or a config file's path holds shell
    syntax (SHELL_SYNTAX): each of them is written into every job's command."""
    texts = [(f"config key {where}", text) for where, text in _strings(config, "")]
    texts.append(("working directory", str(workdir)))
    if workflow_dir is not None:
        texts.append(("workflow folder", str(workflow_dir)))
    texts += [("config file", str(path)) for path in configfiles]
    for what, text in texts:
        bad = "".join(sorted(set(text) & SHELL_SYNTAX))
        if bad:
            raise ConfigError(f"{what}: {text!r} holds shell syntax ({bad!r}), which a job script could run or "
                              f"Snakemake read as a wildcard; use a name without $ ` \" ' \\ ; & | < > {{ }} "
                              f"or line breaks (spaces and non-ASCII letters are fine)")


def load(path=REPO_CONFIG) -> dict:
    """The config file at ``path``, validated and completed with the schema's defaults."""
    return validate(read(path))


def read(path=REPO_CONFIG) -> dict:
    """The config file at ``path`` as written (a mapping), not yet validated; one line if unreadable."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: config file not found") from e
    except (OSError, UnicodeDecodeError) as e:  # a folder, unreadable, not text
        raise ConfigError(f"{path}: cannot read the config file ({getattr(e, 'strerror', None) or e})") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML ({getattr(e, 'problem', None) or e})") from e
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys")
    return config
