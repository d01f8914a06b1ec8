"""Issue 27: index.py builds faiss indexes that retrieve.py searches; a query is never its own neighbour."""
import csv
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import index as index_command
import retrieve
from evaluation.neighbours import nearest_neighbours
from inference.embedding_file import EmbeddedImages, load_embeddings, save_embeddings
from inference.same_file import own_gallery_indices
from tests.test_use_model import embedded_tree, model_run  # noqa: F401 (fixtures)

NUM_CLASSES, PER_CLASS, DIMENSION = 60, 20, 16


def read_rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def neighbour_table(rows, top_k):
    """``(neighbour paths, distances)`` per query, in the order of neighbours.csv."""
    paths = [row["neighbour"] for row in rows]
    distances = [float(row["distance"]) for row in rows]
    return ([paths[start:start + top_k] for start in range(0, len(rows), top_k)],
            np.array(distances).reshape(-1, top_k))


def clustered(seed, distance, root):
    """Classes around the same random centres, as an embedding file would hold them (no files on disk)."""
    centres = np.random.default_rng(0).normal(size=(NUM_CLASSES, DIMENSION))
    generator = np.random.default_rng(seed + 1)
    labels = np.repeat(np.arange(NUM_CLASSES), PER_CLASS)
    embeddings = (centres[labels] + 0.4 * generator.normal(size=(len(labels), DIMENSION))).astype(np.float32)
    paths = [f"class_{label:02d}/img_{number:04d}.png" for number, label in enumerate(labels)]
    return EmbeddedImages(embeddings, paths, Path(root), distance, labels, [f"class_{c:02d}" for c in range(60)])


@pytest.fixture(params=["euclidean", "cosine"])
def gallery_and_queries(request, tmp_path):
    gallery = clustered(0, request.param, tmp_path / "gallery_images")
    queries = clustered(1, request.param, tmp_path / "query_images")
    queries = EmbeddedImages(queries.embeddings[::12], queries.paths[::12], queries.root, queries.distance,
                             queries.labels[::12], queries.classes)
    save_embeddings(gallery, tmp_path / "gallery.npz")
    save_embeddings(queries, tmp_path / "queries.npz")
    return tmp_path / "gallery.npz", tmp_path / "queries.npz"


def build(gallery, output, kind, *flags):
    assert index_command.main(["--gallery", str(gallery), "--kind", kind, "--output", str(output),
                               "--threads", "1", *flags]) == 0
    assert output.is_file() and Path(f"{output}.npz").is_file()
    return output


def search(gallery, queries, output, top_k=10):
    assert retrieve.main(["--gallery", str(gallery), "--queries", str(queries), "--top_k", str(top_k),
                          "--output", str(output), "--rows", "2"]) == 0
    return neighbour_table(read_rows(output / "neighbours.csv"), top_k)


@pytest.mark.parametrize("kind, flags", [("flat", []), ("ivf", ["--nlist", "8", "--nprobe", "8"]),
                                         ("hnsw", ["--ef_search", "1200"])])
def test_exhaustive_indexes_find_the_exact_neighbours(gallery_and_queries, tmp_path, kind, flags):
    gallery, queries = gallery_and_queries
    exact, exact_distances = search(gallery, queries, tmp_path / "exact")
    found, distances = search(build(gallery, tmp_path / f"{kind}.index", kind, *flags), queries, tmp_path / kind)
    assert found == exact
    np.testing.assert_allclose(distances, exact_distances, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_indexes_with_parameters_chosen_from_the_size_recall_the_exact_neighbours(gallery_and_queries, tmp_path,
                                                                                  kind):
    gallery, queries = gallery_and_queries
    exact, _ = search(gallery, queries, tmp_path / "exact")
    found, _ = search(build(gallery, tmp_path / f"{kind}.index", kind), queries, tmp_path / kind)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)])
    assert recall >= 0.95, recall


def test_an_ivf_probe_that_finds_too_few_items_is_widened(gallery_and_queries, tmp_path):
    """One probe of 30 lists of about 40 items cannot give 100 neighbours; the search widens until it can."""
    gallery, queries = gallery_and_queries
    exact, _ = search(gallery, queries, tmp_path / "exact", top_k=100)
    found, _ = search(build(gallery, tmp_path / "ivf.index", "ivf", "--nlist", "30", "--nprobe", "1"), queries,
                      tmp_path / "ivf", top_k=100)
    assert all(len(set(row)) == 100 for row in found)
    assert np.mean([len(set(a) & set(b)) / 100 for a, b in zip(found, exact)]) > 0.5


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_a_gallery_searched_with_itself_never_returns_a_query_as_its_own_neighbour(embedded_tree, tmp_path, kind):
    index_file = build(embedded_tree, tmp_path / "tree.index", kind, *(["--nlist", "2"] if kind == "ivf" else []))
    found, _ = search(index_file, embedded_tree, tmp_path / "out", top_k=5)
    exact, _ = search(embedded_tree, embedded_tree, tmp_path / "exact", top_k=5)
    paths = load_embeddings(embedded_tree, "--gallery").absolute_paths()
    assert all(paths[query] not in row for query, row in enumerate(found))
    if kind == "flat":
        assert found == exact


# ------------------------------------------------------- the same file, other paths
def test_a_symlinked_query_is_not_its_own_neighbour(model_run, pattern_tree, tmp_path):
    """A symlink, and a path through '..', to a gallery image: that image is never among the neighbours."""
    target = pattern_tree / "images" / "class_05" / "img_003.png"
    link = tmp_path / "elsewhere" / "query.png"
    link.parent.mkdir()
    link.symlink_to(target)
    roundabout = pattern_tree / "images" / "class_06" / ".." / "class_05" / "img_003.png"
    gallery_npz = tmp_path / "gallery.npz"
    assert retrieve.main.__module__ == "retrieve"
    import embed
    assert embed.main(["--run", str(model_run), "--images", str(pattern_tree / "images"),
                       "--output", str(gallery_npz)]) == 0
    index_file = build(gallery_npz, tmp_path / "gallery.index", "hnsw")
    for number, (query, gallery) in enumerate([(link, pattern_tree / "images"), (roundabout, gallery_npz),
                                               (link, index_file)]):
        output = tmp_path / f"out{number}"
        assert retrieve.main(["--run", str(model_run), "--gallery", str(gallery), "--queries", str(query),
                              "--top_k", "95", "--output", str(output)]) == 0
        neighbours = [row["neighbour"] for row in read_rows(output / "neighbours.csv")]
        assert len(set(neighbours)) == 95, number
        assert os.path.realpath(target) not in {os.path.realpath(path) for path in neighbours}, number


def test_a_query_folder_reached_through_a_link_excludes_every_query(embedded_tree, pattern_tree, model_run,
                                                                    tmp_path):
    linked_root = tmp_path / "linked_images"
    linked_root.symlink_to(pattern_tree / "images")
    queries = load_embeddings(embedded_tree, "--queries")
    relinked = EmbeddedImages(queries.embeddings, queries.paths, linked_root, queries.distance, queries.labels,
                              queries.classes)
    save_embeddings(relinked, tmp_path / "linked.npz")
    found, distances = search(embedded_tree, tmp_path / "linked.npz", tmp_path / "out", top_k=3)
    gallery_paths = [os.path.realpath(path) for path in queries.absolute_paths()]
    for query, row in enumerate(found):
        assert gallery_paths[query] not in {os.path.realpath(path) for path in row}
    assert (distances > 0).all()


def test_a_file_held_twice_by_the_gallery_is_excluded_under_both_names(tmp_path):
    original = tmp_path / "a.png"
    original.write_bytes(b"x")
    os.link(original, tmp_path / "hard.png")
    (tmp_path / "soft.png").symlink_to(original)
    (tmp_path / "other.png").write_bytes(b"y")
    gallery = [str(tmp_path / name) for name in ("other.png", "hard.png", "a.png", "soft.png")]
    table = own_gallery_indices([str(tmp_path / "sub" / ".." / "soft.png"), str(tmp_path / "other.png"),
                                 str(tmp_path / "missing.png")], gallery)
    assert table.tolist() == [[1, 2, 3], [0, -1, -1], [-1, -1, -1]]
    items = torch.tensor([[0.0], [0.1], [0.2], [0.3], [5.0]])
    indices, _ = nearest_neighbours(torch.tensor([[0.0], [0.0]]), items, 2,
                                    exclude=torch.tensor([[1, 2, 3], [0, -1, -1]]))
    assert indices.tolist() == [[0, 4], [1, 2]]


# --------------------------------------------------------------- bad inputs
def refused(caplog, main, args, *patterns):
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main(args) == 2
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    for pattern in patterns:
        assert pattern in errors[0], (pattern, errors[0])


def test_bad_index_inputs_are_one_sentence(embedded_tree, tmp_path, caplog):
    arguments = ["--gallery", str(embedded_tree), "--output", str(tmp_path / "g.index")]
    refused(caplog, index_command.main, [*arguments, "--kind", "ivf", "--nlist", "2", "--nprobe", "3"],
            "--nprobe 3 is more than the 2 lists")
    refused(caplog, index_command.main, [*arguments, "--kind", "ivf", "--nlist", "50"], "too many lists for 96")
    refused(caplog, index_command.main, [*arguments, "--kind", "flat", "--ef_search", "9"],
            "--ef_search do not apply to --kind flat")
    refused(caplog, index_command.main, ["--gallery", str(embedded_tree), "--output", str(tmp_path / "g.faiss"),
                                         "--kind", "flat"], "must end in .index")
    index_file = build(embedded_tree, tmp_path / "g.index", "flat")
    refused(caplog, index_command.main, [*arguments, "--kind", "flat"], "already exists")
    refused(caplog, retrieve.main, ["--gallery", str(index_file), "--queries", str(embedded_tree), "--top_k", "3",
                                    "--output", str(tmp_path / "o"), "--faiss"], "leave out --faiss")
    Path(f"{index_file}.npz").rename(tmp_path / "elsewhere.npz")
    refused(caplog, retrieve.main, ["--gallery", str(index_file), "--queries", str(embedded_tree), "--top_k", "3",
                                    "--output", str(tmp_path / "o")], "has no g.index.npz beside it")
    assert not (tmp_path / "o").exists()


def test_parameters_follow_the_gallery_size_unless_given():
    from inference.gallery_index import IndexParameters, index_parameters
    assert index_parameters("ivf", 1_000_000) == IndexParameters("ivf", nlist=4000, nprobe=8)
    assert index_parameters("ivf", 16_000_000) == IndexParameters("ivf", nlist=16000, nprobe=32)
    assert index_parameters("ivf", 1200) == IndexParameters("ivf", nlist=30, nprobe=8)  # at least 39 points per list
    assert index_parameters("ivf", 1200, nprobe=3) == IndexParameters("ivf", nlist=30, nprobe=3)
    assert index_parameters("hnsw", 10, ef_search=20) == IndexParameters("hnsw", hnsw_m=32, ef_construction=80,
                                                                         ef_search=20)
