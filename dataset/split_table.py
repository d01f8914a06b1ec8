"""A class-disjoint dataset table from a folder of class folders (``python -m dataset.prepare table``).

Each sub-folder of the folder is a class (its name the label); its images
are found as ``dataset.folder`` finds them. A seeded draw puts
``test_fraction`` of the classes into the test split, so no test class is
trained on (zero-shot, as the paper's splits). With ``query_fraction`` the
test images of each class are split into queries and gallery (disjoint, as
In-Shop's); without it the table has no such columns and every test image
is a query against all the others. Only the CSV file is written.
"""
import csv
import io
import logging
import os
from pathlib import Path

import numpy as np

from .folder import class_folders, images_of_class
from .table import MIN_IMAGES_PER_TRAINING_LABEL
from utils.errors import UserInputError
from utils.io import atomic_write_text

logger = logging.getLogger(__name__)

MIN_CLASSES = 2


def check_fraction(value, flag):
    if not 0 < value < 1:
        raise UserInputError(f"{flag} {value} must lie strictly between 0 and 1.")


def class_images(folder):
    """``{class name: [paths relative to folder, /-separated]}`` of every class folder, sorted by name."""
    if not folder.is_dir():
        raise UserInputError(f"The folder {folder} does not exist; give the folder that holds one sub-folder "
                             "of images per class.")
    names = class_folders(folder)
    if len(names) < MIN_CLASSES:
        raise UserInputError(f"The folder {folder} has {len(names)} class folder(s); a split needs at least "
                             f"{MIN_CLASSES} sub-folders, one per class, that hold the images.")
    return {name: [Path(os.path.relpath(path, folder)).as_posix() for path in images_of_class(folder / name)]
            for name in names}


def split_classes(names, test_fraction, rng):
    """The test classes: ``test_fraction`` of them (at least one, never all), drawn by ``rng``."""
    num_test = min(max(round(len(names) * test_fraction), 1), len(names) - 1)
    return {names[index] for index in rng.permutation(len(names))[:num_test]}


def query_rows(paths, query_fraction, rng):
    """Which of one test class's images are queries: ``query_fraction`` of them, at least one, and at least
    one gallery image; a class of one image is gallery only."""
    if len(paths) < 2:
        return np.zeros(len(paths), dtype=bool)
    num_query = min(max(round(len(paths) * query_fraction), 1), len(paths) - 1)
    is_query = np.zeros(len(paths), dtype=bool)
    is_query[rng.permutation(len(paths))[:num_query]] = True
    return is_query


def table_rows(images, test_fraction, query_fraction, seed):
    """The table's rows, in class then path order: ``(path, label, split[, is_query, is_gallery])``."""
    rng = np.random.default_rng(seed)
    test_classes = split_classes(sorted(images), test_fraction, rng)
    rows = []
    for name in sorted(images):
        paths = images[name]
        if name not in test_classes:
            if len(paths) < MIN_IMAGES_PER_TRAINING_LABEL:
                raise UserInputError(f"The class folder {name} holds one image but was drawn for training, where "
                                     f"every class needs at least {MIN_IMAGES_PER_TRAINING_LABEL}; add images, "
                                     "remove the folder or draw another --seed.")
            rows += [(path, name, "train") + (("", "") if query_fraction else ()) for path in paths]
            continue
        if not query_fraction:
            rows += [(path, name, "test") for path in paths]
            continue
        is_query = query_rows(paths, query_fraction, rng)
        rows += [(path, name, "test", int(query), int(not query)) for path, query in zip(paths, is_query)]
    return rows, test_classes


def write_split_table(folder, out, test_fraction=0.5, query_fraction=None, seed=0):
    """Write the table of ``folder`` to ``out`` (a new file outside the folder); returns the number of rows."""
    folder, out = Path(folder), Path(out)
    check_fraction(test_fraction, "--test_fraction")
    if query_fraction is not None:
        check_fraction(query_fraction, "--query_fraction")
    if out.exists():
        raise UserInputError(f"{out} already exists; give a new file name for the table.")
    if folder.resolve() in out.resolve().parents:
        raise UserInputError(f"The table {out} would be written inside {folder}, which stays untouched; write it "
                             "outside, e.g. next to the folder.")
    if not out.parent.is_dir():
        raise UserInputError(f"The folder {out.parent} of the table does not exist; create it first.")
    images = class_images(folder)
    rows, test_classes = table_rows(images, test_fraction, query_fraction, seed)
    header = ["path", "label", "split"] + (["is_query", "is_gallery"] if query_fraction else [])
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(out, text.getvalue(), replace=False)
    num_test_images = sum(len(images[name]) for name in test_classes)
    logger.info("Wrote %s: %d classes of %s, %d for training (%d images) and %d for testing (%d images)%s; "
                "train with dataset.dataset_path %s and dataset.table %s.", out, len(images), folder,
                len(images) - len(test_classes), len(rows) - num_test_images, len(test_classes), num_test_images,
                f", {sum(row[3] for row in rows if row[2] == 'test')} of them queries" if query_fraction else "",
                folder, os.path.relpath(out.resolve(), folder.resolve()))
    return len(rows)
