"""A SimPy environment that merges a pre-generated arrival stream into its event loop.

Arrivals of an open-loop workload are known in advance, so instead of one SimPy event each (an
object, a heap push and a pop) an arrival is a clock jump and a call, which roughly halves the
events per request. Moving the clock without an event is the one thing SimPy's public API does not
offer, so it lives in this subclass.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import simpy


class ServingEnvironment(simpy.Environment):
    def run_merged(self, arrival_s: Sequence[float], next_index: int, on_arrival: Callable[[int], None],
                   until_s: float = math.inf) -> int:
        """Process events and arrivals in time order up to ``until_s``; return the next arrival's index.

        An event and an arrival at the same instant: the event goes first, so a replica freed at
        t serves an arrival at t.
        """
        heap, step = self._queue, self.step
        i, n, inf = next_index, len(arrival_s), math.inf
        while True:
            t_arrival = arrival_s[i] if i < n else inf
            t_event = heap[0][0] if heap else inf
            if t_arrival < t_event:
                if t_arrival > until_s:
                    break
                self._now = t_arrival
                i += 1
                on_arrival(i - 1)
            elif t_event <= until_s and t_event != inf:
                step()
            else:
                break
        if until_s != inf and until_s > self._now:
            self._now = until_s
        return i
