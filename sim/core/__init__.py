"""The serving core: every decision about requests, batches, replicas, routes and plans, once.

A serving system is modelled as events that the core reacts to: a request arrives, a batch ends,
a timer fires, a new replica is ready. For each it decides what happens next (where the request
goes, which waiting requests form the next batch and on which replica, when to look again) and
asks its executor to make it happen. Two executors drive it: the SimPy engine (``sim.engine``),
whose batches last a service time sampled from the bundle, and the real server
(``measure.server``), whose batches run on real models while the wall clock goes on. Because both
run this one package, what the simulator predicts and what the server does differ only by what
the executors supply: a clock, timers, and how long a batch really takes.

It imports neither SimPy nor torch (``measure`` may import it; it imports nothing of ``measure``).
``executor`` says what an executor supplies; ``serving`` is the live system of one run;
``batcher``, ``deployment``, ``queues`` and ``balancers`` its parts; ``faults`` and ``scaling``
its timers; ``workload`` and ``records`` the per-request state; ``prepare`` and ``driver`` the
way from a scenario to a run output, for either executor.
"""
