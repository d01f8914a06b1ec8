"""In-Shop Clothes Retrieval: splits from ``Eval/list_eval_partition.txt``.

The file holds a count line, the header ``image_name item_id
evaluation_status`` and one whitespace-separated row per image; images live
under ``<root>/Img/<image_name>``.
"""
from pathlib import Path

from utils.errors import UserInputError
from utils.text_files import read_text

PARTITION_FILE = Path("Eval") / "list_eval_partition.txt"
HEADER = ["image_name", "item_id", "evaluation_status"]
SPLITS = ("train", "query", "gallery")


def malformed(path, line_number, problem):
    return UserInputError(
        f"The In-Shop partition file {path} is malformed at line {line_number} ({problem}); "
        f"restore the file from the In-Shop download.")


def item_number(item_id, path, line_number):
    """The number at the end of an item id such as ``id_00000001``.

    Labels follow the numeric order of these numbers, as the authors'
    ``np.unique`` over ``int(item_id.split('_')[-1])`` does.
    """
    digits = item_id.rsplit("_", 1)[-1]
    if not digits.isdigit():
        raise malformed(path, line_number, f"item id '{item_id}' does not end in a number")
    return int(digits)


def read_partition(root):
    """``{split: [(image_name, item_number), ...]}`` in file order."""
    path = Path(root) / PARTITION_FILE
    if not path.is_file():
        raise UserInputError(
            f"The In-Shop partition file {path} does not exist; point dataset.dataset_path at "
            f"the In-Shop folder that holds Eval/ and Img/.")
    lines = read_text(path, "In-Shop partition file").splitlines()
    if not lines or not lines[0].strip().isdigit():
        raise malformed(path, 1, "the first line must be the number of images")
    if len(lines) < 2 or lines[1].split() != HEADER:
        raise malformed(path, 2, f"the header must be '{' '.join(HEADER)}'")
    rows = {split: [] for split in SPLITS}
    for line_number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3:
            raise malformed(path, line_number, f"expected 3 columns, found {len(fields)}")
        image_name, item_id, status = fields
        if status not in rows:
            raise malformed(path, line_number, f"unknown evaluation_status '{status}'")
        rows[status].append((image_name, item_number(item_id, path, line_number)))
    count = int(lines[0])
    found = sum(len(split_rows) for split_rows in rows.values())
    if found != count:
        raise malformed(path, 1, f"it announces {count} images but lists {found}")
    return rows


def contiguous_labels(item_numbers):
    """Item numbers mapped to labels 0..C-1 in increasing numeric order."""
    label_of = {number: label for label, number in enumerate(sorted(set(item_numbers)))}
    return [label_of[number] for number in item_numbers]


def read_inshop_split(root, split):
    """``(paths, labels)`` of 'train', 'query' or 'gallery'.

    Item ids are mapped to labels once for train and once for query and
    gallery together, so a query and its gallery matches share a label.
    """
    rows = read_partition(root)
    image_dir = Path(root) / "Img"
    if split == "train":
        numbers = [number for _, number in rows["train"]]
        labels = contiguous_labels(numbers)
    else:
        evaluation_rows = rows["query"] + rows["gallery"]
        evaluation_labels = contiguous_labels([number for _, number in evaluation_rows])
        num_query = len(rows["query"])
        labels = evaluation_labels[:num_query] if split == "query" else evaluation_labels[num_query:]
    paths = [str(image_dir / image_name) for image_name, _ in rows[split]]
    return paths, labels
