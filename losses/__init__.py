"""The paper's loss: label-smoothed cross-entropy on the backbone and on every MPN layer (SPEC 6)."""
