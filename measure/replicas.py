"""Model replicas in their own processes, as a real CPU server runs them.

Threads in one Python process serialise on the GIL between the many small kernels of a small
model: two MobileNetV2-int8 replicas as threads each ran a batch of 8 in 18-20 ms on this machine,
against 7.8 ms alone, while two replica processes ran it in 6.5-7.2 ms each. So ``measure serve``
gives every replica a process of its own (``ProcessRunner``), and ``measure latency`` times batches
through the very same path (request sent to the replica process, run, result back), so that a
``service`` row is what one server replica costs per batch, inter-process hop included.

A ``RunnerRecipe`` is everything a replica process needs to build its model (it is pickled to the
child; the child loads the zoo itself), so nothing of torch crosses the process boundary.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from traces.errors import InputError

from .starvation import StarvationWatch

__all__ = ["ProcessRunner", "RunnerRecipe", "build_runner", "front_end_cpus", "pinned", "replica_cpus",
           "run_in_background"]

START_TIMEOUT_S = 300.0   # a pruned variant may fine-tune once on first use
WARM_RUNS = 3             # per warm batch size, in the child before it reports ready
STARVED_AFTER_S = 30.0    # ready to run, almost no CPU, this long in a row: too busy a machine to measure on
CHECK_EVERY_S = 1.0       # how often a wait for the child looks at whether it is starved


@dataclass(frozen=True)
class RunnerRecipe:
    """How to build one variant's ``ModelRunner``: zoo, task, variant id, threads, inputs in serving order."""

    zoo_dir: str
    task: str
    variant: str
    threads: int = 1
    rows: tuple[int, ...] | None = None        # rows of the zoo's evaluation split, None: all, in order
    warm_batch_sizes: tuple[int, ...] = (1,)
    background: bool = True                     # run below the front end's priority (run_in_background)
    cpus: tuple[int, ...] | None = None         # pin the child to these CPUs (see replica_cpus)
    spin: bool = True                           # poll for the next batch instead of sleeping (SPIN)


def build_runner(recipe: RunnerRecipe, phases_s: dict | None = None):
    """Build the recipe's ``ModelRunner`` in this process (torch threads set as the recipe says);
    ``phases_s`` gets the seconds spent importing torch and the model code (import_s), loading the
    task's data (load_s) and loading the checkpoint and building the variant (build_s)."""
    t0 = time.perf_counter()
    import torch

    from .profile import VariantSpec
    from .variants import ModelRunner, load_variant
    from .zoo import load_zoo_task

    t1 = time.perf_counter()
    torch.set_num_threads(recipe.threads)
    zoo = Path(recipe.zoo_dir)
    data = load_zoo_task(zoo, recipe.task)
    inputs = data.x_eval if recipe.rows is None else data.x_eval.index_select(0, torch.as_tensor(recipe.rows))
    spec = VariantSpec.parse(recipe.variant)
    t2 = time.perf_counter()
    runner = ModelRunner(load_variant(zoo, recipe.task, spec, data), inputs, spec)
    if phases_s is not None:
        phases_s.update(import_s=t1 - t0, load_s=t2 - t1, build_s=time.perf_counter() - t2)
    return runner


# A replica that sleeps between batches runs its next batch slower: on this VM a MobileNetV2-int8
# batch of 1 took 7.7 ms at 30% load against 5.2 ms back to back (the core drops its clock and
# caches while idle, and the hypervisor may deschedule an idle vCPU). So a replica polls its pipe
# while it waits, like a busy-polling inference server on a dedicated core; at idle priority this
# costs nothing that a normal process wants. The harness times with the same setting.


def run_in_background() -> None:
    """Schedule this process below every normal one (Linux ``SCHED_IDLE``; elsewhere nice 19).

    With as many busy replicas as cores, a front-end thread that wakes (the dispatcher at an
    arrival, a batcher at its timeout) otherwise waits for a model's time slice to end: measured
    here with two busy processes on two cores, a dispatcher woke 2.0 ms late at the median, even
    with the replicas at nice 10; with them in ``SCHED_IDLE`` it woke 14 us late (p99 36 us).
    Production servers get the same effect by giving the front end cores of its own.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


def usable_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no pinning
        return []


def replica_cpus() -> Iterator[tuple[int, ...] | None]:
    """CPUs for successive replicas: the last CPU first, then downwards, cycling.

    The front end keeps the first CPU (``front_end_cpus``); the harness times on the last one,
    which is where the first replica serves, so the profile and the server run a model on the same
    core. With more replicas than CPUs - 1, the extra ones share, at idle priority, the front end's.
    On two cores pinning took a single replica's p50 latency error from -23% to -1%: unpinned, the
    scheduler kept putting front-end threads on the replica's core.
    """
    cpus = usable_cpus()
    if len(cpus) < 2:
        return itertools.repeat(None)
    return itertools.cycle([(c,) for c in reversed(cpus)])


def front_end_cpus() -> set[int] | None:
    cpus = usable_cpus()
    return {cpus[0]} if len(cpus) >= 2 else None


@contextlib.contextmanager
def pinned(cpus: set[int] | None):
    """Run the calling thread (and the threads it starts) on ``cpus``; restore afterwards."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _replica_main(conn, recipe: RunnerRecipe) -> None:
    """The child: build, warm, report ready (with the seconds each phase took), then run each
    batch of sample indices until told to stop."""
    try:
        if recipe.background:
            run_in_background()
        if recipe.cpus:
            os.sched_setaffinity(0, set(recipe.cpus))
        phases_s: dict = {}
        runner = build_runner(recipe, phases_s)
        warm_from = time.perf_counter()
        n = runner.inputs.shape[0]
        for size in recipe.warm_batch_sizes:
            for _ in range(WARM_RUNS):
                runner.run([k % n for k in range(size)])
        phases_s["warmup_s"] = time.perf_counter() - warm_from
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        return
    conn.send(("ready", phases_s, None))
    poll = conn.poll
    while True:
        if recipe.spin:
            while not poll(0):
                pass
        indices = conn.recv()
        if indices is None:
            return
        try:
            conn.send(("ok",) + runner.run(indices))
        except BaseException as exc:  # noqa: BLE001
            conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
            return


class ProcessRunner:
    """A ``BatchRunner`` whose model runs in a child process; ``run`` blocks with the GIL released.

    The child starts at construction and builds its model concurrently with its siblings;
    ``warmup`` waits until it is ready; ``startup_phases_s`` then holds the seconds the child
    spent in each phase of its start-up (see ``build_runner``, plus warmup_s). ``close`` stops it
    (also done when the parent exits).
    """

    def __init__(self, recipe: RunnerRecipe):
        self.recipe = recipe
        ctx = mp.get_context("spawn")  # never fork a process that may hold torch's thread pools
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_replica_main, args=(child, recipe), daemon=True,
                                 name=f"replica {recipe.variant}")
        self._proc.start()
        child.close()
        self._watch = StarvationWatch(self._proc.pid, STARVED_AFTER_S)
        self._ready = False
        self.startup_phases_s: dict[str, float] = {}

    def _receive(self, timeout_s: float | None = None):
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left_s = CHECK_EVERY_S if deadline is None else min(CHECK_EVERY_S, deadline - time.monotonic())
            if left_s <= 0:
                self.close()
                raise RuntimeError(f"replica {self.recipe.variant}: not ready after {timeout_s:.0f} s")
            if self._conn.poll(left_s):
                break
            starved_s = self._watch.check()
            if starved_s is not None:
                self.close()
                raise InputError(f"replica {self.recipe.variant}", self._starved(starved_s))
        try:
            reply = self._conn.recv()
        except EOFError:
            raise RuntimeError(f"replica {self.recipe.variant}: its process exited "
                               f"(exit code {self._proc.exitcode})") from None
        if reply[0] == "error":
            raise RuntimeError(f"replica {self.recipe.variant}: {reply[1]}\n{reply[2]}")
        return reply

    def _starved(self, starved_s: float) -> str:
        """Why a starved replica stops the work: a busy machine, not the variant, is at fault."""
        cpus = f"CPU {', '.join(map(str, self.recipe.cpus))}" if self.recipe.cpus else "its CPUs"
        why = (", and replicas run at idle priority so as never to delay the front end" if self.recipe.background
               else "")
        return (f"ready to run but given almost no CPU for {starved_s:.0f} s: other processes keep {cpus} "
                f"busy{why}; run again when a core is free of other work")

    def warmup(self) -> None:
        """Wait for the child to have built and warmed its model."""
        if not self._ready:
            self.startup_phases_s = dict(self._receive(START_TIMEOUT_S)[1] or {})
            self._ready = True

    def run(self, sample_indices: list[int]) -> tuple[list, list[float]]:
        if not self._ready:
            self.warmup()
        self._conn.send(sample_indices)
        _, preds, confidences = self._receive()
        return preds, confidences

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(None)
            except (OSError, ValueError):
                pass
            self._proc.join(5.0)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(5.0)
        self._conn.close()

    def __enter__(self) -> "ProcessRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
