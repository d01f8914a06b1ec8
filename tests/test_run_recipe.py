"""One place knows a run: ``embed.py --run`` embeds the test images exactly as the run's own evaluation did.

For each kind of run (ResNet, DenseNet, BN-Inception, a timm ViT at a crop
size other than its default, held-out classes by fraction and by MLRC fold)
a one-step training run records the test embeddings its evaluation of the
best weights computed; ``embed.py --run`` on the same images must give the
same numbers bit for bit, and so the run's recorded test R@1.
"""
import json
import shutil

import numpy as np
import pytest
import torch
import yaml

import embed
import train
from engine.hooks import Hook
from evaluation.recall import recall_at_k
from inference.embedding_file import load_embeddings
from recipe import RunRecipe
from schema import load_config
from tests.conftest import add_training_hooks, tiny_train_config, write_class_pattern_images

pytestmark = pytest.mark.slow

NUM_CLASSES = 16  # 8 train (enough for 4 MLRC folds of 2), 8 test
IMAGES_PER_CLASS = 6


@pytest.fixture(scope="module")
def sixteen_class_tree(tmp_path_factory):
    return write_class_pattern_images(tmp_path_factory.mktemp("recipe") / "data", NUM_CLASSES, IMAGES_PER_CLASS)


class RecordTestEmbeddings(Hook):
    """The test-set embeddings of the best weights: of the best epoch, or of the final test after val selection."""

    def __init__(self):
        self.of_epoch = {}
        self.final_test = None

    def after_epoch(self, trainer, epoch, row):
        if trainer.selection_split == "test":
            self.of_epoch[epoch] = trainer.evaluators["test"].last.gallery.embeddings.clone()

    def after_train(self, trainer):
        if "val" in trainer.evaluators:
            self.final_test = trainer.evaluators["test"].last.gallery.embeddings.clone()


def held_out_by_fraction(raw):
    raw["dataset"].update(val=1, val_protocol="fraction", val_fraction=0.25)


def held_out_by_mlrc_fold(raw):
    raw["dataset"].update(val=1, val_protocol="mlrc", val_fold=3)


def encoder(**params):
    def mutate(raw):
        raw["models"]["encoder_params"].update(imagenet_pretrained=0, **params)
    return mutate


def crop(size):
    def mutate(raw):
        raw["dataset"].update(crop_size=size, resize_size=size)
    return mutate


RUNS = {
    "resnet18": [],
    "densenet121": [encoder(net_type="densenet121"), crop(32)],
    "bn_inception": [encoder(net_type="bn_inception"), crop(64)],
    # The ViT's default is 224 px; built for the run's 32 px crop, with timm's own mean, std and bicubic.
    "vit_at_32px": [encoder(net_type="timm:vit_tiny_patch16_224", sz_embedding=64), crop(32)],
    "val_fraction": [held_out_by_fraction],
    "val_mlrc": [held_out_by_mlrc_fold],
}


def train_one_step(tree, tmp_path, monkeypatch, mutations):
    raw = tiny_train_config(tree, num_epochs=1, max_iters_per_epoch=1)
    raw["dataset"]["num_classes"] = raw["models"]["gnn_params"]["classifier"]["num_classes"] = NUM_CLASSES // 2
    for mutate in mutations:
        mutate(raw)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    recorder = RecordTestEmbeddings()
    with monkeypatch.context() as patch:
        add_training_hooks(patch, recorder)
        assert train.main(["--config_path", str(config_path), "--output_dir", str(tmp_path / "runs")]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    return run_dir, recorder


def folder_of_test_images(tree, tmp_path):
    """A folder holding exactly the test classes, in the order the test split lists them."""
    folder = tmp_path / "test_images"
    for class_index in range(NUM_CLASSES // 2, NUM_CLASSES):
        name = f"class_{class_index:02d}"
        shutil.copytree(tree / "images" / name, folder / name)
    return folder


@pytest.mark.parametrize("kind", list(RUNS))
def test_embed_run_reproduces_the_embeddings_and_r_at_1_the_run_recorded(kind, sixteen_class_tree, tmp_path,
                                                                        monkeypatch):
    run_dir, recorder = train_one_step(sixteen_class_tree, tmp_path, monkeypatch, RUNS[kind])
    summary = json.loads((run_dir / "summary.json").read_text())
    if recorder.final_test is not None:
        recorded, recorded_r1 = recorder.final_test, summary["test_metrics_of_best_epoch"]["R@1"]
    else:
        recorded, recorded_r1 = recorder.of_epoch[summary["best_epoch"]], summary["best_metrics"]["test_R@1"]

    output = tmp_path / "embedded.npz"
    assert embed.main(["--run", str(run_dir), "--images", str(folder_of_test_images(sixteen_class_tree, tmp_path)),
                       "--output", str(output)]) == 0
    embedded = load_embeddings(output, "--gallery")
    np.testing.assert_array_equal(embedded.embeddings, recorded.numpy())
    labels = torch.as_tensor(embedded.labels)
    assert recall_at_k(torch.from_numpy(embedded.embeddings), labels, [1])[1] == recorded_r1


def test_the_recipe_derives_the_head_of_each_validation_protocol(sixteen_class_tree, tmp_path):
    raw = tiny_train_config(sixteen_class_tree)
    raw["dataset"]["num_classes"] = raw["models"]["gnn_params"]["classifier"]["num_classes"] = 10
    expected = {(): 10, (held_out_by_fraction,): 8, (held_out_by_mlrc_fold,): 8}
    for mutations, trained_classes in expected.items():
        for mutate in mutations:
            mutate(raw)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(raw))
        config = load_config(path)
        recipe = RunRecipe(config)
        assert recipe.trained_classes == trained_classes
        assert recipe.dataset("train").num_classes == trained_classes
        # The mode does not change what the weights were trained on.
        assert RunRecipe({**config, "mode": "test"}).trained_classes == trained_classes


def test_the_input_transform_of_a_timm_model_is_its_own_and_ours_is_the_authors():
    from dataset.transforms import AUTHORS_STD, IMAGENET_MEAN
    demo = load_config("config/config_demo_train.yaml")
    ours = RunRecipe(demo).input
    assert (ours.mean, ours.std, ours.interpolation) == (IMAGENET_MEAN, AUTHORS_STD, "bilinear")
    vit = RunRecipe(load_config("config/config_cub_train_vits16_dino.yaml")).input
    assert (vit.mean, vit.std, vit.interpolation) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic")
    caffe = RunRecipe(load_config("config/config_demo_train.yaml",
                                  {"models.encoder_params.net_type": "bn_inception"})).input
    assert (caffe.channel_order, caffe.pixel_scale, caffe.std) == ("BGR", 255.0, (1.0, 1.0, 1.0))
