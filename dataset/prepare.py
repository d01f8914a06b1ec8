"""Lay out a download the way ``build_dataset`` reads it, never touching the download.

    python -m dataset.prepare sop|inshop|cars <download dir> <out dir>
    python -m dataset.prepare table <folder of class folders> <out.csv>
        [--test_fraction F] [--query_fraction Q] [--seed S]

sop:    <out>/images/{class_id:05d}/<image> from Ebay_train.txt and Ebay_test.txt
        (SOP's training class ids all precede its test ones, so the sorted
        class folders put the 11,318 training classes first).
cars:   <out>/images/{class:03d}/<image> from the devkit's cars_annos.mat
        (all 196 classes; the first 98 train).
inshop: <out>/Img/<image_name> and <out>/Eval/list_eval_partition.txt.
table:  a class-disjoint split table of your own class folders, for
        ``dataset_short: table`` (``dataset.split_table``); only the CSV is written.

Files are hard-linked (copied where the output is on another file system);
nothing in the download is moved or deleted. A second run finds every file
in place and reports 0 new.
"""
import argparse
import hashlib
import logging
import os
import shutil
import sys
from pathlib import Path

from tqdm import tqdm

from .annotations import read_cars_annotations, read_sop_list
from .inshop import PARTITION_FILE, read_partition
from .split_table import write_split_table
from utils.boundary import command
from utils.console import setup_console_logging
from utils.errors import UserInputError
from utils.flags import MAX_SEED, at_least

logger = logging.getLogger(__name__)


def link_or_copy(source, target):
    """Place ``source`` at ``target`` unless it is there already; True when placed now.

    A copy goes to a temporary name first, so an interrupted run never
    leaves a half-written file under the final name. A different file
    already at ``target`` is an error, never counted as "already there".
    """
    if target.exists():
        if not (os.path.samefile(source, target) or source.stat().st_size == target.stat().st_size):
            raise UserInputError(f"{target} already exists and is not a copy of {source}; prepare into an "
                                 f"empty output folder.")
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        partial = target.with_name(target.name + ".partial")
        try:
            shutil.copy2(source, partial)
            os.replace(partial, target)
        except OSError as error:
            raise UserInputError(f"Cannot write {target} ({error}); choose an output folder "
                                 f"you can write to.") from error
    return True


def listed_image(image_root, relative_path, where):
    source = image_root / relative_path
    if not source.is_file():
        raise UserInputError(f"The image {source} listed in {where} does not exist; pass the "
                             f"complete download folder.")
    return source


def check_training_classes_first(train_rows, test_rows, train_file, test_file):
    last_training_class = max(class_id for class_id, _, _ in train_rows)
    first_test_class = min(class_id for class_id, _, _ in test_rows)
    if first_test_class <= last_training_class:
        raise UserInputError(
            f"The class ids of {test_file} must all follow those of {train_file} (test class "
            f"{first_test_class} <= training class {last_training_class}) so that the sorted "
            f"class folders put the training classes first; use the original SOP lists.")


def sop_plan(download, out):
    """``(source, target)`` pairs and the number of classes for SOP."""
    train_file, test_file = download / "Ebay_train.txt", download / "Ebay_test.txt"
    train_rows, test_rows = read_sop_list(train_file), read_sop_list(test_file)
    check_training_classes_first(train_rows, test_rows, train_file, test_file)
    rows = train_rows + test_rows
    plan = [(listed_image(download, relative_path, where),
             out / "images" / f"{class_id:05d}" / Path(relative_path).name)
            for class_id, relative_path, where in rows]
    return plan, len({class_id for class_id, _, _ in rows})


def cars_annotation_file(download):
    """``cars_annos.mat`` at the top of the download or in its ``devkit/``."""
    for candidate in (download / "cars_annos.mat", download / "devkit" / "cars_annos.mat"):
        if candidate.is_file():
            return candidate
    return download / "cars_annos.mat"


def cars_plan(download, out):
    """Pairs for Cars196; zero-padded class folders so sorted order is class order."""
    rows = read_cars_annotations(cars_annotation_file(download))
    plan = [(listed_image(download, relative_path, where),
             out / "images" / f"{class_id:03d}" / Path(relative_path).name)
            for class_id, relative_path, where in rows]
    return plan, len({class_id for class_id, _, _ in rows})


def inshop_plan(download, out):
    """Pairs for In-Shop: the partition file and every image it lists.

    Image names (``img/...``) are looked up under ``<download>/Img`` when it
    exists, else directly under the download folder.
    """
    partition = download / PARTITION_FILE
    if not partition.is_file():
        raise UserInputError(f"The In-Shop partition file {partition} does not exist; pass the "
                             f"In-Shop download folder that holds Eval/ and Img/.")
    rows = [row for split_rows in read_partition(download).values() for row in split_rows]
    image_root = download / "Img" if (download / "Img").is_dir() else download
    plan = [(partition, out / PARTITION_FILE)]
    plan += [(listed_image(image_root, image_name, partition), out / "Img" / image_name)
             for image_name, _ in rows]
    return plan, len({item for _, item in rows})


PLANS = {"sop": sop_plan, "cars": cars_plan, "inshop": inshop_plan}


def with_unique_targets(plan, download):
    """The plan with one target per source: same-named images of different folders both kept.

    Names stay the download's unless two different sources would land on one
    target; then each of those gets a suffix from its path in the download
    (``<stem>-<8 hex digits><suffix>``). A source listed twice is placed once.
    """
    sources_of = {}
    for source, target in plan:
        sources_of.setdefault(target, [])
        if source not in sources_of[target]:
            sources_of[target].append(source)
    unique = []
    for target, sources in sources_of.items():
        if len(sources) == 1:
            unique.append((sources[0], target))
            continue
        for source in sources:
            tag = hashlib.sha1(source.relative_to(download).as_posix().encode()).hexdigest()[:8]
            unique.append((source, target.with_name(f"{target.stem}-{tag}{target.suffix}")))
    return unique


def check_output_outside_download(download, out):
    resolved_download, resolved_out = download.resolve(), out.resolve()
    if resolved_out == resolved_download or resolved_download in resolved_out.parents:
        raise UserInputError(f"The output folder {out} lies inside the download {download}, which must stay "
                             f"untouched; choose an output folder outside it.")


def prepare(name, download, out):
    """Place every file of dataset ``name``; returns (files placed now, files in the plan)."""
    download, out = Path(download), Path(out)
    if not download.is_dir():
        raise UserInputError(f"The download folder {download} does not exist; pass the folder "
                             f"the {name} archive was unpacked into.")
    check_output_outside_download(download, out)
    plan, num_classes = PLANS[name](download, out)
    plan = with_unique_targets(plan, download)
    placed = sum(link_or_copy(source, target)
                 for source, target in tqdm(plan, desc=f"Preparing {name}", unit="file"))
    logger.info("%s: %d classes, %d files in %s (%d new, %d already there).",
                name, num_classes, len(plan), out, placed, len(plan) - placed)
    return placed, len(plan)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m dataset.prepare",
        description="Lay out a dataset download for training, by hard links or copies; or write the split "
                    "table of your own class folders.")
    commands = parser.add_subparsers(dest="dataset", required=True)
    for name in sorted(PLANS):
        layout = commands.add_parser(name, help=f"lay out the {name} download")
        layout.add_argument("download_dir", help="the unpacked download (read only)")
        layout.add_argument("out_dir", help="where the prepared layout goes")
    table = commands.add_parser("table", help="write a class-disjoint split table of a folder of class folders")
    table.add_argument("folder", help="the folder with one sub-folder of images per class (read only)")
    table.add_argument("out_csv", help="the table to write (a new file outside the folder)")
    table.add_argument("--test_fraction", type=float, default=0.5, help="share of the classes that test (0.5)")
    table.add_argument("--query_fraction", type=float, default=None,
                       help="share of each test class's images that are queries, the rest gallery; "
                            "default: no queries, every test image against all the others")
    table.add_argument("--seed", type=at_least(0, MAX_SEED), default=0, help="seed of the draw (0)")
    return parser.parse_args(argv)


@command("dataset.prepare")
def main(argv=None):
    """Command line entry; returns the exit code (2 for a problem the user can fix)."""
    setup_console_logging()
    args = parse_args(argv)
    if args.dataset == "table":
        write_split_table(args.folder, args.out_csv, args.test_fraction, args.query_fraction, args.seed)
    else:
        prepare(args.dataset, args.download_dir, args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
