"""What every script's command line shares: one-line errors and argument types."""

import argparse
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


def one_file_per_seed(**lists) -> None:
    """Lists of per-seed files given side by side (--summaries, --histories, ...) must be equally long."""
    if len({len(v) for v in lists.values()}) > 1:
        counts = ", ".join(f"{len(v)} {name}" for name, v in lists.items())
        raise DataError(f"give one file per seed to each list: {counts}")
