"""The folder layout ``<root>/images/<class_dir>/<image>`` (CUB, Cars196, SOP, demo).

Class folders sorted by name give labels 0..N-1 and files are found the way
``torchvision.datasets.ImageFolder`` finds them (sorted walk, same image
extensions), so labels match the authors' ``ImageFolder``-based datasets.
"""
import os
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

from utils.errors import UserInputError


def is_image_file(name):
    """ImageFolder's extension rule, minus macOS resource forks (``._*``)."""
    return name.lower().endswith(IMG_EXTENSIONS) and not name.startswith("._")


def images_dir(root):
    root = Path(root)
    if not root.is_dir():
        raise UserInputError(
            f"The dataset folder {root} does not exist; set dataset.dataset_path "
            f"(or --dataset_path) to the folder that holds images/.")
    images = root / "images"
    if not images.is_dir():
        raise UserInputError(
            f"The dataset folder {root} has no images/ folder; point dataset.dataset_path at "
            f"a prepared dataset (python -m dataset.prepare builds one).")
    return images


def class_folders(images):
    """All class folders, sorted by name as ImageFolder's ``find_classes``."""
    return sorted(entry.name for entry in os.scandir(images) if entry.is_dir())


def walk_once(top):
    """``os.walk(top, followlinks=True)``, but every real folder is entered once.

    A link back to a folder above (a cycle) or to a folder already walked is
    not followed, so each folder, and so each file, is found once.
    """
    seen = set()
    for folder, folders, names in os.walk(top, followlinks=True):
        stat = os.stat(folder)
        if (stat.st_dev, stat.st_ino) in seen:
            folders[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        folders.sort()  # a deterministic first visit when two links lead to one folder
        yield folder, folders, names


def images_of_class(class_dir):
    """Image paths of one class folder in ImageFolder's order (sorted walk), each real file once."""
    paths, seen_files = [], set()
    for folder, _, names in sorted(walk_once(class_dir)):
        for name in sorted(names):
            path = os.path.join(folder, name)
            if is_image_file(name) and os.path.realpath(path) not in seen_files:
                seen_files.add(os.path.realpath(path))
                paths.append(path)
    if not paths:
        raise UserInputError(
            f"The class folder {class_dir} holds no images; add images with one of the "
            f"extensions {', '.join(IMG_EXTENSIONS)} or remove the folder.")
    return paths


def class_range(split, num_classes, num_found, rest_is_test):
    """Indices of the class folders of ``split`` ('train' or 'test').

    Zero-shot split: training uses the first ``num_classes`` classes, testing
    the next ``num_classes`` (SOP: all the remaining ones).
    """
    if split == "train":
        return range(0, num_classes)
    if rest_is_test:  # at least one test class, so that too few folders is reported
        return range(num_classes, max(num_found, num_classes + 1))
    return range(num_classes, 2 * num_classes)


def read_folder_split(root, split, num_classes, rest_is_test=False):
    """``(paths, labels)`` of a split, labels contiguous from 0 within it."""
    images = images_dir(root)
    names = class_folders(images)
    classes = class_range(split, num_classes, len(names), rest_is_test)
    if len(names) < classes.stop:
        raise UserInputError(
            f"Found {len(names)} class folders in {images} but split '{split}' needs "
            f"{classes.stop} with dataset.num_classes = {num_classes}; check "
            f"dataset.dataset_path or lower dataset.num_classes.")
    paths, labels = [], []
    for label, class_index in enumerate(classes):
        class_paths = images_of_class(images / names[class_index])
        paths.extend(class_paths)
        labels.extend([label] * len(class_paths))
    return paths, labels
