"""``build_dataset``: the one door from a dataset name and split to a Dataset."""
import os

import numpy as np

from .folder import read_folder_split
from .image_list import ImageListDataset
from .inshop import read_inshop_split
from .table import read_table
from utils.errors import UserInputError

# Datasets in the folder layout; SOP tests on all classes after the training ones.
FOLDER_DATASETS = {"cub": False, "cars": False, "sop": True, "demo": False}
DATASET_NAMES = sorted([*FOLDER_DATASETS, "in_shop", "table"])
# Test splits a dataset can be asked for: In-Shop's two files, a table's queries and gallery or all its test rows.
TEST_SPLITS = {"in_shop": ("query", "gallery"), "table": ("test", "query", "gallery")}
MIN_CLASSES_PER_SIDE = 2


# The reality-check paper's folds: sklearn's KFold(4) without shuffling over the
# sorted training classes (powerful-benchmarker's ClassDisjointSplitManager).
MLRC_NUM_FOLDS = 4


def validation_cut(num_classes, val_fraction):
    """How many training classes 'train' keeps when the rest become 'val'."""
    _check_enough_classes(num_classes, 2 * MIN_CLASSES_PER_SIDE, "dataset.val to 0")
    kept = round(num_classes * (1.0 - val_fraction))
    return min(max(kept, MIN_CLASSES_PER_SIDE), num_classes - MIN_CLASSES_PER_SIDE)


def mlrc_fold(num_classes, fold):
    """``range`` of the training classes (sorted, as labelled) in MLRC fold ``fold``.

    Folds are contiguous: each has ``num_classes // 4`` classes and the first
    ``num_classes % 4`` one more, as sklearn's ``KFold(4, shuffle=False)``.
    They do not depend on any seed.
    """
    _check_enough_classes(num_classes, MLRC_NUM_FOLDS * MIN_CLASSES_PER_SIDE,
                          "dataset.val_protocol to fraction")
    sizes = [num_classes // MLRC_NUM_FOLDS + (index < num_classes % MLRC_NUM_FOLDS)
             for index in range(MLRC_NUM_FOLDS)]
    start = sum(sizes[:fold])
    return range(start, start + sizes[fold])


def held_out_classes(num_classes, val_fraction, val_fold):
    """The training classes 'val' holds: MLRC fold ``val_fold``, or the last ``val_fraction``."""
    if val_fold is not None:
        return mlrc_fold(num_classes, val_fold)
    return range(validation_cut(num_classes, val_fraction), num_classes)


def _check_enough_classes(num_classes, needed, alternative):
    if num_classes < needed:
        raise UserInputError(
            f"This validation split needs at least {needed} training classes "
            f"but the training split has {num_classes}; raise dataset.num_classes or set "
            f"{alternative}.")


def hold_out_classes(paths, labels, held_out, split):
    """'val': the classes in the range ``held_out``; 'train': the others.

    Both keep labels contiguous from 0, in the original order.
    """
    if split == "train":
        chosen = [(path, label if label < held_out.start else label - len(held_out))
                  for path, label in zip(paths, labels) if label not in held_out]
    else:
        chosen = [(path, label - held_out.start) for path, label in zip(paths, labels)
                  if label in held_out]
    return [path for path, _ in chosen], [label for _, label in chosen]


def check_split(dataset_short, split, holds_out):
    """Splits are chosen by code, not by the user: a wrong one is a bug."""
    test_splits = TEST_SPLITS.get(dataset_short, ("test",))
    allowed = ("train", *test_splits) + (("val",) if holds_out else ())
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed} for {dataset_short}, got {split!r}")


def read_split(dataset_short, root, split, num_classes, table=None):
    if dataset_short == "table":
        return read_table(root, table).split(split)
    if dataset_short == "in_shop":
        paths, labels = read_inshop_split(root, split)
        if split == "train" and len(set(labels)) != num_classes:
            raise UserInputError(
                f"The In-Shop training split of {root} has {len(set(labels))} items but "
                f"dataset.num_classes is {num_classes}; set dataset.num_classes to "
                f"{len(set(labels))}.")
        return paths, labels
    return read_folder_split(root, split, num_classes, rest_is_test=FOLDER_DATASETS[dataset_short])


def gallery_copies(query_set, gallery_set):
    """Per query item, the index of the gallery item with the same image file, or -1 (``int64`` array)."""
    gallery_index = {os.path.abspath(path): index for index, path in enumerate(gallery_set.paths)}
    return np.array([gallery_index.get(os.path.abspath(path), -1) for path in query_set.paths], dtype=np.int64)


def build_dataset(dataset_short, root, split, num_classes, transform, val_fraction=0.0,
                  skip_broken_images=False, val_fold=None, table=None):
    """A Dataset of ``(image, label, index, path)`` items for one split.

    ``split``: 'train' or 'test' ('query' / 'gallery' for In-Shop and a
    ``table``, the CSV file of ``dataset_short`` 'table'); with
    ``val_fraction`` > 0 or an MLRC ``val_fold`` (0-3) also 'val', the
    training classes 'train' leaves out.
    """
    if dataset_short not in DATASET_NAMES:
        raise UserInputError(
            f"Unknown dataset.dataset_short '{dataset_short}'; use one of "
            f"{', '.join(DATASET_NAMES)}.")
    holds_out = val_fraction > 0 or val_fold is not None
    check_split(dataset_short, split, holds_out)
    source_split = "train" if split == "val" else split
    paths, labels = read_split(dataset_short, root, source_split, num_classes, table)
    if holds_out and source_split == "train":
        held_out = held_out_classes(len(set(labels)), val_fraction, val_fold)
        paths, labels = hold_out_classes(paths, labels, held_out, split)
    return ImageListDataset(paths, labels, transform, skip_broken_images)
