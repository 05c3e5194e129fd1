"""Loading and validating config.yaml (the same schema the Snakefile validates against)."""

import copy
from pathlib import Path

import yaml

from .exceptions import ConfigError

SCHEMA = Path(__file__).with_name("config.schema.yaml")
REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"


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


def schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def validate(config: dict) -> dict:
    """Check ``config`` against the schema and across keys, fill in the schema's defaults; raise
    ConfigError naming the key.

    ``--config seeds=[0,1]`` reaches Snakemake as ['0', '1'] and ``deterministic=true`` as 'true':
    such strings are first turned, in place, into the numbers and booleans the schema asks for.
    """
    import jsonschema

    s = schema()
    _coerce(config, s)
    errors = sorted(jsonschema.Draft202012Validator(s).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise ConfigError(f"config key {_where(e)}: {e.message}")
    fill_defaults(config, s)
    check_runs(config)
    return config


def validate_recipe(name: str, recipe: dict) -> dict:
    """Validate one recipe on its own (train.py --recipe-json)."""
    validate({"data_dir": "-", "dataset": "cifar100", "seeds": [0], "runs": [name],
              "selection": "last", "recipes": {name: recipe}})
    return recipe


def check_runs(config: dict) -> None:
    """Cross-key rules a JSON schema cannot say."""
    for name in config["runs"]:
        if name not in config["recipes"]:
            raise ConfigError(f"config key runs: recipe {name!r} is not defined under recipes "
                              f"(defined: {', '.join(sorted(config['recipes']))})")
    for name, r in config["recipes"].items():
        if r["schedule"] == "step" and ("step_size" not in r or "gamma" not in r):
            raise ConfigError(f"config key recipes/{name}: schedule 'step' needs step_size and gamma")
        if r["nesterov"] and r["momentum"] == 0:
            raise ConfigError(f"config key recipes/{name}/nesterov: Nesterov momentum needs momentum > 0")


def load(path=REPO_CONFIG) -> dict:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: config file not found") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys")
    return validate(config)
