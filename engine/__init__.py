"""The training engine: the loop, its hooks, and the composition root that builds a run."""
