"""What the starvation watch costs a replica's batch: one ``poll`` before each reply is read.

``measure.replicas.ProcessRunner`` waits for a replica's reply in slices of ``CHECK_EVERY_S``
(``Connection.poll``) so that it can look, between slices, at whether the replica is starved
(``measure.starvation``). This times a send and receive of a small message on a pipe, with and
without that poll, in one process (the reply is there when it is read: the poll's own cost).

    python bench/pipe_poll.py [--round-trips 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time


def per_round_trip_us(round_trips: int, poll: bool) -> float:
    ours, theirs = mp.Pipe()
    try:
        started = time.perf_counter()
        for _ in range(round_trips):
            theirs.send(1)
            if poll:
                ours.poll(1.0)
            ours.recv()
        return (time.perf_counter() - started) / round_trips * 1e6
    finally:
        ours.close()
        theirs.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.round_trips < 1 or args.repeats < 1:
        parser.error("--round-trips and --repeats must be at least 1")
    plain = statistics.median(per_round_trip_us(args.round_trips, poll=False) for _ in range(args.repeats))
    polled = statistics.median(per_round_trip_us(args.round_trips, poll=True) for _ in range(args.repeats))
    print(f"send + recv:        {plain:.2f} us (median of {args.repeats} x {args.round_trips})")
    print(f"send + poll + recv: {polled:.2f} us")
    print(f"the poll's cost:    {polled - plain:.2f} us a batch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
