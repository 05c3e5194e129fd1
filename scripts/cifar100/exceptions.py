"""Errors a user can act on: scripts print them as one line and exit non-zero."""


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
