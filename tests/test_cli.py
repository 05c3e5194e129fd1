"""Every script is a thin CLI whose --help documents every flag and its default."""

import re

import pytest

from helpers import SCRIPTS, load_script

NAMES = sorted(p.stem for p in SCRIPTS.glob("*.py"))


def test_every_script_is_covered():
    assert {"download", "train", "evaluate", "samples", "curves", "confusion", "errors", "report", "gradcam",
            "aggregate", "compare", "bench"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_help_documents_every_flag_and_its_default(name, capsys):
    module = load_script(name)
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert module.__doc__.strip().splitlines()[0] in text  # the docstring is the description
    entries = re.split(r"\n  (?=-)", text.split("options:")[1])[1:]
    assert entries, text
    for entry in entries:
        assert entry.startswith("-h") or "default" in entry or "required" in entry, f"{name}: {entry}"
