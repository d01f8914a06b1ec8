"""A dataset table: one CSV row per image, with its label and split (open-metric-learning's layout).

Columns: ``path`` (relative to the dataset folder), ``label`` (any text),
``split`` (``train`` or ``test``); optionally ``is_query`` and ``is_gallery``
(0/1) for the test rows. Other columns are ignored. Without the two flags
every test image is a query against all the others; with them the queries
search the gallery, and an image may be both.

Training labels, sorted (numbers by value, before any text), become 0..C-1,
so the validation protocols hold out contiguous ranges of them as for the
paper's datasets; the test labels get their own 0..T-1 in the same order,
shared by queries and gallery. Every row is checked as it is read and a bad
one is reported with the file and line. The reader streams the file in
chunks, checks them column by column and lists each image folder once (not
one ``stat`` per row), so a table of a million rows reads in seconds
(``python -m benchmarks.table_reader``).
"""
import collections
import csv
import functools
import gc
import itertools
import logging
import operator
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.errors import UserInputError

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "label", "split")
FLAG_COLUMNS = ("is_query", "is_gallery")
# The 0/1 flags as CSV writers spell them (pandas writes 1.0 in a column with empty cells).
FLAG_VALUES = {"0": False, "1": True, "0.0": False, "1.0": True, "false": False, "true": True}
# Rows checked together (bounds the memory of the per-chunk columns).
CHUNK_ROWS = 1 << 16
# The sampler draws K images of a label; a label with one image has no positive pair.
MIN_IMAGES_PER_TRAINING_LABEL = 2


@dataclass(frozen=True)
class DatasetTable:
    """The checked rows of a table; ``paths`` are absolute, the arrays have one entry per row.

    ``numbers``: each row's label number, among the training labels for a
    training row and among the test labels for a test row (queries and
    gallery share them, so that a match keeps its label); the names of those
    numbers are ``training_labels`` and ``test_labels``, in ``label_order``.
    """

    file: Path
    paths: list
    numbers: np.ndarray
    training_labels: list
    test_labels: list
    is_test: np.ndarray
    is_query: np.ndarray
    is_gallery: np.ndarray
    has_query_gallery: bool

    def split(self, split):
        """``(paths, labels)`` of 'train', 'test' (all test rows), 'query' or 'gallery'; labels 0..N-1."""
        rows = {"train": ~self.is_test, "test": self.is_test, "query": self.is_test & self.is_query,
                "gallery": self.is_test & self.is_gallery}[split]
        chosen = np.flatnonzero(rows)
        return [self.paths[row] for row in chosen.tolist()], self.numbers[chosen].tolist()


def label_order(label):
    """Sort key of a label: integers by value first, then any other text."""
    digits = label[1:] if label.startswith("-") else label
    return (0, int(label), "") if digits.isdigit() and digits.isascii() else (1, 0, label)


def table_file(dataset_path, table):
    """The table's path: ``table`` itself if absolute, else relative to the dataset folder."""
    if not table:
        raise UserInputError("dataset.dataset_short is table but dataset.table is not set; set it to the CSV file "
                             "of the images (python -m dataset.prepare table writes one).")
    table = Path(table)
    return table if table.is_absolute() else Path(dataset_path) / table


def read_table(dataset_path, table):
    """The ``DatasetTable`` of ``table`` (see ``table_file``), read once per process while the file is unchanged."""
    path = table_file(dataset_path, table)
    root = Path(dataset_path)
    if not root.is_dir():
        raise UserInputError(f"The dataset folder {root} does not exist; set dataset.dataset_path (or "
                             "--dataset_path) to the folder the paths of dataset.table are relative to.")
    try:
        stat = path.stat()
    except OSError:
        raise UserInputError(f"The table {path} (dataset.table) does not exist; give the CSV file of the images, "
                             "relative to dataset.dataset_path or absolute.") from None
    return _read_table_once(str(path.resolve()), str(root.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _read_table_once(path, root, _mtime_ns, _size):
    """The reading itself; the modification time and size in the key make a changed file read anew."""
    table = TableReader(Path(path), root).read()
    log_summary(table)
    return table


def log_summary(table):
    train_labels, test_labels = table.training_labels, table.test_labels
    seen = len(set(test_labels) & set(train_labels))
    protocol = (f"{int((table.is_test & table.is_query).sum())} queries against a gallery of "
                f"{int((table.is_test & table.is_gallery).sum())}" if table.has_query_gallery
                else "every test image a query against all the others")
    logger.info("Table %s: %d training images of %d labels; %d test images of %d labels, %d of them seen in "
                "training (%s).", table.file, int((~table.is_test).sum()), len(train_labels),
                int(table.is_test.sum()), len(test_labels), seen, protocol)


def bad_row(file, line, problem, fix):
    return UserInputError(f"The table {file} has, at line {line}, {problem}; {fix}.")


def is_blank(row):
    return not row or (len(row) == 1 and not row[0].strip())


class TableReader:
    """Reads and checks one table; ``read()`` returns its ``DatasetTable``.

    The rows are read in chunks and checked column by column with set and
    string operations that run in C (per chunk: the split values, the
    labels, all paths joined into one string to find any that needs
    normalising, one listing per image folder, one set of all paths for
    duplicates). Only when a check fails is the file read again, row by row,
    to name the first bad row and its line.
    """

    def __init__(self, file, root):
        self.file = file
        self.root = root
        self.root_prefix = root.rstrip(os.sep) + os.sep
        self.files_in = {}
        self.seen_paths = set()

    def read(self):
        # The chunks are many small lists that live until checked: the cyclic garbage collector would walk
        # them again and again (half the time of a large table), and they hold no cycles.
        collecting = gc.isenabled()
        gc.disable()
        try:
            with open(self.file, newline="", encoding="utf-8-sig") as stream:
                return self.read_rows(csv.reader(stream))
        except UnicodeDecodeError as error:
            raise UserInputError(f"The table {self.file} is not UTF-8 text (byte {error.start}); save it as "
                                 "UTF-8 CSV.") from None
        except csv.Error as error:
            raise UserInputError(f"The table {self.file} is not a readable CSV file ({error}); save it as a "
                                 "comma-separated file with a header line.") from None
        finally:
            if collecting:
                gc.enable()

    def read_rows(self, reader):
        columns = self.header(next(reader, None))
        self.width = max(columns.values()) + 1
        self.has_flags = FLAG_COLUMNS[0] in columns
        getters = [operator.itemgetter(columns[name]) for name in REQUIRED_COLUMNS + FLAG_COLUMNS if name in columns]
        paths, labels, is_test, flags, rows_before = [], [], [], [], 0
        while True:
            chunk = list(itertools.islice(reader, CHUNK_ROWS))
            if not chunk:
                break
            chunk = self.without_blank_rows(chunk, rows_before)
            path_column, label_column, split_column, *flag_columns = (list(map(get, chunk)) for get in getters)
            chunk_test = self.split_values(split_column, rows_before)
            paths += self.image_paths(path_column, rows_before)
            labels += self.label_values(label_column, rows_before)
            is_test.append(chunk_test)
            if self.has_flags:
                flags.append(self.flag_values(flag_columns, chunk_test, rows_before))
            rows_before += len(chunk)
        is_test = np.concatenate(is_test) if is_test else np.zeros(0, dtype=bool)
        if self.has_flags:
            is_query, is_gallery = np.concatenate(flags, axis=1) if flags else np.zeros((2, 0), dtype=bool)
        else:  # every test image is a query against all the others
            is_query = is_gallery = np.ones(len(paths), dtype=bool)
        return self.checked_table(paths, labels, is_test, is_query, is_gallery)

    def header(self, names):
        """``{column name: index}``; the three required columns must be there, the two flags both or neither."""
        names = [name.strip() for name in names or []]
        missing = [name for name in REQUIRED_COLUMNS if name not in names]
        if missing:
            raise bad_row(self.file, 1, f"a header without the column {missing[0]}",
                          f"start the file with the header line {','.join(REQUIRED_COLUMNS)}")
        flags = [name for name in FLAG_COLUMNS if name in names]
        if len(flags) == 1:
            other = next(name for name in FLAG_COLUMNS if name not in flags)
            raise bad_row(self.file, 1, f"the column {flags[0]} without {other}",
                          "give both columns or neither")
        duplicated = next((name for name in names if names.count(name) > 1), None)
        if duplicated is not None:
            raise bad_row(self.file, 1, f"the column {duplicated} twice", "keep one of them")
        return {name: index for index, name in enumerate(names)}

    def line_of(self, row_index):
        """The line of the ``row_index``-th row that is not blank (the header is line 1): read again."""
        with open(self.file, newline="", encoding="utf-8-sig") as stream:
            reader = csv.reader(stream)
            next(reader, None)
            rows = (reader.line_num for row in reader if not is_blank(row))
            return next(itertools.islice(rows, row_index, None))

    def refuse(self, row_index, problem, fix):
        raise bad_row(self.file, self.line_of(row_index), problem, fix)

    def without_blank_rows(self, chunk, rows_before):
        """The chunk less its blank lines; a row with too few fields is refused."""
        if min(map(len, chunk)) >= self.width:
            return chunk
        chunk = [row for row in chunk if not is_blank(row)]
        short = next((index for index, row in enumerate(chunk) if len(row) < self.width), None)
        if short is not None:
            self.refuse(rows_before + short, f"{len(chunk[short])} fields where the header names {self.width}",
                        "give every row a value for each column")
        return chunk

    def split_values(self, values, rows_before):
        """``is_test`` of the chunk's rows; a split other than train or test is refused."""
        meaning = {value: value.strip() for value in set(values)}
        unknown = {value for value, split in meaning.items() if split not in ("train", "test")}
        if unknown:
            index = next(index for index, value in enumerate(values) if value in unknown)
            self.refuse(rows_before + index, f"the unknown split {meaning[values[index]]!r}", "write train or test")
        tests = {value for value, split in meaning.items() if split == "test"}
        return np.array(list(map(tests.__contains__, values)), dtype=bool)

    def label_values(self, values, rows_before):
        """The chunk's labels, stripped; an empty one is refused."""
        stripped = {value: value.strip() for value in set(values)}
        if "" in stripped.values():
            index = next(index for index, value in enumerate(values) if not stripped[value])
            self.refuse(rows_before + index, "an empty label", "give every image its label")
        if all(value == label for value, label in stripped.items()):
            return values
        return list(map(stripped.__getitem__, values))

    def image_paths(self, relatives, rows_before):
        """The chunk's absolute image paths: inside the dataset folder, existing files, each listed once."""
        relatives = list(map(str.strip, relatives))
        joined = "\0" + "\0".join(relatives) + "\0"
        if joined.count("\0") != len(relatives) + 1:  # a NUL byte in a path, which no file name can hold
            index = next(index for index, relative in enumerate(relatives) if "\0" in relative)
            self.refuse(rows_before + index, "a NUL byte in its path, so the file is damaged or no text table",
                        "give the original table")
        # No empty path, none absolute, none with '.', '..' or '//' in it: root + path is already normal.
        plain = os.sep == "/" and not any(part in joined for part in ("\0\0", "\0/", "\0.", "/.", "//", "/\0"))
        paths = list(map(self.root_prefix.__add__, relatives)) if plain else [
            self.normalised(relative, rows_before + index) for index, relative in enumerate(relatives)]
        parts = list(map(operator.methodcaller("rpartition", os.sep), paths))
        for folder in {folder for folder, _, _ in parts} - self.files_in.keys():
            self.files_in[folder] = self.files_of(folder)
        files_in = self.files_in
        if not all(name in files_in[folder] for folder, _, name in parts):
            index = next(index for index, (folder, _, name) in enumerate(parts) if name not in files_in[folder])
            self.refuse(rows_before + index, f"the path {relatives[index]!r}, but {paths[index]} is not a file",
                        "fix the path or remove the row")
        before = len(self.seen_paths)
        self.seen_paths.update(paths)
        if len(self.seen_paths) - before != len(paths):
            self.refuse_duplicate()
        return paths

    def normalised(self, relative, row_index):
        if not relative:
            self.refuse(row_index, "an empty path", "give the image's path relative to dataset.dataset_path")
        path = os.path.normpath(os.path.join(self.root, relative))
        if not path.startswith(self.root_prefix):
            self.refuse(row_index, f"the path {relative!r}, which lies outside the dataset folder {self.root}",
                        "give paths relative to dataset.dataset_path, inside it")
        return path

    def refuse_duplicate(self):
        """Read again to name the first path listed twice, with both lines."""
        line_of_path = {}
        with open(self.file, newline="", encoding="utf-8-sig") as stream:
            reader = csv.reader(stream)
            path_column = self.header(next(reader, None))["path"]
            for row in reader:
                if is_blank(row):
                    continue
                relative = row[path_column].strip()
                path = os.path.normpath(os.path.join(self.root, relative))
                first_line = line_of_path.setdefault(path, reader.line_num)
                if first_line != reader.line_num:
                    raise bad_row(self.file, reader.line_num, f"the path {relative!r} a second time (first at line "
                                  f"{first_line})", "list every image once")

    def files_of(self, folder):
        """Names in ``folder``: one ``listdir``, no ``stat`` per entry (a listed folder is refused on loading)."""
        try:
            return set(os.listdir(folder))
        except OSError:
            return set()

    def flag_values(self, columns, is_test, rows_before):
        """``[is_query, is_gallery]`` of the chunk; training rows may leave them empty, test rows need 0 or 1
        and at least one of them 1."""
        values = []
        for name, column in zip(FLAG_COLUMNS, columns):
            meaning = {value: FLAG_VALUES.get(value.strip().lower()) for value in set(column)}
            empty = {value for value in meaning if not value.strip()}
            unknown = {value for value, flag in meaning.items() if flag is None}
            known = ~np.array(list(map(unknown.__contains__, column)), dtype=bool)
            blank = np.array(list(map(empty.__contains__, column)), dtype=bool) if empty else None
            bad = ~known if blank is None else ~known & (is_test | ~blank)
            if bad.any():
                index = int(np.flatnonzero(bad)[0])
                self.refuse(rows_before + index, f"{name} {column[index].strip()!r}", "write 0 or 1")
            trues = {value for value, flag in meaning.items() if flag}
            values.append(np.array(list(map(trues.__contains__, column)), dtype=bool))
        neither = is_test & ~values[0] & ~values[1]
        if neither.any():
            self.refuse(rows_before + int(np.flatnonzero(neither)[0]), "a test image that is neither query nor "
                        "gallery", "set is_query or is_gallery to 1, or remove the row")
        return np.stack(values)

    def checked_table(self, paths, labels, is_test, is_query, is_gallery):
        """The table once the rows are read: both splits there, queries and gallery there, no lone training label."""
        for split, rows in (("train", ~is_test), ("test", is_test)):
            if not rows.any():
                raise UserInputError(f"The table {self.file} has no row with split {split} (no line has it); "
                                     "give both training and test images.")
        if self.has_flags:
            for name, flags in zip(FLAG_COLUMNS, (is_query, is_gallery)):
                if not (flags & is_test).any():
                    raise UserInputError(f"The table {self.file} has no test row with {name} 1 (no line has it); "
                                         "mark at least one query and one gallery image.")
        training = collections.Counter(itertools.compress(labels, ~is_test))
        self.check_training_label_sizes(training, labels, is_test)
        training_labels = sorted(training, key=label_order)
        test_labels = sorted(set(itertools.compress(labels, is_test)), key=label_order)
        train_number = {label: number for number, label in enumerate(training_labels)}
        test_number = {label: number for number, label in enumerate(test_labels)}
        numbers = np.empty(len(labels), dtype=np.int64)
        numbers[~is_test] = list(map(train_number.__getitem__, itertools.compress(labels, ~is_test)))
        numbers[is_test] = list(map(test_number.__getitem__, itertools.compress(labels, is_test)))
        return DatasetTable(self.file, paths, numbers, training_labels, test_labels, is_test, is_query, is_gallery,
                            self.has_flags)

    def check_training_label_sizes(self, training, labels, is_test):
        lone = {label for label, count in training.items() if count < MIN_IMAGES_PER_TRAINING_LABEL}
        if lone:
            index = next(index for index, (label, test) in enumerate(zip(labels, is_test.tolist()))
                         if not test and label in lone)
            self.refuse(index, f"the training label {labels[index]!r} with a single image ({len(lone)} training "
                        f"label(s) have one)", f"give every training label at least "
                        f"{MIN_IMAGES_PER_TRAINING_LABEL} images, or move it to the test split")


def table_classes(dataset_path, table, num_classes=None):
    """The number of training labels of the table; ``num_classes``, when given, must be it."""
    found = len(read_table(dataset_path, table).training_labels)
    if num_classes is not None and num_classes != found:
        raise UserInputError(f"dataset.num_classes is {num_classes} but the table {table_file(dataset_path, table)} "
                             f"has {found} training labels; set dataset.num_classes to {found} or leave it out.")
    return found
