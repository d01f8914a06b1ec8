"""Issue 28, the fuzzer: hostile flags for every command, each command's ``main(argv)`` run in-process.

Flags are drawn from each command's own parser (``flags_of``: a flag added to
a command is fuzzed without being listed here) with hostile values (numbers
out of range, NaN, text with dashes, spaces and Unicode, paths to nothing,
to folders, to the user's files); asserted as for the files: exit 0 or 2,
no traceback, no file of the user's changed. The benchmarks stop where
their measurement would start (``ReachedWork``): only their flags are tested.
"""
import importlib
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

import embed
import export
import index
import retrieve
import train
from dataset import prepare
from tests.conftest import fuzz_examples, tiny_train_config
from tests.fuzzing import check_outcome, flags_of, hostile_numbers, hostile_text, scratch
from tests.test_fuzz_files import BOUNDED_RUN, finished_run, gallery_npz, small_images  # noqa: F401 - fixtures
from tools import plot, results

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def user_files(tmp_path_factory, pattern_tree):
    """A config, a text file, a folder and a name that does not exist: paths a flag may be given."""
    root = tmp_path_factory.mktemp("fuzz_flags")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_train_config(pattern_tree)))
    (root / "notes.txt").write_text("mine\n")
    (root / "folder").mkdir()
    return root


def paths(user_files, *more):
    return st.sampled_from([str(user_files / "config.yaml"), str(user_files / "notes.txt"),
                            str(user_files / "folder"), str(user_files / "missing"), "/dev/null", "-", "",
                            *map(str, more)])


def values(user_files, *more):
    return st.one_of(paths(user_files, *more), hostile_text(), hostile_numbers().map(str))


def argv_of(flags, value_strategy):
    """A list of ``--flag value`` pairs (or bare flags) drawn from ``flags``."""
    pair = st.sampled_from(flags).flatmap(lambda flag: st.tuples(st.just(flag), value_strategy))
    return st.lists(pair, max_size=4).map(lambda pairs: [part for pair in pairs for part in pair if part is not None])


# --output_dir is the test's own scratch folder: a run folder written into a drawn folder of the user's is
# the command doing its job, yet it would read as a changed user file.
TRAIN_FLAGS = flags_of(train.main, leave_out=["--output_dir"])


@fuzz_examples(15)
@given(data=st.data())
def test_fuzz_train_flags(user_files, pattern_tree, data):
    with scratch() as folder:
        drawn = data.draw(argv_of(TRAIN_FLAGS, values(user_files, pattern_tree)))
        argv = ["--config_path", str(user_files / "config.yaml"), "--output_dir", str(folder / "runs"), *drawn,
                *BOUNDED_RUN]
        check_outcome(train.main, argv, watched=[user_files, pattern_tree])




@fuzz_examples(5)
@given(data=st.data())
def test_fuzz_embed_flags(user_files, finished_run, small_images, data):
    with scratch() as folder:
        drawn = data.draw(argv_of(flags_of(embed.main),
                                  values(user_files, finished_run, small_images, folder / "new.npz")))
        check_outcome(embed.main, ["--run", str(finished_run), "--images", str(small_images),
                                   "--output", str(folder / "out.npz"), *drawn],
                      watched=[user_files, finished_run, small_images])


@fuzz_examples(25)
@given(data=st.data())
def test_fuzz_retrieve_flags(user_files, gallery_npz, small_images, data):
    with scratch() as folder:
        drawn = data.draw(argv_of(flags_of(retrieve.main),
                                  values(user_files, gallery_npz, small_images, folder / "new")))
        check_outcome(retrieve.main, ["--gallery", str(gallery_npz), "--queries", str(gallery_npz), "--top_k", "1",
                                      "--output", str(folder / "out"), *drawn],
                      watched=[user_files, gallery_npz, small_images])


@fuzz_examples(5)
@given(data=st.data())
def test_fuzz_index_flags(user_files, gallery_npz, data):
    with scratch() as folder:
        drawn = data.draw(argv_of(flags_of(index.main), values(user_files, gallery_npz, folder / "new.index")))
        check_outcome(index.main, ["--gallery", str(gallery_npz), "--kind", "flat", "--output",
                                   str(folder / "out.index"), *drawn], watched=[user_files, gallery_npz])


@fuzz_examples(3)
@given(data=st.data())
def test_fuzz_export_flags(user_files, finished_run, data):
    """Not ``--check`` or ``--tolerance``: a check that finds a difference above the tolerance exits 1 by design."""
    with scratch() as folder:
        drawn = data.draw(argv_of(flags_of(export.main, leave_out=["--check", "--tolerance"]),
                                  values(user_files, finished_run, folder / "new.pt")))
        check_outcome(export.main, ["--run", str(finished_run), "--format", "torchscript", "--output",
                                    str(folder / "model.pt"), *drawn], watched=[user_files, finished_run])


@fuzz_examples(5)
@given(data=st.data())
def test_fuzz_prepare_results_and_plot_arguments(user_files, finished_run, data):
    with scratch() as folder:
        # Not the whole file system: tools.results would (rightly) search all of "/" for run folders.
        pool = values(user_files, finished_run, finished_run.parent, folder / "new").filter(
            lambda value: value.strip() not in ("/", "../..", "~", "$HOME") and not value.startswith(("/", "..")) or
            value.startswith(str(user_files.parent)))
        dataset = data.draw(st.one_of(st.sampled_from(["sop", "inshop", "cars"]), hostile_text()))
        arguments = data.draw(st.lists(pool, max_size=3))
        watched = [user_files, finished_run]
        check_outcome(prepare.main, [dataset, *arguments], watched=watched)
        check_outcome(results.main, [*arguments, *data.draw(argv_of(flags_of(results.main), pool))],
                      watched=watched)
        check_outcome(plot.main, [*arguments, *data.draw(argv_of(flags_of(plot.main), pool))], watched=watched)


@fuzz_examples(60)
@given(data=st.data())
def test_fuzz_prepare_table_flags(user_files, small_images, data):
    """The table subcommand's own flags (its --seed -1 was a NumPy ValueError reported as a bug)."""
    with scratch() as folder:
        drawn = data.draw(argv_of(flags_of(prepare.main, "table"),
                                  values(user_files, small_images, folder / "new.csv")))
        check_outcome(prepare.main, ["table", str(small_images), str(folder / "table.csv"), *drawn],
                      watched=[user_files, small_images])


class ReachedWork(BaseException):
    """The benchmark accepted its flags and would start measuring now (not an ``Exception``: the boundary
    lets it through)."""


def stop_at(*names):
    def stop(*args, **kwargs):
        raise ReachedWork
    return [(name, stop) for name in names]


# Each benchmark, and where its measurement starts (patched to stop there).
BENCHMARKS = {
    "benchmarks.evaluation": stop_at("alternate", "run_in_child"),
    "benchmarks.loader": stop_at("write_jpegs"),
    "benchmarks.mpn": stop_at("build_mpn"),
    "benchmarks.pseudo_test": stop_at("median_of_repeats"),
    "benchmarks.train_step": stop_at("random_batch", "mpn_share"),
    "benchmarks.ablation": stop_at("run_ablation"),
    "benchmarks.index": stop_at("clustered_embeddings"),
    "benchmarks.table_reader": stop_at("write_images_and_table"),
    "benchmarks.threads": stop_at("prepare_dataset"),
    "benchmarks.mpn_at_test_time": stop_at("train_pattern_run", "rows_of_run"),
}


@fuzz_examples(15)
@pytest.mark.parametrize("name", sorted(BENCHMARKS))
@given(data=st.data())
def test_fuzz_benchmark_flags(user_files, monkeypatch, name, data):
    module = importlib.import_module(name)
    for attribute, replacement in BENCHMARKS[name]:
        monkeypatch.setattr(module, attribute, replacement)
    with scratch() as folder:
        drawn = data.draw(argv_of(flags_of(module.main), values(user_files, folder / "new")))
        try:
            check_outcome(module.main, drawn, watched=[user_files])
        except ReachedWork:
            pass


def test_every_benchmark_is_fuzzed():
    on_disk = {f"benchmarks.{path.stem}" for path in (Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py")
               if "def main(" in path.read_text(encoding="utf-8")}
    assert set(BENCHMARKS) == on_disk
