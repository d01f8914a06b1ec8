"""Readers of the download's annotation files, for ``dataset.prepare``.

Each returns ``[(class_id, relative_image_path, where), ...]``, ``where``
naming the file and line (or entry) the row came from, and raises a
``UserInputError`` naming the file and line of anything it cannot read.
"""
from pathlib import Path

from utils.errors import UserInputError
from utils.text_files import read_text

SOP_HEADER = ["image_id", "class_id", "super_class_id", "path"]


def missing_file(path, what):
    return UserInputError(f"The annotation file {path} does not exist; pass the {what} download "
                          f"folder that holds it.")


def malformed(path, where, problem):
    return UserInputError(f"The annotation file {path} is malformed at {where} ({problem}); "
                          f"restore it from the original download.")


def read_sop_list(path):
    """Rows of ``Ebay_train.txt`` / ``Ebay_test.txt``: image_id class_id super_class_id path."""
    path = Path(path)
    if not path.is_file():
        raise missing_file(path, "Stanford_Online_Products")
    lines = read_text(path, "annotation file").splitlines()
    if not lines or lines[0].split() != SOP_HEADER:
        raise malformed(path, "line 1", f"the header must be '{' '.join(SOP_HEADER)}'")
    rows = []
    for line_number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 4 or not all(field.isdigit() for field in fields[:3]):
            raise malformed(path, f"line {line_number}",
                            "expected three integers and a path, e.g. '1 1 1 bicycle_final/x.JPG'")
        rows.append((int(fields[1]), fields[3], f"{path} line {line_number}"))
    if not rows:
        raise malformed(path, "line 2", "no image rows follow the header")
    return rows


def read_cars_annotations(path):
    """Entries of the Cars196 devkit's ``cars_annos.mat``: relative_im_path and class."""
    path = Path(path)
    if not path.is_file():
        raise missing_file(path, "Cars196 (devkit)")
    try:
        import scipy.io  # only Cars196 preparation needs scipy
    except ImportError:
        raise UserInputError(f"Reading {path} needs scipy, which is not installed; "
                             f"run pip install scipy.") from None
    try:
        annotations = scipy.io.loadmat(path, squeeze_me=True)["annotations"]
    except Exception as error:  # noqa: BLE001 - scipy raises many types (MatReadError, IndexError, ...) for a damaged file
        raise malformed(path, "the top level", f"no readable 'annotations' struct array: "
                                               f"{error or type(error).__name__}") from None
    fields = getattr(getattr(annotations, "dtype", None), "names", None) or ()
    if "relative_im_path" not in fields or "class" not in fields:
        raise malformed(path, "the top level", "'annotations' lacks the fields relative_im_path and class")
    rows = []
    for entry_number, entry in enumerate(annotations.ravel(), start=1):
        image_path, class_id = entry["relative_im_path"], entry["class"]
        if not isinstance(image_path, str) or not str(class_id).isdigit():
            raise malformed(path, f"annotation {entry_number}",
                            f"relative_im_path {image_path!r} and class {class_id!r}")
        rows.append((int(class_id), image_path, f"{path} annotation {entry_number}"))
    if not rows:
        raise malformed(path, "the top level", "'annotations' is empty")
    return rows
