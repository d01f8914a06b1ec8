"""The MLRC class-disjoint protocol: 4 folds of the training classes, one held out."""
import pytest
import yaml

from dataset import build_dataset
from dataset.build import mlrc_fold
from schema import load_config
from utils.errors import UserInputError

TINY = None  # no transform: the tests read labels and paths only


def class_names(dataset):
    return {path.split("/")[-2] for path in dataset.paths}


@pytest.mark.parametrize("num_classes", (8, 9, 10, 11, 100))
def test_folds_are_class_disjoint_and_cover_every_training_class(num_classes):
    folds = [set(mlrc_fold(num_classes, fold)) for fold in range(4)]
    assert set().union(*folds) == set(range(num_classes))
    assert sum(len(fold) for fold in folds) == num_classes
    # sklearn's KFold(4) sizes: the first num_classes % 4 folds hold one class more.
    assert [len(fold) for fold in folds] == [num_classes // 4 + (i < num_classes % 4) for i in range(4)]


def test_cub_folds_are_contiguous_quarters_of_the_sorted_classes():
    assert [mlrc_fold(100, fold) for fold in range(4)] == [range(0, 25), range(25, 50), range(50, 75),
                                                           range(75, 100)]


@pytest.mark.parametrize("fold", range(4))
def test_train_and_val_datasets_split_the_training_classes_by_fold(dataset_image_tree, fold):
    root = dataset_image_tree([1] * 20)  # 10 training classes, 10 test classes
    train = build_dataset("cub", root, "train", 10, TINY, val_fold=fold)
    val = build_dataset("cub", root, "val", 10, TINY, val_fold=fold)
    expected_val = {f"class_{i:02d}" for i in mlrc_fold(10, fold)}
    assert class_names(val) == expected_val
    assert class_names(train) == {f"class_{i:02d}" for i in range(10)} - expected_val
    assert sorted(train.labels) == list(range(train.num_classes))
    assert sorted(val.labels) == list(range(val.num_classes))
    assert build_dataset("cub", root, "test", 10, TINY, val_fold=fold).num_classes == 10


def test_folds_are_the_same_for_the_same_seed_and_do_not_depend_on_it(dataset_image_tree, tmp_path):
    from engine.components import build_data
    from recipe import RunRecipe
    from tests.conftest import tiny_train_config
    root = dataset_image_tree([2] * 16)

    def held_out_paths(seed):
        raw = tiny_train_config(root, seed=seed)
        raw["dataset"].update(num_classes=8, val=1, val_protocol="mlrc", val_fold=2)
        raw["models"]["gnn_params"]["classifier"]["num_classes"] = 8
        path = tmp_path / f"seed{seed}.yaml"
        path.write_text(yaml.safe_dump(raw))
        data = build_data(RunRecipe(load_config(path)), "train")
        return data.eval_loaders["val"]["loader"].dataset.paths, data.train_loader.dataset.paths

    assert held_out_paths(0) == held_out_paths(0) == held_out_paths(5)


def test_too_few_training_classes_for_four_folds_is_refused(dataset_image_tree):
    root = dataset_image_tree([1] * 10)
    with pytest.raises(UserInputError, match="dataset.val_protocol"):
        build_dataset("cub", root, "train", 7, TINY, val_fold=0)


def config_with(tmp_path, pattern_tree, **dataset):
    from tests.conftest import tiny_train_config
    raw = tiny_train_config(pattern_tree)
    raw["dataset"].update(dataset)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_mlrc_without_val_is_refused(tmp_path, pattern_tree):
    with pytest.raises(UserInputError, match="dataset.val to 1"):
        load_config(config_with(tmp_path, pattern_tree, val_protocol="mlrc"))


def test_fold_number_above_three_is_refused(tmp_path, pattern_tree):
    with pytest.raises(UserInputError, match="dataset.val_fold"):
        load_config(config_with(tmp_path, pattern_tree, val=1, val_protocol="mlrc", val_fold=4))
