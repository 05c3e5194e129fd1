"""Errors a user can act on: scripts print them as one line and exit non-zero."""

import argparse
import sys


class UserError(Exception):
    """Bad input or environment, reported as a single line naming the file or key at fault."""


class DataError(UserError):
    pass


class CheckpointError(UserError):
    pass


class ConfigError(UserError):
    pass


class OutputError(UserError):
    pass


class Diverged(UserError):
    pass


class Preempted(Exception):
    """Training stopped on SIGTERM/SIGUSR1 after writing a resume checkpoint."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum}; resume checkpoint written")
        self.signum = signum


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
