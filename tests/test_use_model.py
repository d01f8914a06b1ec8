"""Issue 16: embed.py, retrieve.py and the pictures drawn after evaluation."""
import csv
import json
import logging
import os
import shutil

import numpy as np
import PIL.Image
import pytest
import torch
import yaml

import embed
import retrieve
from dataset import build_dataset, build_eval_loader, build_transform
from dataset.image_folder import read_image_folder
from evaluation.evaluator import Evaluator
from evaluation.faiss_neighbours import faiss_nearest_neighbours
from evaluation.neighbours import first_same_label_ranks, nearest_neighbours, readable_distances
from inference.embedding_file import EmbeddedImages, load_embeddings, save_embeddings
from inference.pictures import grid_size
from net import build_backbone
from tests.conftest import tiny_train_config, write_image
from schema import config_to_yaml, load_config
from utils.errors import UserInputError

TEST_CLASSES = ("class_04", "class_05", "class_06", "class_07")


# ------------------------------------------------------------------ helpers
def brute_force_neighbours(queries, items, k, distance="euclidean", exclude=None):
    """Float64 distances to every item, sorted by (distance, index); ``exclude[i]`` left out."""
    queries, items = np.asarray(queries, np.float64), np.asarray(items, np.float64)
    if distance == "cosine":
        queries = queries / np.sqrt((queries ** 2).sum(1, keepdims=True) + 1e-12)
        items = items / np.sqrt((items ** 2).sum(1, keepdims=True) + 1e-12)
        scores = 1.0 - queries @ items.T
    else:
        scores = np.sqrt(((queries[:, None, :] - items[None, :, :]) ** 2).sum(2))
    indices, distances = [], []
    for row, row_scores in enumerate(scores):
        order = [i for i in np.lexsort((np.arange(len(items)), row_scores))
                 if exclude is None or i != exclude[row]][:k]
        indices.append(order)
        distances.append(row_scores[order])
    return np.array(indices), np.array(distances)


def error_lines(caplog):
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def assert_refused(caplog, main, args, *patterns):
    """Exit 2 with one error sentence that contains every pattern."""
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main(args) == 2
    errors = error_lines(caplog)
    assert len(errors) == 1, errors
    assert "\n" not in errors[0] and "Traceback" not in errors[0]
    for pattern in patterns:
        assert pattern in errors[0], (pattern, errors[0])


@pytest.fixture(scope="module")
def model_run(tmp_path_factory, pattern_tree):
    """A run folder as train.py leaves it (config.yaml, summary.json, best backbone), untrained weights."""
    folder = tmp_path_factory.mktemp("run")
    raw_path = folder / "raw.yaml"
    raw_path.write_text(yaml.safe_dump(tiny_train_config(pattern_tree)))
    config = load_config(raw_path)
    (folder / "config.yaml").write_text(config_to_yaml(config))
    torch.manual_seed(0)
    backbone, _ = build_backbone(config["models"]["encoder_params"], config["dataset"]["num_classes"])
    torch.save(backbone.state_dict(), folder / "0.5resnet18_cub.pth")
    (folder / "summary.json").write_text(json.dumps({"best_weights": {"backbone": "0.5resnet18_cub.pth",
                                                                      "mpn": "0.5gnn_resnet18_cub.pth"}}))
    return folder


@pytest.fixture(scope="module")
def embedded_tree(model_run, pattern_tree, tmp_path_factory):
    """embed.py over the whole pattern tree (8 classes x 12 images)."""
    output = tmp_path_factory.mktemp("embedded") / "tree.npz"
    assert embed.main(["--run", str(model_run), "--images", str(pattern_tree / "images"),
                       "--output", str(output)]) == 0
    return output


# ------------------------------------------------------- neighbour search
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_nearest_neighbours_equal_a_brute_force_search_with_ties_by_index(distance):
    generator = torch.Generator().manual_seed(0)
    items = torch.randn(60, 5, generator=generator)
    items[10:20] = items[0]  # exact ties: equal distances, the lower index comes first
    queries = torch.cat([items[:3], torch.randn(7, 5, generator=generator)])
    exclude = torch.tensor([0, 1, 2] + [-1] * 7)
    indices, scores = nearest_neighbours(queries, items, 12, distance, exclude, block_size=4)
    distances = readable_distances(distance, scores)
    expected_indices, expected_distances = brute_force_neighbours(queries, items, 12, distance, exclude.numpy())
    assert indices.tolist() == expected_indices.tolist()
    np.testing.assert_allclose(distances.numpy(), expected_distances, rtol=1e-9, atol=1e-12)
    assert indices[0, :10].tolist() == list(range(10, 20))  # query 0 is excluded, its copies follow in order


def test_nearest_neighbours_refuse_more_neighbours_than_items():
    with pytest.raises(ValueError):
        nearest_neighbours(torch.randn(2, 3), torch.randn(4, 3), 4, exclude=torch.tensor([0, -1]))


def test_faiss_search_returns_the_exact_neighbours_without_the_excluded_item():
    generator = torch.Generator().manual_seed(1)
    items = torch.randn(40, 6, generator=generator)
    exclude = torch.tensor([3, -1, 7])
    queries = torch.stack([items[3], torch.randn(6, generator=generator), items[7]])
    exact_indices, exact_scores = nearest_neighbours(queries, items, 5, "euclidean", exclude)
    fast_indices, fast_distances = faiss_nearest_neighbours(queries, items, 5, "euclidean", exclude)
    assert fast_indices.tolist() == exact_indices.tolist()
    np.testing.assert_allclose(fast_distances.numpy(), readable_distances("euclidean", exact_scores).numpy(),
                               atol=1e-4)


def test_first_same_label_ranks_count_the_other_label_items_before_the_first_same_label_one():
    points = torch.tensor([[0.0], [1.0], [2.5], [3.0], [10.0]])
    labels = torch.tensor([0, 1, 0, 1, 2])
    # item 1 (at 1.0): items 0 and 2 (other label) come before item 3 -> rank 3;
    # item 4 has no other item of its label -> number of items + 1.
    assert first_same_label_ranks(points, labels).tolist() == [2, 3, 3, 2, 6]
    queries = torch.tensor([[2.9]])
    assert first_same_label_ranks(queries, torch.tensor([0]), points, labels).tolist() == [2]


# --------------------------------------------------------- image folders
def test_class_folders_give_labels_and_a_loose_image_means_no_labels(tmp_path):
    write_image(tmp_path / "tree" / "b" / "x.png")
    write_image(tmp_path / "tree" / "a" / "deep" / "y.jpg")
    listing = read_image_folder(tmp_path / "tree")
    assert listing.classes == ["a", "b"] and listing.labels == [0, 1]
    write_image(tmp_path / "tree" / "loose.png")
    assert read_image_folder(tmp_path / "tree").labels is None


def test_embedding_file_holds_plain_arrays(tmp_path):
    embedded = EmbeddedImages(np.ones((2, 3), np.float32), ["a/x.png", "b/y.png"], tmp_path, "euclidean",
                              np.array([0, 1]), ["a", "b"])
    save_embeddings(embedded, tmp_path / "e.npz")
    with np.load(tmp_path / "e.npz", allow_pickle=False) as data:
        assert data["paths"].dtype.kind == "U" and data["classes"].dtype.kind == "U"
        assert data["embeddings"].dtype == np.float32
    loaded = load_embeddings(tmp_path / "e.npz", "--gallery")
    assert loaded.paths == embedded.paths and loaded.class_names() == ["a", "b"]
    with pytest.raises(UserInputError):
        np.savez(tmp_path / "other.npz", x=np.zeros(2))
        load_embeddings(tmp_path / "other.npz", "--gallery")


# ----------------------------------------------------------------- embed.py
def test_embed_gives_the_embeddings_of_the_evaluator(model_run, embedded_tree, pattern_tree):
    config = load_config(model_run / "config.yaml")
    backbone, _ = build_backbone({**config["models"]["encoder_params"], "pretrained_path":
                                  str(model_run / "0.5resnet18_cub.pth")}, 4)
    dataset = config["dataset"]
    transform = build_transform(dataset["trans"], False, "resnet18", crop_size=dataset["crop_size"],
                                resize_size=dataset["resize_size"])
    test_set = build_dataset("cub", pattern_tree, "test", 4, transform)
    evaluator = Evaluator("cub", "cpu", output_option=config["eval_params"]["output_test_enc"])
    evaluator.evaluate(backbone, loader=build_eval_loader(test_set, 16, 0))
    expected = evaluator.last.gallery.embeddings.numpy()

    embedded = load_embeddings(embedded_tree, "--gallery")
    assert embedded.embeddings.shape == (96, 512) and embedded.embeddings.dtype == np.float32
    assert embedded.classes == [f"class_{i:02d}" for i in range(8)]
    test_rows = [row for row, path in enumerate(embedded.paths) if path.split("/")[0] in TEST_CLASSES]
    assert [embedded.absolute_paths()[row] for row in test_rows] == test_set.paths
    np.testing.assert_allclose(embedded.embeddings[test_rows], expected, rtol=1e-5, atol=1e-6)
    assert embedded.labels[test_rows].tolist() == [4 + label for label in test_set.labels]


def test_embed_logs_counts_and_skips_an_unreadable_image(model_run, pattern_tree, tmp_path, caplog):
    tree = tmp_path / "tree"
    shutil.copytree(pattern_tree / "images" / "class_00", tree / "class_00")
    (tree / "class_00" / "broken.png").write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING):
        assert embed.main(["--run", str(model_run), "--images", str(tree), "--output", str(tmp_path / "e.npz")]) == 0
    embedded = load_embeddings(tmp_path / "e.npz", "--gallery")
    assert len(embedded.paths) == 12 and "class_00/broken.png" not in embedded.paths
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert sum("broken.png" in message for message in warnings) == 1
    assert any("1 of 13 images could not be read" in message for message in warnings)


def test_embed_with_weights_and_config_path_equals_embed_with_run(model_run, embedded_tree, pattern_tree, tmp_path):
    assert embed.main(["--weights", str(model_run / "0.5resnet18_cub.pth"), "--config_path",
                       str(model_run / "config.yaml"), "--images", str(pattern_tree / "images" / "class_05"),
                       "--output", str(tmp_path / "c5.npz")]) == 0
    class_five = load_embeddings(tmp_path / "c5.npz", "--gallery")
    assert class_five.labels is None
    whole = load_embeddings(embedded_tree, "--gallery")
    rows = [row for row, path in enumerate(whole.paths) if path.startswith("class_05/")]
    np.testing.assert_allclose(class_five.embeddings, whole.embeddings[rows], rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------- retrieve.py
def read_neighbours(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_retrieve_equals_brute_force_and_never_returns_the_query_itself(embedded_tree, tmp_path):
    output = tmp_path / "out"
    assert retrieve.main(["--gallery", str(embedded_tree), "--queries", str(embedded_tree), "--top_k", "5",
                          "--output", str(output), "--rows", "3"]) == 0
    embedded = load_embeddings(embedded_tree, "--gallery")
    rows = read_neighbours(output / "neighbours.csv")
    assert list(rows[0]) == ["query", "rank", "neighbour", "distance", "same_label"]
    assert len(rows) == 96 * 5
    paths = embedded.absolute_paths()
    expected, distances = brute_force_neighbours(embedded.embeddings, embedded.embeddings, 5,
                                                 exclude=np.arange(96))
    for query in range(96):
        found = rows[5 * query:5 * query + 5]
        assert {row["query"] for row in found} == {paths[query]}
        assert [row["neighbour"] for row in found] == [paths[index] for index in expected[query]]
        assert paths[query] not in [row["neighbour"] for row in found]
        np.testing.assert_allclose([float(row["distance"]) for row in found], distances[query], rtol=1e-5)
        same = [int(embedded.labels[index] == embedded.labels[query]) for index in expected[query]]
        assert [int(row["same_label"]) for row in found] == same
    with PIL.Image.open(output / "retrieval.png") as picture:
        assert picture.size == grid_size(3, 5)
    assert grid_size(3, 5) == (6 * 104 + 16, 20 + 3 * 118)


def test_retrieve_one_image_of_a_gallery_folder_skips_its_own_file(model_run, pattern_tree, tmp_path):
    query = pattern_tree / "images" / "class_05" / "img_003.png"
    output = tmp_path / "out"
    assert retrieve.main(["--run", str(model_run), "--gallery", str(pattern_tree / "images"), "--queries", str(query),
                          "--top_k", "95", "--output", str(output)]) == 0
    rows = read_neighbours(output / "neighbours.csv")
    assert "same_label" not in rows[0]  # a lone image has no class
    neighbours = [row["neighbour"] for row in rows]
    assert len(neighbours) == 95 and str(query) not in neighbours and len(set(neighbours)) == 95
    with PIL.Image.open(output / "retrieval.png") as picture:
        assert picture.size == grid_size(1, 95)


# --------------------------------------------------------------- bad inputs
def test_embed_refuses_a_missing_run(tmp_path, caplog, pattern_tree):
    assert_refused(caplog, embed.main, ["--run", str(tmp_path / "nope"), "--images", str(pattern_tree / "images"),
                                        "--output", str(tmp_path / "e.npz")], "is not a run folder", "--run latest")
    assert "<" not in caplog.text, "no placeholder such as <time> that a user would paste"


def test_run_latest_is_the_newest_finished_run_in_runs(tmp_path, caplog, model_run, pattern_tree, monkeypatch):
    monkeypatch.chdir(tmp_path)
    images = str(pattern_tree / "images")
    assert_refused(caplog, embed.main, ["--run", "latest", "--images", images, "--output", "e.npz"],
                   "--run latest: no finished training run", str(tmp_path / "runs"))
    older, newer = tmp_path / "runs" / "ablation" / "lsce" / "seed0" / "older", tmp_path / "runs" / "newer"
    shutil.copytree(model_run, older)
    shutil.copytree(model_run, newer)
    os.utime(older / "summary.json", (2_000_000_000, 2_000_000_000))  # the later one, at depth 4
    unfinished = tmp_path / "runs" / "unfinished"
    unfinished.mkdir()
    shutil.copy(model_run / "config.yaml", unfinished)
    (unfinished / "summary.json").write_text('{"status": "failed", "error": "x"}')
    os.utime(unfinished / "summary.json", (2_100_000_000, 2_100_000_000))
    with caplog.at_level(logging.INFO):
        assert embed.main(["--run", "latest", "--images", images, "--output", "runs/e.npz"]) == 0
    assert f"--run latest: {older.relative_to(tmp_path)}" in caplog.text
    assert len(load_embeddings(tmp_path / "runs" / "e.npz", "--gallery").paths) == 96


def test_embed_refuses_a_run_without_best_weights(tmp_path, caplog, model_run, pattern_tree):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(model_run / "config.yaml", unfinished / "config.yaml")
    assert_refused(caplog, embed.main, ["--run", str(unfinished), "--images", str(pattern_tree / "images"),
                                        "--output", str(tmp_path / "e.npz")], "has no best weights")
    assert not (tmp_path / "e.npz").exists()


def test_embed_refuses_an_empty_folder(tmp_path, caplog, model_run):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert_refused(caplog, embed.main, ["--run", str(model_run), "--images", str(tmp_path / "empty"),
                                        "--output", str(tmp_path / "e.npz")], "holds no images")


def test_embed_does_not_overwrite_an_existing_output(tmp_path, caplog, model_run, pattern_tree):
    (tmp_path / "e.npz").write_bytes(b"mine")
    assert_refused(caplog, embed.main, ["--run", str(model_run), "--images", str(pattern_tree / "images"),
                                        "--output", str(tmp_path / "e.npz")], "already exists")
    assert (tmp_path / "e.npz").read_bytes() == b"mine"


def test_retrieve_refuses_more_neighbours_than_the_gallery_holds(tmp_path, caplog, embedded_tree):
    assert_refused(caplog, retrieve.main, ["--gallery", str(embedded_tree), "--queries", str(embedded_tree),
                                           "--top_k", "96", "--output", str(tmp_path / "out")],
                   "--top_k 96", "95 images besides a query's own file")
    assert not (tmp_path / "out").exists()


def test_a_gallery_of_one_image_answers_other_queries_and_refuses_its_own(tmp_path, caplog, embedded_tree):
    """A gallery that holds only the query's own file said 'give --top_k between 1 and 0'."""
    from inference.embedding_file import load_embeddings, save_embeddings
    whole = load_embeddings(embedded_tree, "--gallery")
    one, other = (tmp_path / "one.npz", tmp_path / "other.npz")
    for path, rows in ((one, slice(0, 1)), (other, slice(1, 3))):
        save_embeddings(type(whole)(whole.embeddings[rows], whole.paths[rows], whole.root, whole.distance), path)
    assert retrieve.main(["--gallery", str(one), "--queries", str(other), "--top_k", "1",
                          "--output", str(tmp_path / "out")]) == 0
    assert len((tmp_path / "out" / "neighbours.csv").read_text().splitlines()) == 3
    assert_refused(caplog, retrieve.main, ["--gallery", str(one), "--queries", str(one), "--top_k", "1",
                                           "--output", str(tmp_path / "self")],
                   "The gallery holds no image besides a query's own file")


def test_retrieve_of_a_folder_without_a_model_asks_for_one(tmp_path, caplog, embedded_tree, pattern_tree):
    assert_refused(caplog, retrieve.main, ["--gallery", str(embedded_tree), "--queries",
                                           str(pattern_tree / "images"), "--top_k", "3",
                                           "--output", str(tmp_path / "out")], "--run RUN_DIR")


# ------------------------------------------------- pictures after evaluation
def train_tiny(tmp_path, pattern_tree, name, **logging_options):
    raw = tiny_train_config(pattern_tree, num_epochs=2, lr_drop_epochs=[2])
    raw["logging"] = logging_options
    config_path = tmp_path / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    import train
    assert train.main(["--config_path", str(config_path), "--output_dir", str(tmp_path / name)]) == 0
    (run,) = list((tmp_path / name).iterdir())
    return run


def assert_pictures(folder, rows=8, top_k=8):
    for name in ("retrieval_worst.png", "retrieval_random.png"):
        with PIL.Image.open(folder / name) as picture:
            assert picture.size == grid_size(rows, top_k), name
    with PIL.Image.open(folder / "embedding_map.png") as picture:
        assert picture.size == (700, 600)


@pytest.mark.slow
def test_training_draws_best_and_last_epoch_pictures_and_logs_tensorboard(tmp_path, pattern_tree):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = train_tiny(tmp_path, pattern_tree, "tb", tensorboard=1)
    assert_pictures(run / "pictures" / "best_epoch")
    assert_pictures(run / "pictures" / "last_epoch")
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss_Total", "test_R@1", "test_NMI", "lr", "images_per_s"} <= scalars
    assert [event.step for event in events.Scalars("test_R@1")] == [1, 2]
    assert {"last_epoch/retrieval_worst", "last_epoch/embedding_map"} <= set(events.Tags()["images"])


@pytest.mark.slow
def test_test_mode_draws_its_pictures_and_pictures_can_be_turned_off(tmp_path, pattern_tree):
    from tests.conftest import evaluate_best_weights_in_test_mode
    run = train_tiny(tmp_path, pattern_tree, "off", pictures=0)
    assert not (run / "pictures").exists() and not (run / "tensorboard").exists()
    pictures_on = tmp_path / "pictures_on"
    shutil.copytree(run, pictures_on)
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["logging"]["pictures"] = 1
    (pictures_on / "config.yaml").write_text(yaml.safe_dump(raw))
    evaluate_best_weights_in_test_mode(pictures_on, tmp_path / "test")
    (test_run,) = list((tmp_path / "test" / "runs").iterdir())
    assert_pictures(test_run / "pictures")


def synthetic_sets(tmp_path, with_queries):
    """Four classes of three images on a line; class 3's images are placed among class 0's."""
    from inference.evaluation_pictures import EmbeddedSet, EvaluatedSets
    positions = torch.tensor([0.0, 0.1, 0.2, 5.0, 5.1, 5.2, 10.0, 10.1, 10.2, 0.05, 0.15, 30.0])
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    embeddings = torch.stack([positions, torch.ones_like(positions)], 1)
    paths = [str(write_image(tmp_path / f"{i}.png", colour=(20 * i, 0, 0))) for i in range(len(labels))]
    gallery = EmbeddedSet(embeddings, labels, paths)
    return EvaluatedSets(gallery, gallery if with_queries else None)


def test_worst_queries_are_those_whose_same_class_item_ranks_furthest(tmp_path):
    from inference.evaluation_pictures import worst_queries
    chosen, ranks = worst_queries(synthetic_sets(tmp_path, with_queries=False), 4)
    # Item 11 (class 3 at 30.0): the 7 items from 0.2 to 10.2 are nearer than its class at 0.15.
    # Items 1, 9 and 10 each have two other-class items nearer than their own class (rank 3).
    assert chosen == [11, 1, 9, 10] and ranks.tolist() == [2, 3, 2, 1, 1, 1, 1, 1, 1, 3, 3, 8]


@pytest.mark.parametrize("with_queries", [False, True])
def test_evaluation_pictures_of_both_protocols_have_the_grid_size(tmp_path, with_queries):
    from inference.evaluation_pictures import draw_evaluation_pictures
    pictures = draw_evaluation_pictures(synthetic_sets(tmp_path, with_queries), "epoch 1", rows=3, top_k=4)
    assert sorted(pictures) == ["embedding_map.png", "retrieval_random.png", "retrieval_worst.png"]
    assert pictures["retrieval_worst.png"].size == grid_size(3, 4)
    assert pictures["retrieval_random.png"].size == grid_size(3, 4)


def test_optional_packages_asked_for_but_missing_are_one_sentence(monkeypatch, model_run):
    import importlib.util
    from engine.hooks import check_logging_options
    config = load_config(model_run / "config.yaml")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name in ("umap", "tensorboard") else real_find_spec(name, *rest))
    config["logging"].update(pictures=1, embedding_map="umap")
    with pytest.raises(UserInputError, match="pip install umap-learn"):
        check_logging_options(config)
    config["logging"].update(embedding_map="tsne", tensorboard=1)
    with pytest.raises(UserInputError, match="pip install tensorboard"):
        check_logging_options(config)


def test_readme_commands_use_only_flags_the_scripts_define():
    import re
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text()
    section = re.search(r"^## Use your model\n(.*?)(?=^## )", readme, flags=re.S | re.M).group(1)
    commands = [line for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)
                for line in block.splitlines() if line.strip()]
    assert {command.split()[1] for command in commands} == {"embed.py", "retrieve.py"}
    for command in commands:
        script = command.split()[1]
        known = set(re.findall(r'add_argument\("(--\w+)"', (repo / script).read_text()))
        known |= set(re.findall(r'add_argument\("(--\w+)"', (repo / "embed.py").read_text()))
        assert {word for word in command.split() if word.startswith("--")} <= known, command
    assert (repo / "docs" / "retrieval_demo.png").is_file()


@pytest.mark.slow
def test_a_run_that_held_out_classes_draws_its_pictures_and_embeds(write_tiny_config, pattern_tree, tmp_path,
                                                                   caplog):
    import train

    def hold_out_and_draw(raw):
        raw["dataset"].update(val=1, val_fraction=0.5)
        raw["logging"] = {"pictures": 1}
    config = write_tiny_config(num_epochs=2, lr_drop_epochs=[2], max_iters_per_epoch=2, num_classes_iter=2,
                               mutate=hold_out_and_draw)
    with caplog.at_level(logging.INFO):
        assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")]) == 0
    (run,) = list((tmp_path / "runs").iterdir())
    assert_pictures(run / "pictures" / "best_epoch")  # the test set, embedded with the best weights
    assert_pictures(run / "pictures" / "last_epoch", rows=8, top_k=8)  # the 2 held-out classes (24 images)
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("Pictures of the last epoch 2, val set") for message in messages)
    best_epoch = json.loads((run / "summary.json").read_text())["best_epoch"]
    assert any(message.startswith(f"Pictures of the best epoch {best_epoch}, test set") for message in messages)
    # The best backbone has a 2-class head (half the 4 training classes held out); embed.py builds it so.
    assert embed.main(["--run", str(run), "--images", str(pattern_tree / "images" / "class_00"),
                       "--output", str(tmp_path / "c0.npz")]) == 0


def test_picture_captions_use_a_scalable_font_with_real_spaces():
    """Pillow's default bitmap font drew "best epoch" as "bestepoch"."""
    from inference.pictures import CAPTION_FONT_SIZE, caption_font
    font = caption_font()
    assert font.size == CAPTION_FONT_SIZE
    assert font.getlength("best epoch") >= font.getlength("bestepoch") + 3
