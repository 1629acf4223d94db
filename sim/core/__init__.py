"""The serving core: every decision about requests, batches, replicas, routes and plans, once.

Both executors drive it: the SimPy engine (``sim.engine``) and the real server (``measure.server``).
It imports neither SimPy nor torch. Executors supply a clock, timers and a way to run a batch.
"""
