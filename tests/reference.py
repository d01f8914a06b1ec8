"""Loader for the golden fixtures taken from the authors' implementation.

The files in ``tests/fixtures/reference/`` are byte-identical copies of
``../shared/fixtures/reference/`` (see ``tests/fixtures/README.md``).
Large weight tensors are stored as integer recipes that rebuild bit-exactly;
``materialize`` turns a stored state dict back into ``{key: tensor}`` in the
authors' key order.
"""
import json
from pathlib import Path

import numpy as np
import torch

from utils.safe_load import load_torch_file

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "reference"
SHARED_FIXTURE_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference"
FIXTURE_FILES = (
    "backbone_resnet18_head.pt",
    "backbone_resnet50_head.pt",
    "eval_metrics.pt",
    "gnn_cars.pt",
    "gnn_cub.pt",
    "gnn_cub_mult_attr.pt",
    "gnn_inshop.pt",
    "layouts.json",
    "loss_cub.pt",
    "radam.pt",
)

# Tolerances of the fixtures' manifest.json, per file and output. Never loosen.
BACKBONE_HEAD_TOL = {
    "logits": dict(atol=1e-4, rtol=1e-5),
    "plain": dict(atol=1e-6, rtol=0.0),
    "norm": dict(atol=1e-4, rtol=1e-5),
    "neck": dict(atol=1e-4, rtol=1e-5),
}
GNN_TOL = {
    "logits": dict(atol=1e-4, rtol=1e-4),
    "out_feats": dict(atol=1e-5, rtol=1e-4),
    "intermediate": dict(atol=1e-4, rtol=1e-4),
    "edge_attr": dict(atol=1e-5, rtol=0.0),
}
LOSS_TOL = {
    "loss_ce": dict(atol=1e-5, rtol=1e-5),
    "loss_gnn": dict(atol=1e-4, rtol=1e-5),
    "total": dict(atol=1e-4, rtol=1e-5),
}
RADAM_TOL = {
    "params": dict(atol=1e-6, rtol=1e-5),
    "losses": dict(atol=1e-6, rtol=1e-5),
}
EVAL_TOL = {
    "recall": dict(atol=1e-6, rtol=0.0),
    "nmi_from_saved_kmeans_labels": dict(atol=1e-9, rtol=0.0),
    "nmi_with_own_kmeans": dict(atol=0.02, rtol=0.0),
}


def load(name):
    """Load one ``.pt`` fixture (plain dicts, lists, tensors, numbers)."""
    return load_torch_file(FIXTURE_DIR / name, "the golden fixtures")


def load_layouts():
    """The authors' ordered state-dict layouts, keyed by model name."""
    return json.loads((FIXTURE_DIR / "layouts.json").read_text())


def generate_tensor(spec):
    """Rebuild one recipe tensor: seeded integers times a power of two."""
    ints = np.random.RandomState(spec["seed"]).randint(
        spec["low"], spec["high"] + 1, size=spec["shape"], dtype=np.int64)
    return torch.from_numpy(ints).to(torch.float32) * spec["scale"]


def materialize(entry):
    """``{key: tensor}`` in the authors' key order from a stored state dict."""
    state = dict(entry["stored"])
    for key, spec in entry["generated"].items():
        state[key] = generate_tensor(spec)
    return {key: state[key] for key in entry["key_order"]}
