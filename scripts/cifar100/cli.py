"""What every script's command line shares: one-line errors and argument types."""

import argparse
import math
import sys

from .exceptions import DataError, Preempted, UserError


def run_cli(main, argv=None) -> None:
    """Run a script's ``main`` and turn UserError into ``prog: error: message`` and exit 2."""
    prog = sys.argv[0].rsplit("/", 1)[-1]
    try:
        main(argv)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Preempted as e:
        print(f"{prog}: {e}", file=sys.stderr)
        sys.exit(128 + e.signum)


def positive_int(text: str) -> int:
    """argparse type for counts and sizes: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


# The seeds the config schema allows; engine.FIXED_SEED (2**32) lies outside on purpose.
SEED_MAX = 2**32 - 1


def seed(text: str) -> int:
    """argparse type for a run seed: an integer 0..2**32-1, as in the config schema."""
    value = int(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be 0..{SEED_MAX}, got {value}")
    return value


def seconds(text: str) -> float:
    """argparse type for a duration: a finite number >= 0 (nan and inf are refused)."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text}")
    return value


def one_file_per_seed(**lists) -> None:
    """Lists of per-seed files given side by side (--summaries, --histories, ...) must be equally long."""
    if len({len(v) for v in lists.values()}) > 1:
        counts = ", ".join(f"{len(v)} {name}" for name, v in lists.items())
        raise DataError(f"give one file per seed to each list: {counts}")
