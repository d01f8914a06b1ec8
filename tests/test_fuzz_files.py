"""Issue 28, the fuzzer: damaged and hostile files of every format the project reads, through its commands.

Each test draws files (see tests/fuzzing.py) and runs the command that reads
them in-process: exit 0 or 2, never a traceback, no file of the user's
changed, nothing executed. The cases are fixed (Hypothesis profile "ci" in
tests/conftest.py); ``pytest --hypothesis-profile=long`` draws new ones.
"""
import io
import json
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import yaml
from hypothesis import given
from hypothesis import strategies as st

import embed
import retrieve
import train
from dataset import prepare
from tests.conftest import fuzz_examples, tiny_train_config
from tests.fuzzing import (DAMAGE_IN_PLACE, array_strategy, check_outcome, damaged, hostile_values, json_bytes,
                           scratch)
from tests.test_table import table_config
from tools import plot, results
from utils.safe_load import load_torch_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, pattern_tree):
    """A 1-epoch, 1-step training run folder of the tiny config (last.pth, best weights, records)."""
    root = tmp_path_factory.mktemp("fuzz_run")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_train_config(pattern_tree, num_epochs=1, max_iters_per_epoch=1)))
    assert train.main(["--config_path", str(config), "--output_dir", str(root / "runs")]) == 0
    (folder,) = (root / "runs").iterdir()
    return folder


@pytest.fixture(scope="module")
def small_images(tmp_path_factory):
    """Two classes of two 20 px images each."""
    root = tmp_path_factory.mktemp("fuzz_images")
    for class_index in range(2):
        for image_index in range(2):
            path = root / f"class_{class_index}" / f"{image_index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            PIL.Image.new("RGB", (20, 20), (40 * class_index, 90, 60 * image_index)).save(path)
    return root


@pytest.fixture(scope="module")
def gallery_npz(finished_run, small_images, tmp_path_factory):
    output = tmp_path_factory.mktemp("fuzz_npz") / "gallery.npz"
    assert embed.main(["--run", str(finished_run), "--images", str(small_images), "--output", str(output)]) == 0
    return output


def flatten(config, prefix=""):
    """Every dotted key of ``config``, sections included."""
    for key, value in config.items():
        yield f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from flatten(value, f"{prefix}{key}.")


def parents_of(raw, dotted):
    """The sections above ``dotted``, as far as they exist (an earlier draw may have replaced one)."""
    node, found = raw, [raw]
    for name in dotted.split(".")[:-1]:
        node = node.get(name) if isinstance(node, dict) else None
        found.append(node)
    return found


def set_path(raw, dotted, value):
    node = raw
    *parents, leaf = dotted.split(".")
    for name in parents:
        node = node[name]
    if value is DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value


DELETE = object()
BOUNDED_RUN = ["--set", "train_params.num_epochs=1", "--set", "train_params.max_iters_per_epoch=1",
               "--set", "mode=train"]


# ------------------------------------------------------------------ YAML configs
@fuzz_examples(40)
@given(data=st.data())
def test_fuzz_config_yaml_damaged_bytes(pattern_tree, data):
    valid = yaml.safe_dump(tiny_train_config(pattern_tree)).encode()
    with scratch() as folder:
        config = folder / "config.yaml"
        config.write_bytes(data.draw(damaged(valid)))
        check_outcome(train.main, ["--config_path", str(config), "--output_dir", str(folder / "runs"),
                                   *BOUNDED_RUN], watched=[config, pattern_tree])


@fuzz_examples(10)
@given(data=st.data())
def test_fuzz_config_keys_of_the_wrong_type_or_value(pattern_tree, data):
    raw = tiny_train_config(pattern_tree)
    keys = sorted(flatten(raw))
    for key in data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True)):
        if all(isinstance(node, dict) for node in parents_of(raw, key)):
            set_path(raw, key, data.draw(st.one_of(hostile_values(), st.just(DELETE))))
    with scratch() as folder:
        config = folder / "config.yaml"
        config.write_text(yaml.safe_dump(raw, allow_unicode=True))
        check_outcome(train.main, ["--config_path", str(config), "--output_dir", str(folder / "runs"),
                                   *BOUNDED_RUN], watched=[config, pattern_tree])


# ------------------------------------------------------------------ images
PIL_MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LA", "PA", "I", "F", "I;16", "La", "RGBa", "HSV",
             "LAB", "RGBX"]
SAVE_FORMATS = {"png": "PNG", "jpg": "JPEG", "bmp": "BMP", "gif": "GIF", "tif": "TIFF", "webp": "WEBP"}
NAMES = ["a b.png", "ünï ñame.png", "-leading-dash.png", "--help.png", "x.png", "日本.png", ".hidden.png"]


def image_bytes(mode, size, suffix):
    image = PIL.Image.new(mode, size)
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=SAVE_FORMATS[suffix])
    except (OSError, ValueError, KeyError):
        return None  # this format cannot hold this mode
    return buffer.getvalue()


@fuzz_examples(5)
@given(mode=st.sampled_from(PIL_MODES), size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
       suffix=st.sampled_from(sorted(SAVE_FORMATS)), name=st.sampled_from(NAMES), damage=st.data())
def test_fuzz_images_of_every_mode_and_damaged_images_in_embed(finished_run, small_images, mode, size, suffix, name,
                                                               damage):
    with scratch() as folder:
        images = folder / "images"
        shutil.copytree(small_images, images)
        valid = image_bytes(mode, size, suffix)
        is_damaged = valid is None or damage.draw(st.booleans())
        content = damage.draw(damaged(valid or OTHER_IMAGE)) if is_damaged else valid
        target = images / "class_1" / (Path(name).stem + "." + suffix)
        target.write_bytes(content)
        code, output = check_outcome(embed.main, ["--run", str(finished_run), "--images", str(images),
                                                  "--output", str(folder / "out.npz")],
                                     watched=[images, finished_run])
        if not is_damaged:  # unusual but valid: embedded
            assert code == 0 and "cannot be read" not in output, output[-2000:]


OTHER_IMAGE = image_bytes("RGB", (8, 8), "png")


# ------------------------------------------------------------------ .pth weights and checkpoints
def pth_contents():
    tensors = st.one_of(
        st.sampled_from([torch.full((2, 2), float("nan")), torch.full((3,), float("inf")), torch.zeros(0),
                         torch.ones(1, 1, 1, 1), torch.tensor(7), torch.ones(2, dtype=torch.int64),
                         torch.ones(2, dtype=torch.bool), torch.ones(2, dtype=torch.complex64)]))
    leaves = st.one_of(tensors, hostile_values())
    return st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                        max_leaves=8)


def torch_bytes(value):
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


@fuzz_examples(4)
@given(data=st.data())
def test_fuzz_weights_files_damaged_or_of_the_wrong_content(finished_run, small_images, data):
    summary = json.loads((finished_run / "summary.json").read_text())
    original = (finished_run / summary["best_weights"]["backbone"]).read_bytes()
    if data.draw(st.booleans()):
        content = data.draw(damaged(original))
    else:
        state = load_torch_file(finished_run / summary["best_weights"]["backbone"], "the test")
        key = data.draw(st.sampled_from(sorted(state)))
        state[key] = data.draw(pth_contents())
        content = torch_bytes(data.draw(st.one_of(st.just(state), pth_contents())))
    with scratch() as folder:
        weights = folder / "weights.pth"
        weights.write_bytes(content)
        check_outcome(embed.main, ["--weights", str(weights), "--config_path", str(finished_run / "config.yaml"),
                                   "--images", str(small_images), "--output", str(folder / "out.npz")],
                      watched=[weights, small_images, finished_run])


@fuzz_examples(3)
@given(data=st.data())
def test_fuzz_resume_checkpoints_damaged_or_of_the_wrong_content(finished_run, data):
    with scratch() as folder:
        run = folder / finished_run.name
        shutil.copytree(finished_run, run)
        checkpoint = run / "last.pth"
        if data.draw(st.booleans()):
            checkpoint.write_bytes(data.draw(damaged(checkpoint.read_bytes())))
        else:
            state = load_torch_file(checkpoint, "the test")
            key = data.draw(st.sampled_from(sorted(state)))
            state[key] = data.draw(pth_contents())
            checkpoint.write_bytes(torch_bytes(state))
        user_files = [path for path in run.iterdir() if path.name != "last.pth" and path.suffix != ".log"]
        code, _ = check_outcome(train.main, ["--resume", str(run)], watched=[checkpoint])
        if code == 2:  # refused: nothing of the run was touched
            assert all(path.exists() for path in user_files)


# ------------------------------------------------------------------ .npz embedding files
@fuzz_examples(40)
@given(data=st.data())
def test_fuzz_embedding_files_damaged_or_of_the_wrong_content(gallery_npz, data):
    with scratch() as folder:
        gallery = folder / "gallery.npz"
        if data.draw(st.booleans()):
            gallery.write_bytes(data.draw(damaged(gallery_npz.read_bytes())))
        else:
            with np.load(gallery_npz, allow_pickle=False) as loaded:
                arrays = {name: loaded[name] for name in loaded.files}
            for _ in range(data.draw(st.integers(1, 3))):
                name = data.draw(st.sampled_from(sorted(arrays) + ["extra"]))
                if data.draw(st.booleans()) and name in arrays:
                    del arrays[name]
                else:
                    arrays[name] = data.draw(array_strategy())
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            gallery.write_bytes(buffer.getvalue())
        check_outcome(retrieve.main, ["--gallery", str(gallery), "--queries", str(gallery_npz), "--top_k", "1",
                                      "--output", str(folder / "out")], watched=[gallery, gallery_npz])


# ------------------------------------------------------------------ a table of one's own data (dataset_short: table)
TABLE_COLUMNS = ("path", "label", "split", "is_query", "is_gallery")


def valid_table(pattern_tree):
    """The pattern tree's 8 classes as a table: 0-3 train, 4-7 test, images 0-5 queries and 3-11 gallery."""
    rows = [",".join(TABLE_COLUMNS)]
    for class_index in range(8):
        split = "train" if class_index < 4 else "test"
        for image in range(12):
            flags = ("", "") if split == "train" else (str(int(image <= 5)), str(int(image >= 3)))
            rows.append(",".join([f"images/class_{class_index:02d}/img_{image:03d}.png", f"c{class_index}", split,
                                  *flags]))
    return ("\n".join(rows) + "\n").encode()


def hostile_table_rows(data):
    """A header of the table's columns (some drawn away or repeated) over rows of hostile cells."""
    header = data.draw(st.lists(st.sampled_from(TABLE_COLUMNS + ("extra",)), min_size=1, max_size=6))
    cells = hostile_values().map(str).filter(lambda text: "\n" not in text and "\r" not in text)
    rows = data.draw(st.lists(st.lists(cells, max_size=6), max_size=6))
    return ("\n".join([",".join(header), *(",".join(row) for row in rows)]) + "\n").encode()


@fuzz_examples(30)
@given(data=st.data())
def test_fuzz_table_of_ones_own_data_in_train(pattern_tree, data):
    """The table is the dataset list a user writes by hand: damaged, or rows of the wrong content."""
    with scratch() as folder:
        table = folder / "table.csv"
        table.write_bytes(data.draw(damaged(valid_table(pattern_tree))) if data.draw(st.booleans())
                          else hostile_table_rows(data))
        config = folder / "config.yaml"
        config.write_text(yaml.safe_dump(table_config(pattern_tree, table)))
        check_outcome(train.main, ["--config_path", str(config), "--output_dir", str(folder / "runs"),
                                   *BOUNDED_RUN], watched=[table, pattern_tree])


# ------------------------------------------------------------------ damaged in place: refused, or read as written
# Exit 0 or 2 is not enough: a flipped bit that still parses would be used silently. Each reader of a binary
# file of ours must refuse a file damaged in place, or return exactly what was written (damage to bytes that
# hold no content, such as zip padding, changes nothing).
@fuzz_examples(40)
@given(data=st.data())
def test_fuzz_a_weights_file_damaged_in_place_is_refused_or_loads_as_written(data):
    """A small file in torch.save's format (a failing case prints its bytes): tensors, nesting, numbers."""
    from utils.errors import UserInputError
    from utils.safe_load import UnreadableFileError
    generator = torch.Generator().manual_seed(0)
    written = {"conv.weight": torch.randn(4, 3, 3, generator=generator), "epoch": 3,
               "optimizer": {"state": {0: {"step": torch.tensor(5.0)}}, "lr": [0.1, 0.01]},
               "labels": torch.arange(6)}
    with scratch() as folder:
        copy = folder / "last.pth"
        copy.write_bytes(data.draw(damaged(torch_bytes(written), DAMAGE_IN_PLACE)))
        try:
            loaded = load_torch_file(copy, "the test")
        except (UnreadableFileError, UserInputError):
            return
    assert same_content(loaded, written)


def same_content(value, expected):
    """Equal nested dicts, lists and tuples, tensors equal in dtype, shape and every bit."""
    if isinstance(expected, torch.Tensor):
        return isinstance(value, torch.Tensor) and value.dtype == expected.dtype and torch.equal(value, expected)
    if isinstance(expected, dict):
        return isinstance(value, dict) and value.keys() == expected.keys() and \
            all(same_content(value[key], expected[key]) for key in expected)
    if isinstance(expected, (list, tuple)):
        return type(value) is type(expected) and len(value) == len(expected) and \
            all(same_content(item, want) for item, want in zip(value, expected))
    return type(value) is type(expected) and value == expected


@fuzz_examples(40)
@given(data=st.data())
def test_fuzz_an_embedding_file_damaged_in_place_is_refused_or_reads_as_written(gallery_npz, data):
    from inference.embedding_file import read_arrays
    from utils.errors import UserInputError
    written = read_arrays(gallery_npz, "--gallery", (), "embed.py")
    with scratch() as folder:
        copy = folder / "gallery.npz"
        copy.write_bytes(data.draw(damaged(gallery_npz.read_bytes(), DAMAGE_IN_PLACE)))
        try:
            loaded = read_arrays(copy, "--gallery", (), "embed.py")
        except UserInputError:
            return
    assert loaded.keys() == written.keys()
    assert all(loaded[name].dtype == written[name].dtype and np.array_equal(loaded[name], written[name])
               for name in written)


@pytest.fixture(scope="module", params=["flat", "ivf", "hnsw"])
def gallery_index(request, gallery_npz, tmp_path_factory):
    import index
    output = tmp_path_factory.mktemp(f"fuzz_{request.param}") / "gallery.index"
    kind = ["--kind", request.param] + (["--nlist", "1"] if request.param == "ivf" else [])
    assert index.main(["--gallery", str(gallery_npz), *kind, "--output", str(output)]) == 0
    return output


@fuzz_examples(15)
@given(in_sidecar=st.booleans(), data=st.data())
def test_fuzz_a_gallery_index_damaged_in_place_is_refused_or_reads_as_written(gallery_index, in_sidecar, data):
    """faiss reads an index without checking it: the SHA-256 in the sidecar must catch every changed byte."""
    from inference.gallery_index import load_gallery_index, sidecar_path
    from utils.errors import UserInputError
    with scratch() as folder:
        copy = folder / gallery_index.name
        shutil.copy(gallery_index, copy)
        shutil.copy(sidecar_path(gallery_index), sidecar_path(copy))
        target = sidecar_path(copy) if in_sidecar else copy
        target.write_bytes(data.draw(damaged(target.read_bytes(), DAMAGE_IN_PLACE)))
        changed = copy.read_bytes() != gallery_index.read_bytes()
        try:
            load_gallery_index(copy, "--gallery")
        except UserInputError:
            return
    assert not changed, "a changed index file was read"


# ------------------------------------------------------------------ run folders: metrics.csv, summary.json, config.yaml
RUN_FILES = ["metrics.csv", "summary.json", "config.yaml", ".config_recorded.yaml", "train.log"]
# Which commands read which record (each is slow: a model, or a whole resume); all go through results and plot.
READ_BY_EMBED = ("summary.json", "config.yaml")
READ_BY_RESUME = ("config.yaml", ".config_recorded.yaml")


def structured_replacement(name, data):
    """A file of the right syntax holding the wrong content."""
    if name == "metrics.csv":
        header = data.draw(st.sampled_from(["epoch,test_R@1,loss_total", "epoch", "test_R@1", "a,b,a", ""]))
        rows = data.draw(st.lists(st.lists(hostile_values().map(str), max_size=4), max_size=4))
        return ("\n".join([header, *(",".join(row) for row in rows)]) + "\n").encode()
    if name.endswith(".json"):
        return json_bytes(data.draw(hostile_values()))
    return yaml.safe_dump(data.draw(hostile_values()), allow_unicode=True).encode()


@fuzz_examples(4)
@given(name=st.sampled_from(RUN_FILES), data=st.data())
def test_fuzz_run_folder_records_in_results_plot_embed_and_resume(finished_run, small_images, name, data):
    with scratch() as folder:
        run = folder / finished_run.name
        shutil.copytree(finished_run, run)
        target = run / name
        if data.draw(st.booleans()):
            target.write_bytes(data.draw(damaged(target.read_bytes())))
        else:
            target.write_bytes(structured_replacement(name, data))
        check_outcome(results.main, [str(run)], watched=[run])
        check_outcome(plot.main, [str(run), "--output", str(folder / "plot.png")], watched=[run])
        if name in READ_BY_EMBED:
            check_outcome(embed.main, ["--run", str(run), "--images", str(small_images),
                                       "--output", str(folder / "out.npz")], watched=[run, small_images])
        if name in READ_BY_RESUME:
            check_outcome(train.main, ["--resume", str(run)], watched=[run / "last.pth", run / "metrics.csv"])


# ------------------------------------------------------------------ dataset lists and annotation files
SOP_TRAIN = "image_id class_id super_class_id path\n1 1 1 bicycle_final/a.JPG\n2 1 1 bicycle_final/b.JPG\n"
SOP_TEST = "image_id class_id super_class_id path\n3 2 1 chair_final/c.JPG\n"
INSHOP = ("3\nimage_name item_id evaluation_status\nimg/x/a.jpg id_00000001 train\n"
          "img/x/b.jpg id_00000002 query\nimg/x/c.jpg id_00000002 gallery\n")


def sop_download(root):
    for relative in ("bicycle_final/a.JPG", "bicycle_final/b.JPG", "chair_final/c.JPG"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.new("RGB", (4, 4)).save(root / relative, format="JPEG")
    (root / "Ebay_train.txt").write_text(SOP_TRAIN)
    (root / "Ebay_test.txt").write_text(SOP_TEST)


def inshop_download(root):
    for name in ("a", "b", "c"):
        (root / "Img" / "img" / "x").mkdir(parents=True, exist_ok=True)
        PIL.Image.new("RGB", (4, 4)).save(root / "Img" / "img" / "x" / f"{name}.jpg", format="JPEG")
    (root / "Eval").mkdir()
    (root / "Eval" / "list_eval_partition.txt").write_text(INSHOP)


def cars_download(root):
    import scipy.io
    (root / "car_ims").mkdir(parents=True)
    PIL.Image.new("RGB", (4, 4)).save(root / "car_ims" / "000001.jpg", format="JPEG")
    annotations = np.array([("car_ims/000001.jpg", 1)], dtype=[("relative_im_path", "O"), ("class", "O")])
    scipy.io.savemat(root / "cars_annos.mat", {"annotations": annotations})


DOWNLOADS = {"sop": (sop_download, "Ebay_train.txt"), "inshop": (inshop_download, "Eval/list_eval_partition.txt"),
             "cars": (cars_download, "cars_annos.mat")}


def structured_list(data):
    lines = data.draw(st.lists(st.lists(hostile_values().map(str).filter(lambda text: "\n" not in text),
                                        max_size=5).map(" ".join), max_size=5))
    return ("\n".join(lines) + "\n").encode()


@fuzz_examples(40)
@given(dataset=st.sampled_from(sorted(DOWNLOADS)), data=st.data())
def test_fuzz_dataset_lists_and_annotations_in_prepare(dataset, data):
    with scratch() as folder:
        download = folder / "download"
        make, listed = DOWNLOADS[dataset]
        make(download)
        target = download / listed
        if data.draw(st.booleans()) or dataset == "cars":
            target.write_bytes(data.draw(damaged(target.read_bytes())))
        else:
            target.write_bytes(structured_list(data))
        check_outcome(prepare.main, [dataset, str(download), str(folder / "out")], watched=[download])
