"""Data of SPEC 2 and 3: datasets, transforms, class-balanced sampling, loaders."""
from .build import build_dataset
from .demo import DEMO_NUM_CLASSES, ensure_demo_dataset
from .loaders import build_eval_loader, build_train_loader
from .sampler import ClassBalancedSampler
from .transforms import build_transform

__all__ = [
    "DEMO_NUM_CLASSES",
    "ClassBalancedSampler",
    "build_dataset",
    "build_eval_loader",
    "build_train_loader",
    "build_transform",
    "ensure_demo_dataset",
]
