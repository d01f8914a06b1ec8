"""SPEC 2 datasets and the loaders: splits, labels, In-Shop, validation split, errors."""
import logging
from pathlib import Path

import pytest
import torch
import torchvision

from dataset.build import build_dataset
from dataset.loaders import build_eval_loader, build_train_loader
from dataset.sampler import ClassBalancedSampler
from dataset.transforms import build_transform
from utils.errors import UserInputError

TINY = build_transform("GLorig", train=False, net_type="resnet50", crop_size=8, resize_size=8)


def class_names(dataset):
    return [Path(path).parent.name for path in dataset.paths]


def write_partition(root, rows, count=None, header="image_name item_id evaluation_status"):
    path = root / "Eval" / "list_eval_partition.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [str(len(rows) if count is None else count), header]
    lines += [f"{name} {item} {status}" for name, item, status in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


INSHOP_ROWS = [
    ("img/a/1.jpg", "id_00000007", "train"),
    ("img/a/2.jpg", "id_00000003", "train"),
    ("img/a/3.jpg", "id_00000012", "train"),
    ("img/a/4.jpg", "id_00000003", "train"),
    ("img/a/5.jpg", "id_00000020", "train"),
    ("img/b/1.jpg", "id_00000050", "query"),
    ("img/b/2.jpg", "id_00000040", "gallery"),
    ("img/b/3.jpg", "id_00000050", "gallery"),
    ("img/b/4.jpg", "id_00000060", "query"),
]


@pytest.fixture
def inshop_root(tmp_path, dataset_write_image):
    root = tmp_path / "In_shop"
    write_partition(root, INSHOP_ROWS)
    for name, _, _ in INSHOP_ROWS:
        dataset_write_image(root / "Img" / name)
    return root


def test_train_split_is_first_num_classes_in_folder_name_order(dataset_image_tree):
    root = dataset_image_tree([2, 3, 2, 2, 1])
    train = build_dataset("cub", root, "train", 2, TINY)
    assert sorted(set(class_names(train))) == ["class_00", "class_01"]
    assert train.labels == [0, 0, 1, 1, 1]
    assert train.num_classes == 2


def test_test_split_is_next_num_classes_with_labels_from_zero(dataset_image_tree):
    root = dataset_image_tree([2, 3, 2, 2, 1])
    test = build_dataset("cars", root, "test", 2, TINY)
    assert sorted(set(class_names(test))) == ["class_02", "class_03"]
    assert test.labels == [0, 0, 1, 1]


def test_sop_test_split_takes_all_remaining_classes(dataset_image_tree):
    root = dataset_image_tree([1, 1, 1, 1, 1])
    test = build_dataset("sop", root, "test", 2, TINY)
    assert sorted(set(class_names(test))) == ["class_02", "class_03", "class_04"]
    assert test.labels == [0, 1, 2]


def test_files_are_found_in_imagefolder_order_without_resource_forks(dataset_image_tree, dataset_write_image):
    root = dataset_image_tree([3, 2])
    dataset_write_image(root / "images" / "class_00" / "nested" / "deep.png")
    dataset_write_image(root / "images" / "class_01" / "._hidden.jpg")
    (root / "images" / "class_01" / "notes.txt").write_text("not an image")
    train = build_dataset("cub", root, "train", 2, TINY)
    reference = [(path, label) for path, label in torchvision.datasets.ImageFolder(root / "images").imgs
                 if not Path(path).name.startswith("._")]
    assert list(zip(train.paths, train.labels)) == reference
    assert not any(Path(path).name.startswith("._") for path in train.paths)


def test_item_is_image_label_index_path(dataset_image_tree):
    root = dataset_image_tree([2, 2])
    train = build_dataset("cub", root, "train", 2, TINY)
    image, label, index, path = train[3]
    assert image.shape == (3, 8, 8)
    assert (label, index, path) == (1, 3, train.paths[3])


def test_val_split_holds_out_the_last_training_classes(dataset_image_tree):
    root = dataset_image_tree([1] * 20)
    train = build_dataset("cub", root, "train", 10, TINY, val_fraction=0.2)
    val = build_dataset("cub", root, "val", 10, TINY, val_fraction=0.2)
    assert sorted(set(class_names(train))) == [f"class_{i:02d}" for i in range(8)]
    assert sorted(set(class_names(val))) == ["class_08", "class_09"]
    assert val.labels == [0, 1]
    assert build_dataset("cub", root, "test", 10, TINY, val_fraction=0.2).num_classes == 10


def test_val_split_keeps_at_least_two_classes_each_side(dataset_image_tree):
    root = dataset_image_tree([1] * 8)
    assert build_dataset("cub", root, "val", 4, TINY, val_fraction=0.01).num_classes == 2
    assert build_dataset("cub", root, "train", 4, TINY, val_fraction=0.99).num_classes == 2


def test_val_split_needs_four_training_classes(dataset_image_tree):
    root = dataset_image_tree([1] * 6)
    with pytest.raises(UserInputError, match="dataset.val"):
        build_dataset("cub", root, "train", 3, TINY, val_fraction=0.5)


def test_inshop_labels_are_mapped_for_train_and_for_query_gallery_together(inshop_root):
    train = build_dataset("in_shop", inshop_root, "train", 4, TINY)
    query = build_dataset("in_shop", inshop_root, "query", 4, TINY)
    gallery = build_dataset("in_shop", inshop_root, "gallery", 4, TINY)
    assert train.labels == [1, 0, 2, 0, 3]  # ids 3, 7, 12, 20 in numeric order
    assert query.labels == [1, 2]  # ids 40, 50, 60 over query and gallery
    assert gallery.labels == [0, 1]
    assert query.paths[0] == str(inshop_root / "Img" / "img/b/1.jpg")
    assert query[0][0].shape == (3, 8, 8)


def test_inshop_val_split_holds_out_training_items(inshop_root):
    train = build_dataset("in_shop", inshop_root, "train", 4, TINY, val_fraction=0.5)
    val = build_dataset("in_shop", inshop_root, "val", 4, TINY, val_fraction=0.5)
    assert (train.labels, val.labels) == ([1, 0, 0], [0, 1])  # items 3, 7 | 12, 20


def test_inshop_more_training_items_than_num_classes_is_refused(inshop_root):
    with pytest.raises(UserInputError, match="dataset.num_classes"):
        build_dataset("in_shop", inshop_root, "train", 3, TINY)


def test_missing_root_names_the_path(tmp_path):
    with pytest.raises(UserInputError, match="does not exist.*dataset.dataset_path"):
        build_dataset("cub", tmp_path / "nowhere", "train", 2, TINY)


def test_root_without_images_folder_is_refused(tmp_path):
    with pytest.raises(UserInputError, match="no images/ folder"):
        build_dataset("cub", tmp_path, "train", 2, TINY)


def test_too_few_class_folders_say_found_and_needed(dataset_image_tree):
    root = dataset_image_tree([1, 1, 1])
    with pytest.raises(UserInputError, match=r"Found 3 class folders.*needs 4.*dataset.num_classes = 2"):
        build_dataset("cub", root, "test", 2, TINY)


def test_class_folder_without_images_is_named(dataset_image_tree):
    root = dataset_image_tree([1, 1])
    (root / "images" / "class_01" / "readme.txt").write_text("")
    (root / "images" / "class_01" / "img_000.jpg").unlink()
    with pytest.raises(UserInputError, match="class_01 holds no images"):
        build_dataset("cub", root, "train", 2, TINY)


def test_unknown_dataset_short_names_the_key(tmp_path):
    with pytest.raises(UserInputError, match="dataset.dataset_short"):
        build_dataset("cifar", tmp_path, "train", 2, TINY)


def test_missing_inshop_partition_file_is_named(tmp_path):
    with pytest.raises(UserInputError, match="list_eval_partition.txt does not exist"):
        build_dataset("in_shop", tmp_path, "train", 2, TINY)


@pytest.mark.parametrize("rows, count, header, line", [
    ([("img/x.jpg", "id_1", "train"), ("img/y.jpg", "id_2", "train extra")], None, None, 4),
    ([("img/x.jpg", "id_1", "train"), ("img/y.jpg", "id_2", "validation")], None, None, 4),
    ([("img/x.jpg", "id_1", "train"), ("img/y.jpg", "item", "query")], None, None, 4),
    ([("img/x.jpg", "id_1", "train")], None, "image item status", 2),
    ([("img/x.jpg", "id_1", "train")], 5, None, 1),
])
def test_malformed_inshop_partition_names_file_and_line(tmp_path, rows, count, header, line):
    header = header or "image_name item_id evaluation_status"
    write_partition(tmp_path, rows, count=count, header=header)
    with pytest.raises(UserInputError, match=rf"list_eval_partition.txt is malformed at line {line} "):
        build_dataset("in_shop", tmp_path, "train", 2, TINY)


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def tree_with_broken_image(dataset_image_tree, dataset_write_image):
    root = dataset_image_tree([4, 4])
    broken = dataset_write_image(root / "images" / "class_01" / "img_001.jpg", size=(64, 64))
    truncate(broken)
    return root, str(broken)


def test_broken_image_read_directly_names_the_path(tree_with_broken_image):
    root, broken = tree_with_broken_image
    dataset = build_dataset("cub", root, "train", 2, TINY)
    with pytest.raises(UserInputError, match="img_001.jpg cannot be read"):
        dataset[dataset.paths.index(broken)]


@pytest.mark.parametrize("num_workers", [0, 1])
def test_broken_image_in_loader_stops_with_one_sentence_naming_it(tree_with_broken_image, num_workers):
    root, broken = tree_with_broken_image
    loader = build_eval_loader(build_dataset("cub", root, "train", 2, TINY), 3, num_workers)
    with pytest.raises(UserInputError) as raised:
        list(loader)
    assert str(raised.value).startswith(f"The image {broken} cannot be read")
    assert "Traceback" not in str(raised.value)


def test_skipped_broken_images_are_counted_and_logged_in_the_main_process(tree_with_broken_image, caplog):
    root, broken = tree_with_broken_image
    dataset = build_dataset("cub", root, "train", 2, TINY, skip_broken_images=True)
    loader = build_eval_loader(dataset, 16, num_workers=1)
    with caplog.at_level(logging.WARNING, logger="dataset.loaders"):
        (images, labels, indices, paths), = list(loader)
    assert len(dataset) == 9 and images.shape[0] == 8 and broken not in paths
    assert loader.num_skipped_images == 1
    assert broken in caplog.text


def test_train_loader_gives_full_batches_of_images_labels_indices_paths(dataset_image_tree):
    root = dataset_image_tree([3, 3, 3])
    dataset = build_dataset("cub", root, "train", 3, TINY)
    sampler = ClassBalancedSampler(dataset.labels, 2, 2)
    loader = build_train_loader(dataset, sampler, 4, num_workers=1, seed=3)
    batches = list(loader)
    assert len(batches) == len(loader) == len(sampler) // 4
    images, labels, indices, paths = batches[0]
    assert images.shape == (4, 3, 8, 8)
    assert labels.tolist() == [dataset.labels[i] for i in indices.tolist()]
    assert paths == [dataset.paths[i] for i in indices.tolist()]
    assert loader.drop_last and not loader.persistent_workers


def test_train_augmentations_depend_on_seed_epoch_and_position_not_on_workers(dataset_image_tree):
    root = dataset_image_tree([4, 4, 4])
    dataset = build_dataset("cub", root, "train", 3, build_transform("GL_orig_RE", True, "resnet18", 8, 8))

    def epoch_images(num_workers, seed=3, epoch=1, skip=0):
        sampler = ClassBalancedSampler(dataset.labels, 2, 2, seed=seed)
        loader = build_train_loader(dataset, sampler, 4, num_workers=num_workers, seed=seed)
        loader.generator.manual_seed(1000 + num_workers)  # worker seeds must not matter
        sampler.set_epoch(epoch)
        sampler.skip_batches(skip)
        return torch.cat([batch[0] for batch in loader])

    in_process = epoch_images(0)
    torch.testing.assert_close(epoch_images(2), in_process, rtol=0, atol=0)
    torch.testing.assert_close(epoch_images(2, skip=1), in_process[4:], rtol=0, atol=0)
    assert not torch.equal(epoch_images(0, epoch=2), in_process)
    assert not torch.equal(epoch_images(0, seed=4), in_process)


def test_eval_loader_keeps_dataset_order_and_last_batch(dataset_image_tree):
    root = dataset_image_tree([3, 2])
    dataset = build_dataset("cub", root, "train", 2, TINY)
    batches = list(build_eval_loader(dataset, 2, num_workers=0))
    assert [len(batch[3]) for batch in batches] == [2, 2, 1]
    assert torch.cat([batch[2] for batch in batches]).tolist() == list(range(5))
