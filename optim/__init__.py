"""The paper's optimiser: RAdam (SPEC 6) and its parameter groups."""
