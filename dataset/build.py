"""``build_dataset``: the one door from a dataset name and split to a Dataset."""
from .folder import read_folder_split
from .image_list import ImageListDataset
from .inshop import read_inshop_split
from utils.errors import UserInputError

# Datasets in the folder layout; SOP tests on all classes after the training ones.
FOLDER_DATASETS = {"cub": False, "cars": False, "sop": True, "demo": False}
DATASET_NAMES = sorted([*FOLDER_DATASETS, "in_shop"])
MIN_CLASSES_PER_SIDE = 2


def validation_cut(num_classes, val_fraction):
    """How many training classes 'train' keeps when the rest become 'val'."""
    if num_classes < 2 * MIN_CLASSES_PER_SIDE:
        raise UserInputError(
            f"A validation split needs at least {2 * MIN_CLASSES_PER_SIDE} training classes "
            f"but the training split has {num_classes}; raise dataset.num_classes or set "
            f"dataset.val to 0.")
    kept = round(num_classes * (1.0 - val_fraction))
    return min(max(kept, MIN_CLASSES_PER_SIDE), num_classes - MIN_CLASSES_PER_SIDE)


def hold_out_classes(paths, labels, val_fraction, split):
    """'train': the first (1 - val_fraction) share of the classes; 'val': the rest.

    Both keep labels contiguous from 0.
    """
    cut = validation_cut(len(set(labels)), val_fraction)
    if split == "train":
        chosen = [(path, label) for path, label in zip(paths, labels) if label < cut]
    else:
        chosen = [(path, label - cut) for path, label in zip(paths, labels) if label >= cut]
    return [path for path, _ in chosen], [label for _, label in chosen]


def check_split(dataset_short, split, val_fraction):
    """Splits are chosen by code, not by the user: a wrong one is a bug."""
    test_splits = ("query", "gallery") if dataset_short == "in_shop" else ("test",)
    allowed = ("train", *test_splits) + (("val",) if val_fraction > 0 else ())
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed} for {dataset_short}, got {split!r}")


def read_split(dataset_short, root, split, num_classes):
    if dataset_short == "in_shop":
        paths, labels = read_inshop_split(root, split)
        if split == "train" and len(set(labels)) > num_classes:
            raise UserInputError(
                f"The In-Shop training split of {root} has {len(set(labels))} items but "
                f"dataset.num_classes is {num_classes}; set dataset.num_classes to "
                f"{len(set(labels))}.")
        return paths, labels
    return read_folder_split(root, split, num_classes, rest_is_test=FOLDER_DATASETS[dataset_short])


def build_dataset(dataset_short, root, split, num_classes, transform, val_fraction=0.0,
                  skip_broken_images=False):
    """A Dataset of ``(image, label, index, path)`` items for one split.

    ``split``: 'train' or 'test' ('query' / 'gallery' for In-Shop); with
    ``val_fraction`` > 0 also 'val', the training classes 'train' leaves out.
    """
    if dataset_short not in DATASET_NAMES:
        raise UserInputError(
            f"Unknown dataset.dataset_short '{dataset_short}'; use one of "
            f"{', '.join(DATASET_NAMES)}.")
    check_split(dataset_short, split, val_fraction)
    source_split = "train" if split == "val" else split
    paths, labels = read_split(dataset_short, root, source_split, num_classes)
    if val_fraction > 0 and source_split == "train":
        paths, labels = hold_out_classes(paths, labels, val_fraction, split)
    return ImageListDataset(paths, labels, transform, skip_broken_images)
