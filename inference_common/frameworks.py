"""The runtimes a version can name in its model card's `framework`: the registry refuses any
other at registration, and the workers have one `Predictor` for each (workers/runtimes.py)."""

FRAMEWORKS = ("keras", "simulated")
