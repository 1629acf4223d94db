"""A replica starved of CPU by other processes stops the measurement with one line, instead of a
silent wait that ended, 300 s later, with the variant recorded as failed (which a rerun skips).

The watch's rule is played on made-up counters; then the kernel is asked: an idle-priority process
sharing its core with a busy normal one is found starved, and the normal one is not; last, ``measure
latency`` with every core kept busy stops with one line, records nothing as failed, and measures
the variant once the cores are free."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import load_bench
from measure.replicas import usable_cpus
from measure.starvation import StarvationWatch, read_run_state

LINUX_SCHEDULER = (Path("/proc/self/schedstat").is_file() and hasattr(os, "SCHED_IDLE")
                   and hasattr(os, "sched_setaffinity"))
needs_linux_scheduler = pytest.mark.skipif(not LINUX_SCHEDULER,
                                           reason="needs Linux: /proc/<pid>/schedstat, SCHED_IDLE, CPU affinity")


class Played:
    """A clock and a reader that play (seconds, runnable, ns run) samples in turn; (seconds, None):
    nothing to read."""

    def __init__(self, samples: list[tuple]):
        self.samples, self.seen = samples, None

    def clock(self) -> float:
        now, *seen = self.samples.pop(0)
        self.seen = None if seen == [None] else tuple(seen)
        return now

    def read(self, pid: int):
        return self.seen


def _watch(samples, after_s=3.0) -> list[float | None]:
    played = Played(samples)
    watch = StarvationWatch(1, after_s, read=played.read, clock=played.clock)
    return [watch.check() for _ in range(len(played.samples))]


MS = 10**6  # ns in a millisecond


def test_a_runnable_child_that_barely_runs_is_starved_after_after_s():
    samples = [(t, True, 3 * MS * t) for t in range(6)]                        # 3 ms of CPU a second
    assert _watch(samples) == [None, None, None, 3.0, 4.0, 5.0]


def test_running_sleeping_or_vanishing_restart_the_count():
    samples = [(t, True, 3 * MS * t) for t in range(3)]
    samples.append((3, True, 900 * MS))                                        # ran most of a second
    samples += [(t, True, 900 * MS) for t in range(4, 7)]
    assert _watch(samples) == [None] * 6 + [3.0]                               # counted from 3, not from 0
    asleep = [(t, False, 0) for t in range(8)]                                 # waits for work: not runnable
    assert _watch(asleep) == [None] * 8
    dozing = [(t, t != 3, 0) for t in range(6)]                                # asleep at one sample
    assert _watch(dozing) == [None] * 6
    blind = [(0, True, 0), (1, True, 0), (2, None), (3, True, 0), (4, True, 0), (5, True, 0), (6, True, 0)]
    assert _watch(blind) == [None] * 6 + [3.0]                                 # restarted once unreadable
    # the threshold: running 5% of each interval still counts as starved, 6% does not
    assert _watch([(t, True, 50 * MS * t) for t in range(5)])[-1] == 4.0
    assert _watch([(t, True, 60 * MS * t) for t in range(5)])[-1] is None


SPIN = "import os, sys\nos.sched_setaffinity(0, {{int(sys.argv[1])}})\n{idle}while True: pass\n"


@contextmanager
def _spinners(cpus: list[int], idle: bool = False):
    """A busy process pinned to each of ``cpus``, at normal priority or at idle priority."""
    code = SPIN.format(idle="os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n" if idle else "")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(cpu)]) for cpu in cpus]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _starved_within(pid: int, limit_s: float, after_s: float = 2.0) -> float | None:
    watch = StarvationWatch(pid, after_s)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        found = watch.check()
        if found is not None:
            return found
        time.sleep(0.25)
    return None


@needs_linux_scheduler
def test_the_kernel_shows_an_idle_process_behind_a_busy_one_as_starved_and_the_busy_one_as_not():
    """Both busy on one core: the normal one runs (even with some other process there too), the
    idle-priority one is starved."""
    cpu = usable_cpus()[-1]
    with _spinners([cpu], idle=True) as (idle,), _spinners([cpu]) as (normal,):
        assert read_run_state(idle.pid) is not None   # what each was doing at the start: not asked
        assert _starved_within(normal.pid, limit_s=3.0) is None
        assert _starved_within(idle.pid, limit_s=15.0) is not None


@needs_linux_scheduler
def test_measure_stops_with_one_line_when_every_core_is_busy_and_records_no_failure(tmp_path, zoo, monkeypatch,
                                                                                    capsys):
    import measure.replicas
    from measure.cli import main as measure_main
    from test_harness import _profile
    from traces.bundle import TraceBundle

    monkeypatch.setattr(measure.replicas, "STARVED_AFTER_S", 2.0)
    profile = _profile(tmp_path, zoo, sizes=(1,), precisions=("fp32",), replica="process")
    out = tmp_path / "bundle"
    with _spinners(usable_cpus()):
        code = measure_main(["latency", str(profile), "--out", str(out)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("progress: ")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: replica cnn-small/fp32/cpu: ready to run but given "
                                                   "almost no CPU for "), err
    assert "idle priority" in lines[0] and "run again when a core is free" in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".bundle.parts/failed__*"))   # no failure recorded
    assert measure_main(["latency", str(profile), "--out", str(out)]) == 0   # the cores free: measured, not skipped
    bundle = TraceBundle.load(out)
    assert not bundle.meta.get("failed") and set(bundle.service["variant"]) == {"cnn-small/fp32/cpu"}


def test_the_watchs_cost_is_benchmarked_per_batch(capsys):
    pipe_poll = load_bench("pipe_poll")
    assert pipe_poll.main(["--round-trips", "200", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["send + recv", "send + poll + recv", "the poll's cost"]
    plain, polled = (float(line.split(":")[1].split()[0]) for line in lines[:2])
    assert plain > 0 and polled > 0
    with pytest.raises(SystemExit) as refused:
        pipe_poll.main(["--round-trips", "0"])
    assert refused.value.code == 2
