"""The folder a workflow runs in: say so when another snakemake run is using it.

A running snakemake keeps lock files in ``.snakemake/locks`` and marks the outputs of its running
jobs as incomplete. A second snakemake started in the same folder then stops with
IncompleteFilesException and advises ``--rerun-incomplete``, which would be wrong advice: those
files are not broken, another run is writing them. The Snakefile calls ``refuse_if_in_use``
while it is read, before Snakemake looks at any output.
"""

from pathlib import Path

from .exceptions import UserError

LOCKS = Path(".snakemake") / "locks"
# Invocations that only look (or free the folder): they never take the locks, so they may run
# beside a running workflow, and --unlock must work when a killed run left its locks behind.
LOOKING_FLAGS = ("--unlock", "--nolock", "-n", "--dry-run", "--dryrun", "--summary", "-S",
                 "--detailed-summary", "-D", "--list", "-l", "--list-rules", "--list-target-rules", "--lt",
                 "--list-changes", "--lc", "--list-code-changes", "--list-input-changes", "--list-params-changes",
                 "--lint", "--dag", "--rulegraph", "--filegraph", "--d3dag", "--cleanup-metadata", "--cm",
                 "--report", "--containerize", "--archive", "--print-compilation", "--version", "-v",
                 "--help", "-h")


class FolderInUse(UserError):
    pass


def _looking(argv) -> bool:
    return any(a in LOOKING_FLAGS or a.split("=", 1)[0] in LOOKING_FLAGS or a.startswith("--list")
               for a in argv[1:])


def refuse_if_busy(workdir, argv) -> None:
    """FolderInUse when ``workdir`` holds another snakemake's locks and ``argv`` (the snakemake
    command line) is a run that would take them."""
    locks = Path(workdir) / LOCKS
    held = sorted(p.name for p in locks.glob("*.lock")) if locks.is_dir() else []
    if held and not _looking(argv):
        raise FolderInUse(
            f"{Path(workdir).resolve()} is in use by another snakemake run ({LOCKS} holds its locks): wait for "
            "it to finish, or run this one in another folder (-d). If no snakemake runs here any more (one was "
            "killed), free the folder with `snakemake --unlock` and the same options, then run again")
