"""The SimPy serving engine, the `simulate` CLI, and sweeps. No torch here."""
