"""Training of learned policies on the simulator (extra ``rl``: gymnasium, sb3-contrib, torch).

``learn.env``: routing as a Gymnasium environment; ``learn.train``: MaskablePPO and the export to
plain arrays that ``policies.learned`` runs with numpy; ``python -m learn train``: the command.
"""
