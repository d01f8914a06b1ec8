"""Issue 26: your own data as a table (``dataset_short: table``), its checks, splits and evaluation."""
import csv
import logging
import math

import numpy as np
import pytest
import torch
import yaml

import train
from dataset.build import gallery_copies
from dataset.prepare import main as prepare_main
from dataset.split_table import write_split_table
from dataset.table import label_order, read_table
from evaluation.evaluator import Evaluator
from evaluation.k_reciprocal import k_reciprocal_batches_inshop
from evaluation.metric_sets import MetricSet
from evaluation.neighbours import first_same_label_ranks
from evaluation.precision_at_r import inshop_retrieval_metrics
from evaluation.recall import inshop_recall_at_k
from recipe import RunRecipe
from schema import load_config
from tests.conftest import tiny_train_config, write_class_pattern_images
from tests.test_bad_inputs import assert_refused, snapshot
from utils.errors import UserInputError

TRAIN_CLASSES, TEST_CLASSES = range(4), range(4, 8)


@pytest.fixture
def tree(tmp_path):
    """8 classes x 6 images of 32 px under ``<tmp>/data/images/class_XX``."""
    return write_class_pattern_images(tmp_path / "data", 8, 6)


def image_rows(tree, classes, split, images=range(6), flags=None):
    """Rows ``path,label,split[,is_query,is_gallery]`` of the pattern tree; ``flags(image) -> (q, g)``."""
    rows = []
    for class_index in classes:
        for image in images:
            row = [f"images/class_{class_index:02d}/img_{image:03d}.png", f"class_{class_index:02d}", split]
            if flags is not None:
                row += list(flags(image)) if split == "test" else ["", ""]
            rows.append(row)
    return rows


def write_table(path, rows, header=("path", "label", "split")):
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


FLAGS = ("path", "label", "split", "is_query", "is_gallery")


def overlapping_flags(image):
    """Images 0-1 queries only, image 2 query and gallery, 3-5 gallery only."""
    return (int(image <= 2), int(image >= 2))


def query_gallery_table(tree, path):
    rows = (image_rows(tree, TRAIN_CLASSES, "train", flags=overlapping_flags)
            + image_rows(tree, TEST_CLASSES, "test", flags=overlapping_flags))
    return write_table(path, rows, FLAGS)


def table_config(dataset_path, table, mutate=None, **train_params):
    """The tiny test config on a table: no num_classes anywhere."""
    raw = tiny_train_config(dataset_path, **train_params)
    raw["dataset"].update(dataset_short="table", table=str(table))
    del raw["dataset"]["num_classes"]
    del raw["models"]["gnn_params"]["classifier"]["num_classes"]
    if mutate is not None:
        mutate(raw)
    return raw


def write_config(path, raw):
    path.write_text(yaml.safe_dump(raw))
    return path


# ------------------------------------------------------------------ reading a table
def test_a_table_gives_contiguous_sorted_labels_per_split_and_shared_test_labels(tree, tmp_path):
    table = read_table(tree, query_gallery_table(tree, tmp_path / "table.csv"))
    train_paths, train_labels = table.split("train")
    assert len(train_paths) == 24 and sorted(set(train_labels)) == [0, 1, 2, 3]
    assert train_paths[0] == str(tree / "images/class_00/img_000.png")
    query_paths, query_labels = table.split("query")
    gallery_paths, gallery_labels = table.split("gallery")
    assert (len(query_paths), len(gallery_paths)) == (12, 16)
    # a query and its gallery matches share a label; image 2 is in both
    assert dict(zip(query_paths, query_labels))[str(tree / "images/class_05/img_002.png")] == 1
    assert dict(zip(gallery_paths, gallery_labels))[str(tree / "images/class_05/img_002.png")] == 1
    assert table.has_query_gallery and len(table.split("test")[0]) == 24


def test_labels_sort_numbers_by_value_before_text():
    assert sorted(["10", "9", "b", "-1", "a", "2"], key=label_order) == ["-1", "2", "9", "10", "a", "b"]


def test_without_query_columns_every_test_image_is_query_and_gallery(tree, tmp_path):
    table_file = write_table(tmp_path / "t.csv", image_rows(tree, TRAIN_CLASSES, "train")
                             + image_rows(tree, TEST_CLASSES, "test"))
    recipe = RunRecipe(load_config(write_config(tmp_path / "c.yaml", table_config(tree, table_file))))
    assert not recipe.metric_set.query_gallery and recipe.test_splits == ("test",)
    assert recipe.distance == "euclidean" and recipe.metric_set.recall_ks == (1, 2, 4, 8)
    assert len(recipe.dataset("test")) == 24 and recipe.trained_classes == 4


def test_num_classes_comes_from_the_table_and_a_given_one_must_match(tree, tmp_path):
    table_file = query_gallery_table(tree, tmp_path / "t.csv")
    recipe = RunRecipe(load_config(write_config(tmp_path / "c.yaml", table_config(tree, table_file))))
    assert recipe.num_classes == recipe.trained_classes == 4
    assert recipe.metric_set.query_gallery and recipe.test_splits == ("query", "gallery")
    with_val = table_config(tree, table_file, mutate=lambda raw: raw["dataset"].update(val=1, val_fraction=0.5))
    assert RunRecipe(load_config(write_config(tmp_path / "v.yaml", with_val))).trained_classes == 2

    def five(raw):
        raw["dataset"]["num_classes"] = 5
        raw["models"]["gnn_params"]["classifier"]["num_classes"] = 5
    wrong = RunRecipe(load_config(write_config(tmp_path / "w.yaml", table_config(tree, table_file, five))))
    with pytest.raises(UserInputError, match="has 4 training labels; set dataset.num_classes to 4 or leave it out"):
        wrong.trained_classes


def test_the_validation_protocols_hold_out_training_labels(tree, tmp_path):
    rows = [[f"images/class_{c:02d}/img_{i:03d}.png", str(c), "train"] for c in range(8) for i in range(4)]
    rows += image_rows(tree, [7], "test", images=[4, 5])
    table_file = write_table(tmp_path / "t.csv", rows)

    def mlrc(raw):
        raw["dataset"].update(val=1, val_protocol="mlrc", val_fold=1)
    recipe = RunRecipe(load_config(write_config(tmp_path / "c.yaml", table_config(tree, table_file, mlrc))))
    held_out = {path.split("/")[-2] for path in recipe.dataset("val").paths}
    assert held_out == {"class_02", "class_03"} and recipe.trained_classes == 6
    assert recipe.dataset("train").num_classes == 6


def test_the_log_says_how_many_test_labels_were_seen_in_training(tree, tmp_path, caplog):
    rows = image_rows(tree, TRAIN_CLASSES, "train") + image_rows(tree, [2, 3, 4], "test", images=[5])
    rows = [row for row in rows if not (row[2] == "train" and row[0].endswith("img_005.png"))]
    with caplog.at_level(logging.INFO):
        read_table(tree, write_table(tmp_path / "t.csv", rows))
    assert "3 test images of 3 labels, 2 of them seen in training" in caplog.text


def test_recall_at_sets_the_k_and_a_large_gallery_gets_sop_k(tree, tmp_path):
    table_file = query_gallery_table(tree, tmp_path / "t.csv")
    raw = table_config(tree, table_file, mutate=lambda raw: raw["eval_params"].update(recall_at=[1, 3]))
    assert RunRecipe(load_config(write_config(tmp_path / "c.yaml", raw))).metric_set.recall_ks == (1, 3)
    from evaluation.metric_sets import table_metric_set
    assert table_metric_set(10_000, False).recall_ks == (1, 10, 100, 1000)
    assert table_metric_set(9_999, True).recall_ks == (1, 2, 4, 8)
    cub = tiny_train_config(tree)
    cub["eval_params"]["recall_at"] = [1, 5]
    assert RunRecipe(load_config(write_config(tmp_path / "cub.yaml", cub))).metric_set.recall_ks == (1, 5)


# ------------------------------------------------------------------ bad rows: one sentence, file and line, exit 2
def bad_tables(tree):
    """``{case: (rows, header, the words of the sentence)}``: 6 training rows, a test row (line 8), then the
    bad row (line 9)."""
    good = image_rows(tree, [0], "train") + [image_rows(tree, [4], "test")[0]]
    flagged = (image_rows(tree, [0], "train", flags=overlapping_flags)
               + [image_rows(tree, [4], "test", flags=overlapping_flags)[0]])
    return {
        "missing file": (good + [["images/class_04/nothere.png", "x", "test"]], None, "is not a file"),
        "unknown split": (good + [["images/class_04/img_001.png", "x", "val"]], None, "unknown split 'val'"),
        "empty label": (good + [["images/class_04/img_001.png", " ", "test"]], None, "an empty label"),
        "outside": (good + [["../outside.png", "x", "test"]], None, "outside the dataset folder"),
        "absolute outside": (good + [["/etc/passwd", "x", "test"]], None, "outside the dataset folder"),
        "duplicate": (good + [["images/class_04/./img_000.png", "x", "test"]], None, "a second time (first at line 8)"),
        "bad flag": (flagged + [["images/class_04/img_001.png", "x", "test", "2", "0"]], FLAGS, "is_query '2'"),
        "neither": (flagged + [["images/class_04/img_001.png", "x", "test", "0", "0"]], FLAGS, "neither query nor"),
        "short row": (good + [["images/class_04/img_001.png", "x"]], None, "2 fields where the header names 3"),
        "lone label": (good + [["images/class_01/img_000.png", "lonely", "train"]], None,
                       "training label 'lonely' with a single image"),
    }


@pytest.mark.parametrize("case", ["missing file", "unknown split", "empty label", "outside", "absolute outside",
                                  "duplicate", "bad flag", "neither", "short row", "lone label"])
def test_every_bad_row_is_one_sentence_with_file_and_line_and_exit_2(case, tree, tmp_path, caplog):
    rows, header, words = bad_tables(tree)[case]
    table_file = write_table(tmp_path / "bad.csv", rows, header or ("path", "label", "split"))
    config = write_config(tmp_path / "c.yaml", table_config(tree, table_file))
    message = assert_refused(tmp_path, caplog, ["--config_path", str(config)], str(table_file), "at line 9,",
                             words, user_files=[tree, table_file])
    assert message.count(str(table_file)) == 1


@pytest.mark.parametrize("flags, missing", [(lambda image: (0, 1), "is_query"), (lambda image: (1, 0), "is_gallery")])
def test_a_test_set_without_queries_or_without_gallery_is_refused(flags, missing, tree, tmp_path, caplog):
    rows = image_rows(tree, TRAIN_CLASSES, "train", flags=flags) + image_rows(tree, TEST_CLASSES, "test", flags=flags)
    table_file = write_table(tmp_path / "t.csv", rows, FLAGS)
    config = write_config(tmp_path / "c.yaml", table_config(tree, table_file))
    assert_refused(tmp_path, caplog, ["--config_path", str(config)], str(table_file), f"no test row with {missing} 1",
                   user_files=[tree, table_file])


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_table_without_training_or_test_rows_is_refused(split, tree, tmp_path, caplog):
    table_file = write_table(tmp_path / "t.csv", image_rows(tree, TRAIN_CLASSES, split))
    config = write_config(tmp_path / "c.yaml", table_config(tree, table_file))
    other = "test" if split == "train" else "train"
    assert_refused(tmp_path, caplog, ["--config_path", str(config)], str(table_file), f"no row with split {other}")


@pytest.mark.parametrize("header, words", [(("path", "label"), "at line 1, a header without the column split"),
                                           (("path", "label", "split", "is_query"), "is_query without is_gallery")])
def test_a_bad_header_is_refused_at_line_1(header, words, tree, tmp_path, caplog):
    table_file = write_table(tmp_path / "t.csv", [], header)
    config = write_config(tmp_path / "c.yaml", table_config(tree, table_file))
    assert_refused(tmp_path, caplog, ["--config_path", str(config)], str(table_file), words)


@pytest.mark.parametrize("mutate, words", [
    (lambda raw: raw["dataset"].pop("table"), "Key 'dataset.table' is missing"),
    (lambda raw: raw["dataset"].update(table="nothere.csv"), "nothere.csv (dataset.table) does not exist"),
    (lambda raw: raw["dataset"].update(dataset_short="cub", table=None), "Key 'dataset.num_classes' is missing"),
    (lambda raw: raw["eval_params"].update(recall_at=[4, 2]), "'eval_params.recall_at'"),
    (lambda raw: raw["models"]["gnn_params"]["classifier"].update(num_classes=4),
     "'models.gnn_params.classifier.num_classes'"),
    (lambda raw: (raw["dataset"].update(num_classes=5), raw["models"]["gnn_params"]["classifier"].update(
        num_classes=5)), "has 4 training labels; set dataset.num_classes to 4"),
])
def test_table_keys_are_checked_before_any_work(mutate, words, tree, tmp_path, caplog):
    table_file = query_gallery_table(tree, tmp_path / "t.csv")
    config = write_config(tmp_path / "c.yaml", table_config(tree, table_file, mutate))
    assert_refused(tmp_path, caplog, ["--config_path", str(config)], words)


def test_a_table_key_on_a_paper_dataset_is_refused(tree, tmp_path, caplog):
    raw = tiny_train_config(tree)
    raw["dataset"]["table"] = "t.csv"
    assert_refused(tmp_path, caplog, ["--config_path", str(write_config(tmp_path / "c.yaml", raw))],
                   "only read with dataset.dataset_short: table")


def test_the_table_config_for_a_new_user_loads_and_reads_the_walk_through_table(tmp_path):
    config = load_config("config/config_table_train.yaml")
    assert config["dataset"]["dataset_short"] == "table" and config["dataset"]["num_classes"] is None
    assert config["dataset"]["table"] == "../../digits_table.csv"


# ------------------------------------------------------------------ python -m dataset.prepare table
def test_prepare_table_writes_a_seeded_class_disjoint_split_and_leaves_the_folder_untouched(tree, tmp_path):
    folder = tree / "images"
    before = snapshot(folder)
    assert prepare_main(["table", str(folder), str(tmp_path / "a.csv"), "--seed", "3"]) == 0
    assert prepare_main(["table", str(folder), str(tmp_path / "b.csv"), "--seed", "3"]) == 0
    assert prepare_main(["table", str(folder), str(tmp_path / "c.csv"), "--seed", "4", "--test_fraction",
                         "0.25"]) == 0
    assert snapshot(folder) == before
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    table = read_table(folder, tmp_path / "a.csv")
    train_labels, test_labels = set(table.training_labels), set(table.test_labels)
    assert len(train_labels) == len(test_labels) == 4 and not train_labels & test_labels
    other = read_table(folder, tmp_path / "c.csv")
    assert int(other.is_test.sum()) == 12 and not other.has_query_gallery


def test_prepare_table_with_query_fraction_splits_each_test_class(tree, tmp_path):
    out = tmp_path / "q.csv"
    assert prepare_main(["table", str(tree / "images"), str(out), "--query_fraction", "0.5"]) == 0
    table = read_table(tree / "images", out)
    assert table.has_query_gallery
    test_rows = np.flatnonzero(table.is_test)
    assert int(table.is_query[test_rows].sum()) == 12 and not (table.is_query & table.is_gallery)[test_rows].any()


@pytest.mark.parametrize("args, words", [
    (["--test_fraction", "1"], "--test_fraction 1.0 must lie strictly between 0 and 1"),
    (["--query_fraction", "0"], "--query_fraction 0.0 must lie strictly between 0 and 1"),
])
def test_prepare_table_refuses_bad_fractions(args, words, tree, tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert prepare_main(["table", str(tree / "images"), str(tmp_path / "t.csv"), *args]) == 2
    assert words in caplog.text and not (tmp_path / "t.csv").exists()


def test_prepare_table_never_overwrites_and_never_writes_into_the_folder(tree, tmp_path, caplog):
    existing = tmp_path / "mine.csv"
    existing.write_text("my notes")
    with caplog.at_level(logging.ERROR):
        assert prepare_main(["table", str(tree / "images"), str(existing)]) == 2
        assert prepare_main(["table", str(tree / "images"), str(tree / "images" / "t.csv")]) == 2
    assert existing.read_text() == "my notes" and not (tree / "images" / "t.csv").exists()
    assert "already exists" in caplog.text and "stays untouched" in caplog.text
    with pytest.raises(UserInputError, match="class folder"):
        write_split_table(tree / "images" / "class_00", tmp_path / "x.csv")


# ------------------------------------------------------------------ a query that is also a gallery item
def brute_force_recall(query, query_labels, gallery, gallery_labels, ks, own):
    """In-Shop's rule by hand, each query against the gallery without its own image."""
    normalise = lambda x: x / np.sqrt((x ** 2).sum(1, keepdims=True) + 1e-12)  # noqa: E731
    scores = normalise(query.double().numpy()) @ normalise(gallery.double().numpy()).T
    hits = {k: 0 for k in ks}
    for row in range(len(query)):
        keep = np.arange(len(gallery)) != int(own[row])
        row_scores, row_labels = scores[row][keep], gallery_labels.numpy()[keep]
        same = row_labels == query_labels[row].item()
        if not same.any():
            continue
        closer_others = int((row_scores[~same] > row_scores[same].max()).sum())
        for k in ks:
            hits[k] += closer_others < k
    return {k: hits[k] / len(query) for k in ks}


def overlapping_sets(seed=0):
    """Queries 0-9, gallery 20 items; query i < 6 is gallery item 2 i (the same vector)."""
    generator = torch.Generator().manual_seed(seed)
    gallery = torch.randn(20, 6, generator=generator)
    gallery_labels = torch.arange(20) % 7
    query = torch.randn(10, 6, generator=generator)
    query_labels = torch.arange(10) % 7
    own = torch.full((10,), -1)
    for row in range(6):
        query[row], query_labels[row], own[row] = gallery[2 * row], gallery_labels[2 * row], 2 * row
    return query, query_labels, gallery, gallery_labels, own


def test_a_query_that_is_also_a_gallery_item_is_never_its_own_neighbour_in_recall():
    query, query_labels, gallery, gallery_labels, own = overlapping_sets()
    ks = (1, 2, 4, 8)
    recalls = inshop_recall_at_k(query, query_labels, gallery, gallery_labels, ks, block_size=3, query_self=own)
    assert recalls == pytest.approx(brute_force_recall(query, query_labels, gallery, gallery_labels, ks, own))
    with_self = inshop_recall_at_k(query, query_labels, gallery, gallery_labels, ks)
    assert with_self[1] > recalls[1]  # matching itself would lift R@1


def test_the_extra_metrics_leave_out_the_querys_own_image():
    query, query_labels, gallery, gallery_labels, own = overlapping_sets(1)
    metrics = inshop_retrieval_metrics(query, query_labels, gallery, gallery_labels, query_self=own)
    per_query = []
    for row in range(len(query)):
        keep = torch.arange(len(gallery)) != own[row]
        per_query.append(inshop_retrieval_metrics(query[row:row + 1], query_labels[row:row + 1], gallery[keep],
                                                  gallery_labels[keep]))
    counted = [values for values in per_query if not math.isnan(values["MAP@R"])]
    for name in ("MAP@R", "RP", "P@1"):
        assert metrics[name] == pytest.approx(sum(values[name] for values in counted) / len(counted))


def test_pseudo_test_graphs_and_picture_ranks_never_hold_the_querys_own_image():
    query, query_labels, gallery, gallery_labels, own = overlapping_sets(2)
    graphs = k_reciprocal_batches_inshop(query, gallery, 4, k1=3, query_self=own)
    assert graphs.shape == (10, 3)
    assert not (graphs == own[:, None]).any()
    assert (first_same_label_ranks(query, query_labels, gallery, gallery_labels, distance="cosine")[:6] == 1).all()
    ranks = first_same_label_ranks(query, query_labels, gallery, gallery_labels, distance="cosine", query_self=own)
    for row in range(len(query)):
        keep = torch.arange(len(gallery)) != int(own[row])
        alone = first_same_label_ranks(query[row:row + 1], query_labels[row:row + 1], gallery[keep],
                                       gallery_labels[keep], distance="cosine")
        assert int(ranks[row]) == int(alone[0]) or int(alone[0]) == int(keep.sum()) + 1 == int(ranks[row]) - 1


def test_the_evaluator_maps_shared_images_from_dataset_indices(tree, tmp_path):
    table = read_table(tree, query_gallery_table(tree, tmp_path / "t.csv"))

    class Split:
        def __init__(self, paths):
            self.paths = paths
    query_paths, gallery_paths = table.split("query")[0], table.split("gallery")[0]
    copies = gallery_copies(Split(query_paths), Split(gallery_paths))
    assert int((copies >= 0).sum()) == 4  # image 2 of each test class
    assert all(gallery_paths[copy] == query_paths[row] for row, copy in enumerate(copies) if copy >= 0)
    query, query_labels, gallery, gallery_labels, own = overlapping_sets(3)
    loader = lambda x, y: [(x.view(len(x), 6, 1, 1), y, torch.arange(len(x)), ["p"] * len(x))]  # noqa: E731
    evaluator = Evaluator(MetricSet((1, 2), with_nmi=False, query_gallery=True), "cpu")

    class Identity(torch.nn.Module):
        def forward(self, images, output_option="plain"):
            return None, images.flatten(1)
    metrics = evaluator.evaluate(Identity(), query_loader=loader(query, query_labels),
                                 gallery_loader=loader(gallery, gallery_labels), query_in_gallery=own.numpy())
    expected = brute_force_recall(query, query_labels, gallery, gallery_labels, (1, 2), own)
    assert (metrics["R@1"], metrics["R@2"]) == pytest.approx((expected[1], expected[2]))
    assert torch.equal(evaluator.last.query_self, own)


# ------------------------------------------------------------------ end to end on a tiny table
@pytest.mark.slow
def test_train_test_pseudo_test_embed_and_results_on_a_tiny_table(pattern_tree, tmp_path, caplog, capsys):
    import embed
    from tools import results
    rows = (image_rows(pattern_tree, TRAIN_CLASSES, "train", range(12), overlapping_flags)
            + image_rows(pattern_tree, TEST_CLASSES, "test", range(12), overlapping_flags))
    table_file = write_table(tmp_path / "tiny.csv", rows, FLAGS)
    before = snapshot(pattern_tree)

    def small(raw):
        raw["train_params"].update(num_epochs=2, lr_drop_epochs=[2], max_iters_per_epoch=2)
        raw["logging"] = {"pictures": 1}
        raw["eval_params"]["metrics"] = ["map_at_r"]
    config = write_config(tmp_path / "train.yaml", table_config(pattern_tree, table_file, small))
    with caplog.at_level(logging.INFO):
        assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")]) == 0
    assert "of them seen in training (12 queries against a gallery of 40)" in caplog.text
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "pictures" / "best_epoch" / "retrieval_worst.png").is_file()
    weights = yaml.safe_load((run / "summary.json").read_text())["best_weights"]
    for mode in ("test", "pseudo_test"):
        assert train.main(["--config_path", str(config), "--mode", mode, "--bb_path", str(run / weights["backbone"]),
                           "--gnn_path", str(run / weights["mpn"]), "--output_dir", str(tmp_path / mode)]) == 0
        (test_run,) = (tmp_path / mode).iterdir()
        metrics = yaml.safe_load((test_run / "metrics.json").read_text())
        assert set(metrics.get("backbone", metrics)) >= {"R@1", "R@8", "NMI", "MAP@R"}
    output = tmp_path / "embedded.npz"
    assert embed.main(["--run", str(run), "--images", str(pattern_tree / "images"), "--output", str(output)]) == 0
    assert np.load(output, allow_pickle=False)["embeddings"].shape == (96, 512)
    import retrieve
    assert retrieve.main(["--run", str(run), "--gallery", str(output), "--queries",
                          str(pattern_tree / "images" / "class_05" / "img_000.png"), "--top_k", "3",
                          "--output", str(tmp_path / "retrieved")]) == 0
    assert (tmp_path / "retrieved" / "retrieval.png").is_file()
    capsys.readouterr()
    assert results.main([str(tmp_path / "runs"), "--group"]) == 0
    assert "| table tiny.csv |" in capsys.readouterr().out
    assert results.main([str(tmp_path / "pseudo_test")]) == 0
    listed = capsys.readouterr().out
    assert "| finished |" in listed and "MPN R@1" in listed
    assert snapshot(pattern_tree) == before


def test_paths_that_need_normalising_read_as_the_plain_ones_and_blank_lines_are_skipped(tree, tmp_path):
    rows = image_rows(tree, TRAIN_CLASSES, "train") + image_rows(tree, TEST_CLASSES, "test")
    plain = read_table(tree, write_table(tmp_path / "plain.csv", rows))
    rows[0][0] = str(tree / rows[0][0])  # absolute, inside the dataset folder
    rows[1][0] = "images/./class_00//" + rows[1][0].split("/")[-1]
    text = "\ufeff" + (tmp_path / "plain.csv").read_text().splitlines()[0] + "\n\n" + "\n".join(
        ",".join(row) for row in rows) + "\n\n"
    (tmp_path / "odd.csv").write_text(text, encoding="utf-8")
    odd = read_table(tree, tmp_path / "odd.csv")
    assert odd.paths == plain.paths and odd.numbers.tolist() == plain.numbers.tolist()
    with pytest.raises(UserInputError, match="at line 5, the path 'images/class_00/nothere.png'"):
        (tmp_path / "missing.csv").write_text(text.replace(rows[2][0], "images/class_00/nothere.png"))
        read_table(tree, tmp_path / "missing.csv")
