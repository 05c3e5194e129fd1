"""Atomic file output: every file is written to a unique temp file beside it, then renamed.

A crash therefore never leaves a half-written checkpoint, CSV, NPZ or figure, and two runs that
write at the same time never share a temp path (pid + random suffix). Temp names carry this
project's marker, so the cleanup of a killed writer's leftovers removes only files it made: a
user's ``.notes.tmp`` or ``.cfg.tmpdir`` in the same folder is never touched.
"""

import csv
import json
import os
import re
import uuid
from contextlib import contextmanager
from pathlib import Path

from .exceptions import OutputError


@contextmanager
def atomic_path(path):
    """Yield a temp path next to ``path``; on success rename it over ``path``, else delete it."""
    path = Path(path)
    ensure_dir(path.parent)
    tmp = path.with_name(temp_name(path.name))
    try:
        yield tmp
        _fsync(tmp)  # the bytes reach the disk before the name does: no empty file after a crash
        os.replace(tmp, path)
        _fsync(path.parent)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        if tmp.exists():
            tmp.unlink()


def ensure_dir(folder) -> Path:
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create folder {folder}: {e.strerror}") from e
    return folder


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ".model.pt.1234-0a1b2c3d.cifar100-partial.pt": the target's name, writer pid and random part,
# the marker, and the target's suffix again (savefig and torch pick the format from it).
TEMP_MARKER = "cifar100-partial"
_TEMP = re.compile(rf"^\.(?P<name>.+)\.\d+-[0-9a-f]{{8}}\.{TEMP_MARKER}(?P<suffix>\.[^.]*)?$")


def temp_name(name: str) -> str:
    return f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.{TEMP_MARKER}{Path(name).suffix}"


def is_temp_name(name: str) -> bool:
    """True only for a name ``temp_name`` makes (suffix included), never for a user's file."""
    m = _TEMP.match(name)
    return bool(m) and (m["suffix"] or "") == Path(m["name"]).suffix


def remove_stale_temps(folder) -> list[Path]:
    """Delete temp files that a killed writer of this project left in ``folder`` (one run's
    folder: no other writer is active there while its training starts); returns them. Only plain
    files named by ``temp_name`` go: nothing a user made, no folder, no link."""
    removed = []
    for tmp in Path(folder).iterdir():
        if is_temp_name(tmp.name) and tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path, rows: list[dict], fieldnames=None) -> None:
    fieldnames = fieldnames or (list(rows[0]) if rows else [])
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)


def write_npz(path, **arrays) -> None:
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def read_json(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise OutputError(f"{path}: file not found") from e
    except IsADirectoryError as e:
        raise OutputError(f"{path}: a folder, not a JSON file") from e
    except OSError as e:
        raise OutputError(f"{path}: cannot read ({e.strerror or e})") from e
    except RecursionError as e:
        raise OutputError(f"{path}: not valid JSON (nested too deeply)") from e
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, and integers of > 4300 digits
        raise OutputError(f"{path}: not valid JSON ({e})") from e
