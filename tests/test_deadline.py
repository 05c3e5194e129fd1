"""cifar100.deadline on the CPU, with fake Slurm answers (tests/test_slurm.py runs it on a real Slurm)."""

import signal
import threading
import time
from datetime import datetime
from types import SimpleNamespace

import pytest

from cifar100 import deadline


def iso(t: float) -> str:
    """A Unix time as squeue prints %e with SLURM_TIME_FORMAT=standard (local time, seconds)."""
    return datetime.fromtimestamp(t).strftime("%Y-%m-%dT%H:%M:%S")


class FakeSlurm:
    """Stands in for squeue/scontrol: answers `answers` in turn (the last one repeats), records calls."""

    def __init__(self, *answers):
        self.answers, self.calls = list(answers), []

    def __call__(self, cmd):
        self.calls.append(cmd)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class Clock:
    """deadline's clock and timers, moved by the test: a timer fires when the test advances the
    clock past it, so no test waits for a real timer (and none depends on how fast it runs)."""

    def __init__(self, now: float):
        self.now, self.timers = now, []

    def __call__(self) -> float:
        return self.now

    def Timer(self, interval, fn):
        timer = SimpleNamespace(at=self.now + interval, interval=interval, fn=fn, daemon=False, started=False,
                                cancelled=False)
        timer.start = lambda: setattr(timer, "started", True)
        timer.cancel = lambda: setattr(timer, "cancelled", True)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for timer in list(self.timers):  # a timer that fires may schedule another
            if timer.started and not timer.cancelled and timer.at <= self.now and not getattr(timer, "fired", False):
                timer.fired = True
                timer.fn()


@pytest.fixture
def clock(monkeypatch):
    """A Clock at a whole second (squeue prints whole seconds), driving deadline's timers."""
    c = Clock(float(int(time.time())))
    monkeypatch.setattr(deadline, "threading", SimpleNamespace(Timer=c.Timer, Event=threading.Event))
    return c


@pytest.fixture
def usr1():
    """Records SIGUSR1 deliveries (an Event) instead of the default action, which ends the process."""
    got = threading.Event()
    previous = signal.signal(signal.SIGUSR1, lambda *_: got.set())
    yield got
    signal.signal(signal.SIGUSR1, previous)


def test_parse_end_time_reads_iso_local_time_and_no_limit_as_none():
    assert deadline.parse_end_time("2031-05-04T03:02:01\n") == datetime(2031, 5, 4, 3, 2, 1).timestamp()
    for no_limit in ("Unknown", "N/A", "NONE", "", "INVALID"):
        assert deadline.parse_end_time(no_limit) is None


def test_end_time_outside_slurm_asks_nobody():
    fake = FakeSlurm("2031-05-04T03:02:01")
    assert deadline.job_end_time({}, fake) is None
    assert fake.calls == []


def test_end_time_from_the_environment_when_slurm_exports_it():
    fake = FakeSlurm(None)
    assert deadline.job_end_time({"SLURM_JOB_ID": "7", "SLURM_JOB_END_TIME": "1900000000"}, fake) == 1.9e9
    assert fake.calls == []


def test_end_time_from_squeue_for_this_job():
    fake = FakeSlurm("2031-05-04T03:02:01\n")
    assert deadline.job_end_time({"SLURM_JOB_ID": "42"}, fake) == datetime(2031, 5, 4, 3, 2, 1).timestamp()
    assert fake.calls == [["squeue", "--noheader", "--jobs", "42", "--format", "%e"]]


def test_an_array_task_asks_for_itself_not_for_its_array():
    # The first task's SLURM_JOB_ID is the array's id: squeue would list every task of the array.
    fake = FakeSlurm("2031-05-04T03:02:01\n")
    env = {"SLURM_JOB_ID": "20", "SLURM_ARRAY_JOB_ID": "20", "SLURM_ARRAY_TASK_ID": "1"}
    assert deadline.job_end_time(env, fake) == datetime(2031, 5, 4, 3, 2, 1).timestamp()
    assert fake.calls == [["squeue", "--noheader", "--jobs", "20_1", "--format", "%e"]]


def test_end_time_falls_back_to_scontrol_when_squeue_fails():
    show = ("JobId=42 JobName=x\n   RunTime=00:00:05 TimeLimit=00:02:00\n"
            "   StartTime=2031-05-04T03:00:01 EndTime=2031-05-04T03:02:01 Deadline=N/A\n")
    fake = FakeSlurm(None, show)
    assert deadline.job_end_time({"SLURM_JOB_ID": "42"}, fake) == datetime(2031, 5, 4, 3, 2, 1).timestamp()
    assert [c[0] for c in fake.calls] == ["squeue", "scontrol"]
    assert deadline.job_end_time({"SLURM_JOB_ID": "42"}, FakeSlurm(None)) is None


def test_signals_itself_margin_seconds_before_the_end(usr1, clock):
    logs = []
    fake = FakeSlurm(iso(clock.now + 6.5))  # squeue's whole seconds: the job ends 6 s from now
    with deadline.stop_before_end(5.0, logs.append, {"SLURM_JOB_ID": "9"}, fake, now=clock):
        (timer,) = clock.timers
        assert timer.started and timer.daemon and timer.interval == 1.0  # 6 s left, 5 s margin
        clock.advance(0.9)
        assert not usr1.is_set() and len(fake.calls) == 1
        clock.advance(0.1)
        assert usr1.wait(5.0), logs  # sent by this process to itself: handled at once
    assert len(fake.calls) == 2  # Slurm asked again just before stopping
    assert "slurm job 9: time limit at" in logs[0] and "5 s before it" in logs[0]
    assert logs[1] == "slurm job 9: time limit in 5 s, stopping 5 s ahead of it"


def test_no_signal_after_the_block_ends(usr1, clock):
    fake = FakeSlurm(iso(clock.now + 2))  # would stop 1 s from now
    with deadline.stop_before_end(1.0, lambda m: None, {"SLURM_JOB_ID": "9"}, fake, now=clock):
        pass
    (timer,) = clock.timers
    assert timer.cancelled
    clock.advance(5)
    assert not usr1.is_set() and len(fake.calls) == 1  # the timer never ran


def test_a_raised_limit_moves_the_stop(usr1, clock):
    fake = FakeSlurm(iso(clock.now + 2), iso(clock.now + 3600))  # at the first stop, Slurm says an hour later
    with deadline.stop_before_end(1.0, lambda m: None, {"SLURM_JOB_ID": "9"}, fake, now=clock):
        clock.advance(1)
        assert len(fake.calls) == 2 and not usr1.is_set()
        first, second = clock.timers
        assert first.interval == 1.0 and second.started and second.interval == 3600 - 1 - 1
    assert second.cancelled and not usr1.is_set()


def test_outside_slurm_or_without_a_limit_nothing_is_armed(usr1, clock):
    logs = []
    with deadline.stop_before_end(0.0, logs.append, {}, FakeSlurm(iso(clock.now)), now=clock):
        clock.advance(1)
    assert logs == [] and not clock.timers and not usr1.is_set()
    with deadline.stop_before_end(60.0, logs.append, {"SLURM_JOB_ID": "9"}, FakeSlurm("Unknown")):
        pass
    assert logs == ["slurm job 9: no time limit found; relying on the SIGTERM at the limit"]
    with deadline.stop_before_end(None, logs.append, {"SLURM_JOB_ID": "9"}, FakeSlurm(iso(time.time()))):
        pass
    assert len(logs) == 1


def test_a_job_shorter_than_the_margin_is_a_one_line_error():
    with pytest.raises(deadline.DeadlineError) as e:
        with deadline.stop_before_end(300, print, {"SLURM_JOB_ID": "9"}, FakeSlurm(iso(time.time() + 120))):
            pytest.fail("the block must not run")
    assert "\n" not in str(e.value) and "checkpoint_margin_s" in str(e.value) and "runtime" in str(e.value)
