"""Stop training ahead of its Slurm job's time limit, whether or not Slurm sends a warning signal.

At the limit Slurm sends SIGTERM and kills the job KillWait seconds later (30 s by default): too
little to be sure that a 135 MB checkpoint is written. `sbatch --signal=USR1@N` would warn
earlier, but it reaches job steps only, and the Slurm executor plugin runs array tasks without
one. So training asks Slurm when its own job ends and sends itself SIGUSR1 `margin` seconds
before: resume.StopFlag checkpoints after the current step and train.py exits 138 (128 + USR1),
in a plain job and in an array task alike. Snakemake retries the job, which resumes from last.pt.

    with deadline.stop_before_end(margin_s, log):
        engine.train(...)
"""

import math
import os
import re
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from datetime import datetime

from .exceptions import UserError

# Where a user sets the margin; named in the error below.
MARGIN_KEY = "profiles/slurm/config.yaml: set-resources: train: checkpoint_margin_s"
# squeue/scontrol print times in the format SLURM_TIME_FORMAT asks for; "standard" is ISO 8601.
QUERY_ENV = {"SLURM_TIME_FORMAT": "standard"}


class DeadlineError(UserError):
    pass


def parse_end_time(text: str) -> float | None:
    """Unix time of an EndTime as squeue/scontrol print it (local time, ISO 8601).

    None for a job without a limit ("Unknown", "N/A", "NONE", empty): nothing to stop ahead of.
    """
    text = text.strip()
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _run(cmd: list[str]) -> str | None:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                           env={**os.environ, **QUERY_ENV})
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout if p.returncode == 0 else None


def job_end_time(env=os.environ, run=_run) -> float | None:
    """Unix time at which this Slurm job reaches its time limit; None outside Slurm or without one.

    Slurm >= 23.02 exports SLURM_JOB_END_TIME to the batch script, but the executor plugin drops
    SLURM_* variables before running the rule, so squeue (then scontrol) are asked by job id.
    An array task is asked for as <array id>_<task id>: the first task's SLURM_JOB_ID is the
    array's id, for which squeue lists every task, the pending ones (other end times) first.
    """
    job = env.get("SLURM_JOB_ID")
    if not job:
        return None
    if env.get("SLURM_JOB_END_TIME", "").isdigit():
        return float(env["SLURM_JOB_END_TIME"])
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    out = run(["squeue", "--noheader", "--jobs", job, "--format", "%e"])
    if out and out.strip():
        return parse_end_time(out.splitlines()[0])
    out = run(["scontrol", "show", "job", job])
    m = re.search(r"\bEndTime=(\S+)", out or "")
    return parse_end_time(m[1]) if m else None


@contextmanager
def stop_before_end(margin_s: float | None, log, env=os.environ, run=_run, now=time.time):
    """Within the block, send SIGUSR1 to this process `margin_s` seconds before the job's end.

    Does nothing outside a Slurm job, for a job without a time limit, or when margin_s is None.
    Just before firing it asks Slurm again, so a limit raised meanwhile (scontrol update) moves
    the stop. Raises DeadlineError when the job is too short to leave any time before the margin.
    """
    if margin_s is not None and not (math.isfinite(margin_s) and margin_s >= 0):
        # nan compares false with everything: the stop would fire at once, before any checkpoint
        raise DeadlineError(f"checkpoint margin {margin_s} s: must be a finite number >= 0 ({MARGIN_KEY})")
    job = env.get("SLURM_JOB_ID")
    end = job_end_time(env, run) if margin_s is not None and job else None
    if end is None:
        if margin_s is not None and job:
            log(f"slurm job {job}: no time limit found; relying on the SIGTERM at the limit")
        yield
        return
    left = end - now()
    if left <= margin_s:
        raise DeadlineError(f"slurm job {job} ends in {left:.0f} s, within the {margin_s:g} s checkpoint "
                            f"margin: raise the train rule's runtime or lower {MARGIN_KEY}")
    done = threading.Event()

    def fire():
        # A limit raised while the job ran (scontrol update) moves the stop instead of firing.
        later = job_end_time(env, run)
        if later is not None and later - now() > margin_s + 1:
            schedule(later)
            return
        if not done.is_set():
            log(f"slurm job {job}: time limit in {end - now():.0f} s, stopping {margin_s:g} s ahead of it")
            os.kill(os.getpid(), signal.SIGUSR1)

    timers = []

    def schedule(at):
        nonlocal end
        end = at
        t = threading.Timer(max(0.0, at - margin_s - now()), fire)
        t.daemon = True  # never keeps a finished training alive
        timers.append(t)
        t.start()

    schedule(end)
    log(f"slurm job {job}: time limit at {time.strftime('%H:%M:%S', time.localtime(end))}; "
        f"checkpointing and stopping {margin_s:g} s before it")
    try:
        yield
    finally:
        done.set()
        for t in timers:
            t.cancel()
