"""Seconds and peak memory of reading a dataset table of a million rows (``dataset.table``).

Run by hand: ``python -m benchmarks.table_reader``. Writes, in a temporary
folder, ``--labels`` folders of empty image files (the reader lists folders
and never opens an image) and a CSV of ``--rows`` rows with all five columns
(80% training rows, the test rows split into queries and gallery), then
reads it as a run does: every row checked, labels numbered, the splits
taken. Reported: the seconds of the read (wall clock and CPU time, which a
busy machine inflates less), and its peak memory twice, as the
growth of the process's peak resident size and as tracemalloc's peak of
Python allocations (a second, slower read under tracemalloc).
"""
import argparse
import csv
import logging
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.table import read_table, _read_table_once  # noqa: E402
from utils.boundary import command  # noqa: E402
from utils.flags import MAX_ITEMS, at_least  # noqa: E402

TRAIN_SHARE = 0.8
QUERY_EVERY = 5  # every fifth test image is a query, the others gallery


def write_images_and_table(root, num_rows, num_labels):
    """Empty files ``<root>/<label>/<n>.jpg`` and ``<root>/../table.csv`` listing them; returns the table."""
    table = root.parent / "table.csv"
    per_label = -(-num_rows // num_labels)
    num_train_labels = int(num_labels * TRAIN_SHARE)
    with open(table, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "label", "split", "is_query", "is_gallery"])
        row = 0
        for label in range(num_labels):
            folder = root / f"label_{label:05d}"
            folder.mkdir(parents=True)
            for number in range(min(per_label, num_rows - row)):
                name = f"{number:05d}.jpg"
                (folder / name).touch()
                if label < num_train_labels:
                    writer.writerow([f"{folder.name}/{name}", label, "train", "", ""])
                else:
                    query = number % QUERY_EVERY == 0
                    writer.writerow([f"{folder.name}/{name}", label, "test", int(query), int(not query)])
                row += 1
    return table


def timed_read(root, table):
    """Wall and CPU seconds of one read (the cache cleared first), and the splits a run takes."""
    _read_table_once.cache_clear()
    wall, cpu = time.perf_counter(), time.process_time()
    dataset_table = read_table(root, table)
    splits = {split: dataset_table.split(split) for split in ("train", "query", "gallery")}
    return (time.perf_counter() - wall, time.process_time() - cpu), splits


@command("benchmarks.table_reader")
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=at_least(1, MAX_ITEMS), default=1_000_000)
    parser.add_argument("--labels", type=at_least(1, MAX_ITEMS), default=1_000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "images"
        started = time.perf_counter()
        table = write_images_and_table(root, args.rows, args.labels)
        print(f"wrote {args.rows:,} empty images in {args.labels:,} folders and {table.stat().st_size / 1e6:.1f} MB "
              f"of table in {time.perf_counter() - started:.1f} s")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        (wall, cpu), splits = timed_read(root, table)
        rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
        sizes = ", ".join(f"{split} {len(paths):,}" for split, (paths, _) in splits.items())
        print(f"read and split in {wall:.2f} s ({cpu:.2f} s of CPU; {sizes}); peak resident size grew by "
              f"{rss_growth:.0f} MB")
        del splits
        tracemalloc.start()
        timed_read(root, table)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"tracemalloc peak of the read: {peak / 1e6:.0f} MB ({peak / args.rows:.0f} bytes per row)")


if __name__ == "__main__":
    main()
