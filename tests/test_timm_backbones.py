"""``net_type: timm:<name>`` (issue 17): build, heads, weights, preprocessing, names, lr options."""
from functools import partial

import huggingface_hub
import pytest
import safetensors.torch
import timm
import torch
from timm.optim import param_groups_layer_decay
from torchvision.transforms import InterpolationMode, Normalize, RandomResizedCrop, Resize

import train
from dataset.transforms import AUTHORS_STD, IMAGENET_MEAN, build_transform
from net import backbone_input_config, build_backbone, build_mpn
from engine.hooks import BestWeights, LrSchedule
from run_folder.layout import best_weight_names
from schema import SCHEMA, load_config
from schema.checks import validate
from tests.conftest import bare_trainer, tiny_train_config
from utils.errors import UserInputError
from utils.precision import Precision

NUM_CLASSES = 5
CROP = 32
MODELS = ("timm:vit_tiny_patch16_224", "timm:convnext_atto", "timm:resnet18")
WIDTHS = {"timm:vit_tiny_patch16_224": 192, "timm:convnext_atto": 320, "timm:resnet18": 512}
VIT_DEPTH = 12


def encoder_params(net_type="timm:vit_tiny_patch16_224", **overrides):
    """A validated ``models.encoder_params`` section of a randomly initialised timm model."""
    return validate({"net_type": net_type, "imagenet_pretrained": 0, **overrides},
                    SCHEMA["models"]["encoder_params"], "models.encoder_params.", "test")


def build(net_type="timm:vit_tiny_patch16_224", seed=0, **overrides):
    torch.manual_seed(seed)
    module, _ = build_backbone(encoder_params(net_type, **overrides), NUM_CLASSES, crop_size=CROP)
    return module.eval()


def images(seed=1, batch=4):
    return torch.randn(batch, 3, CROP, CROP, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def offline_hubs(tmp_path, monkeypatch):
    """Empty Hugging Face and torch hub caches, and a Hugging Face hub that refuses the network."""
    hf_cache = tmp_path / "hf_cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf_cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return hf_cache


# --- building and heads ------------------------------------------------------

@pytest.mark.parametrize("net_type", MODELS)
@pytest.mark.parametrize("sz_embedding", [None, 64])
def test_timm_models_build_at_the_crop_size_and_give_logits_and_embedding(net_type, sz_embedding):
    dim = sz_embedding or WIDTHS[net_type]
    for neck in (0, 1):
        module = build(net_type, neck=neck, sz_embedding=sz_embedding)
        assert module.embed_dim == dim
        raw_logits, raw = module(images(), output_option="norm")
        for option in ("plain", "norm", "neck"):
            logits, embedding = module(images(), output_option=option)
            assert logits.shape == (4, NUM_CLASSES) and embedding.shape == (4, dim)
            assert torch.allclose(logits, raw_logits)
        plain = module(images(), output_option="plain")[1]
        assert torch.allclose(plain, torch.nn.functional.normalize(raw, dim=1))
        after_neck = module(images(), output_option="neck")[1]
        assert (module.bottleneck is not None) == bool(neck)
        assert torch.allclose(after_neck, module.bottleneck(raw) if neck else raw)


def test_width_is_that_of_the_models_own_pooled_output():
    # MobileNetV3's head ends with a 1x1 conv from 288 features to a 1024-d pre-logits layer.
    module = build("timm:mobilenetv3_small_050")
    assert module.embed_dim == 1024 and module(images())[1].shape == (4, 1024)


def test_vit_takes_the_crop_size_as_img_size():
    module = build()
    assert module.trunk.patch_embed.img_size == (CROP, CROP)
    assert module.trunk.pos_embed.shape[1] == (CROP // 16) ** 2 + 1


def test_vit_pool_options_take_the_class_token_or_pool_the_patch_tokens():
    module = build()
    features = module.trunk.forward_features(images())
    pooled = {pool: build(pool=pool).pooled_features(images()) for pool in ("token", "avg", "gem")}
    assert torch.allclose(pooled["token"], features[:, 0])
    assert torch.allclose(pooled["avg"], features[:, 1:].mean(dim=1))
    expected_gem = features[:, 1:].clamp(min=1e-6).pow(3).mean(dim=1).pow(1 / 3)
    assert torch.allclose(pooled["gem"], expected_gem)
    # The model's own pooling for this ViT is the class token (after its norm).
    assert torch.allclose(module.pooled_features(images()), features[:, 0])


def test_pool_is_refused_for_a_convolutional_model():
    with pytest.raises(UserInputError, match="only available for vision transformers"):
        build("timm:convnext_atto", pool="avg")


def test_misspelled_timm_name_gets_one_sentence_with_the_closest_names():
    with pytest.raises(UserInputError) as error:
        build("timm:vit_tiny_patch16_244")
    message = str(error.value)
    assert "\n" not in message and message.endswith(".")
    assert "timm:vit_tiny_patch16_224" in message and "closest" in message


def test_unknown_pretrained_tag_gets_the_tags_timm_has():
    with pytest.raises(UserInputError, match=r"timm:vit_small_patch16_224\.dino\b"):
        build("timm:vit_small_patch16_224.dinno")


def test_misspelled_name_stops_train_py_with_exit_code_2_before_a_run_folder(tmp_path, pattern_tree):
    import yaml
    raw = tiny_train_config(pattern_tree)
    raw["models"]["encoder_params"]["net_type"] = "timm:convnext_attto"
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    assert train.main(["--config_path", str(config_path), "--output_dir", str(tmp_path / "runs")]) == 2
    assert not (tmp_path / "runs").exists()


# --- weights -------------------------------------------------------------------

def test_imagenet_weights_file_loads_into_the_trunk_and_changes_the_output(tmp_path):
    # A timm state dict as users save it: full model at 224 px, with an ImageNet classifier.
    torch.manual_seed(123)
    saved = timm.create_model("vit_tiny_patch16_224", num_classes=10).state_dict()
    path = tmp_path / "vit_tiny.pth"
    torch.save(saved, path)
    random_init = build(seed=0)
    loaded = build(seed=0, imagenet_pretrained=1, imagenet_weights=str(path))
    trunk = loaded.trunk.state_dict()
    assert torch.equal(trunk["blocks.3.mlp.fc1.weight"], saved["blocks.3.mlp.fc1.weight"])
    assert torch.equal(trunk["cls_token"], saved["cls_token"])
    # The 14 x 14 position embedding is resampled by timm to the 2 x 2 patches of 32 px.
    assert trunk["pos_embed"].shape == (1, 5, 192) and saved["pos_embed"].shape == (1, 197, 192)
    assert not torch.allclose(loaded(images())[1], random_init(images())[1])
    # The head stays as initialised.
    assert torch.equal(loaded.fc.weight, random_init.fc.weight)


def test_weights_file_of_another_model_is_refused_with_the_first_key_that_does_not_fit(tmp_path):
    path = tmp_path / "convnext.pth"
    torch.save(timm.create_model("convnext_atto", num_classes=0).state_dict(), path)
    with pytest.raises(UserInputError, match=r"do not fit the model: key '.*' is missing"):
        build(imagenet_pretrained=1, imagenet_weights=str(path))


def test_weights_in_the_hugging_face_cache_are_loaded_without_network(offline_hubs):
    config = timm.get_pretrained_cfg("vit_tiny_patch16_224")
    snapshot = offline_hubs / f"models--{config.hf_hub_id.replace('/', '--')}" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    torch.manual_seed(7)
    published = timm.create_model("vit_tiny_patch16_224", img_size=CROP).state_dict()
    safetensors.torch.save_file(published, snapshot / "model.safetensors")
    loaded = build(imagenet_pretrained=1)
    assert torch.equal(loaded.trunk.state_dict()["blocks.0.attn.qkv.weight"], published["blocks.0.attn.qkv.weight"])


def test_offline_without_cached_weights_names_the_file_and_where_to_put_it(offline_hubs):
    with pytest.raises(UserInputError) as error:
        build("timm:convnext_atto", imagenet_pretrained=1)
    message = str(error.value)
    assert "model.safetensors" in message and "timm/convnext_atto.d2_in1k" in message
    assert str(offline_hubs) in message and "imagenet_weights" in message and "imagenet_pretrained: 0" in message


# --- preprocessing ---------------------------------------------------------------

def test_timm_models_normalise_as_their_pretrained_config_and_ours_as_the_authors():
    dino = backbone_input_config("timm:vit_small_patch16_224.dino")
    assert dino == {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "interpolation": "bicubic"}
    assert backbone_input_config("timm:vit_tiny_patch16_224")["std"] == (0.5, 0.5, 0.5)
    assert backbone_input_config("resnet50") == {}
    for train_mode in (True, False):
        steps = build_transform("GL_orig_RE", train_mode, "timm:vit_small_patch16_224.dino", 32, 36, **dino).transforms
        normalize = next(step for step in steps if isinstance(step, Normalize))
        assert normalize.std == dino["std"]
        resize = next(step for step in steps if isinstance(step, (RandomResizedCrop, Resize)))
        assert resize.interpolation == InterpolationMode.BICUBIC
    authors = build_transform("GL_orig_RE", True, "resnet50", 32, 36).transforms
    normalize = next(step for step in authors if isinstance(step, Normalize))
    assert normalize.mean == IMAGENET_MEAN and normalize.std == AUTHORS_STD
    assert authors[0].interpolation == InterpolationMode.BILINEAR


# --- config ---------------------------------------------------------------------

def write_config(tmp_path, pattern_tree, encoder=None, **train_params):
    import yaml
    raw = tiny_train_config(pattern_tree, **train_params)
    raw["models"]["encoder_params"].update(encoder or {})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_config_accepts_any_timm_name_and_refuses_an_empty_one(tmp_path, pattern_tree):
    assert load_config(write_config(tmp_path, pattern_tree, {"net_type": "timm:convnext_atto"})) \
        ["models"]["encoder_params"]["net_type"] == "timm:convnext_atto"
    with pytest.raises(UserInputError, match="without a name after it"):
        load_config(write_config(tmp_path, pattern_tree, {"net_type": "timm:"}))
    with pytest.raises(UserInputError, match="or timm:<name>"):
        load_config(write_config(tmp_path, pattern_tree, {"net_type": "resnet42"}))


@pytest.mark.parametrize("encoder, train_params, match", [
    ({"pool": "gem"}, {}, "encoder_params.pool' .* only available for net_type: timm"),
    ({"freeze_trunk": 1}, {}, "encoder_params.freeze_trunk' .* only available"),
    ({}, {"layer_decay": 0.7}, "layer_decay' .* needs a timm backbone"),
    ({"net_type": "timm:resnet18"}, {"layer_decay": 1.5}, r"must lie in \(0, 1\]"),
    ({}, {"warmup_epochs": 2}, "warm-up must end before it"),
    ({}, {"grad_clip": 0}, "grad_clip' .* must be positive"),
])
def test_config_refuses_options_where_they_cannot_work(tmp_path, pattern_tree, encoder, train_params, match):
    with pytest.raises(UserInputError, match=match):
        load_config(write_config(tmp_path, pattern_tree, encoder, **train_params))


# --- optimisation options ---------------------------------------------------------

def trainer_for(tmp_path, pattern_tree, encoder, precision=None, **train_params):
    """A Trainer on a randomly initialised timm model (no data: steps are fed by hand)."""
    config = load_config(write_config(tmp_path, pattern_tree, {"imagenet_pretrained": 0, **encoder},
                                      **train_params))
    torch.manual_seed(0)
    backbone, dim = build_backbone(config["models"]["encoder_params"], 4, crop_size=CROP)
    mpn = build_mpn(config["models"]["gnn_params"], dim)
    return bare_trainer(config, backbone, mpn, tmp_path, precision), config


def lr_of_each_parameter(trainer):
    return {id(parameter): group["lr"] for group in trainer.optimizer.param_groups for parameter in group["params"]}


def expected_vit_layer_scale(name, layer_decay):
    """timm's rule for a ViT trunk of depth 12: stem ld^12, block j ld^(11 - j), final norm 1."""
    if name.startswith(("trunk.patch_embed", "trunk.pos_embed", "trunk.cls_token")):
        return layer_decay ** VIT_DEPTH
    if name.startswith("trunk.blocks."):
        return layer_decay ** (VIT_DEPTH - 1 - int(name.split(".")[2]))
    assert name.startswith("trunk.norm"), name
    return 1.0


def test_layer_decay_and_backbone_lr_scale_give_each_layer_its_lr(tmp_path, pattern_tree):
    lr, layer_decay, trunk_scale = 1e-3, 0.5, 0.1
    trainer, _ = trainer_for(tmp_path, pattern_tree, {"net_type": "timm:vit_tiny_patch16_224", "sz_embedding": 32},
                          lr=lr, layer_decay=layer_decay, backbone_lr_scale=trunk_scale)
    lr_of = lr_of_each_parameter(trainer)
    assert trainer.optimizer.param_groups[0]["lr"] == lr
    for name, parameter in trainer.backbone.named_parameters():
        if name.startswith(("embed.", "bottleneck.", "fc.")):
            assert lr_of[id(parameter)] == pytest.approx(lr), name
        else:
            expected = lr * trunk_scale * expected_vit_layer_scale(name, layer_decay)
            assert lr_of[id(parameter)] == pytest.approx(expected, rel=1e-12), name
    assert all(lr_of[id(parameter)] == lr for parameter in trainer.mpn.parameters())
    # The same scales as timm's own param_groups_layer_decay on the bare trunk.
    timm_scale = {id(parameter): group["lr_scale"]
                  for group in param_groups_layer_decay(trainer.backbone.trunk, layer_decay=layer_decay)
                  for parameter in group["params"]}
    for parameter in trainer.backbone.trunk.parameters():
        assert lr_of[id(parameter)] == pytest.approx(lr * trunk_scale * timm_scale[id(parameter)], rel=1e-12)


def test_defaults_keep_one_parameter_group_as_the_authors(tmp_path, pattern_tree):
    trainer, _ = trainer_for(tmp_path, pattern_tree, {"net_type": "timm:resnet18"})
    (group,) = trainer.optimizer.param_groups
    assert group["lr_scale"] == 1.0
    assert len(group["params"]) == len(list(trainer.backbone.parameters())) + len(list(trainer.mpn.parameters()))


def test_lr_drop_keeps_each_groups_relative_scale(tmp_path, pattern_tree):
    trainer, config = trainer_for(tmp_path, pattern_tree, {"net_type": "timm:vit_tiny_patch16_224"}, lr=1e-3,
                                  layer_decay=0.5, backbone_lr_scale=0.1)
    train_params = config["train_params"]
    before = [group["lr"] for group in trainer.optimizer.param_groups]
    best_weights = BestWeights(tmp_path, partial(best_weight_names, config=config))
    best_weights.after_evaluation(trainer, 1, {"test_R@1": 0.5})
    schedule = LrSchedule(train_params["lr"], train_params["lr_drop_epochs"], train_params["warmup_epochs"],
                          best_weights)
    schedule.before_epoch(trainer, train_params["lr_drop_epochs"][0])
    after = [group["lr"] for group in trainer.optimizer.param_groups]
    assert len(before) > 2 and after == pytest.approx([lr / 10 for lr in before], rel=1e-12)


def test_warmup_raises_the_lr_linearly_every_step_then_leaves_it(tmp_path, pattern_tree):
    lr, steps_per_epoch = 1e-3, 4
    trainer, _ = trainer_for(tmp_path, pattern_tree, {"net_type": "timm:resnet18"}, lr=lr, backbone_lr_scale=0.5,
                             warmup_epochs=1.5, lr_drop_epochs=[3])
    schedule = LrSchedule(lr, [3], 1.5, best_weights=None)
    seen = []
    for epoch, step in [(1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (2, 1), (2, 2)]:
        schedule.before_step(trainer, epoch, step, steps_per_epoch)
        seen.append([group["lr"] for group in trainer.optimizer.param_groups])
    expected = [[lr * k / 6, lr * 0.5 * k / 6] for k in (1, 2, 3, 4, 5, 6, 6)]
    assert [lr for lrs in seen for lr in lrs] == pytest.approx([lr for lrs in expected for lr in lrs], rel=1e-12)


def training_batch():
    return torch.randn(12, 3, CROP, CROP, generator=torch.Generator().manual_seed(3)), \
        torch.arange(4).repeat_interleave(3)


def gradient_norm_at_each_step(trainer):
    """Wraps the optimiser's step to record the norm of the gradients it applies."""
    norms = []
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        grads = [p.grad for group in trainer.optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return step(*args, **kwargs)
    trainer.optimizer.step = recording_step
    return norms


@pytest.mark.parametrize("scaled", [False, True])
def test_grad_clip_bounds_the_true_gradient_norm(tmp_path, pattern_tree, scaled):
    # Scaled: the float16 path's gradient scaler (here without autocast); the
    # clip must act on the unscaled gradients, so the applied norm equals it.
    precision = Precision("scaler", torch.device("cpu"), scaler=torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)) \
        if scaled else None
    clip = 1e-3
    trainer, _ = trainer_for(tmp_path, pattern_tree, {"net_type": "timm:resnet18"}, precision, grad_clip=clip)
    norms = gradient_norm_at_each_step(trainer)
    trainer.training_step(*training_batch(), 1, 0)
    assert norms == pytest.approx([clip], rel=1e-3)


def test_frozen_trunk_stays_in_eval_mode_gets_no_updates_and_the_head_trains(tmp_path, pattern_tree):
    trainer, _ = trainer_for(tmp_path, pattern_tree, {"net_type": "timm:convnext_atto", "freeze_trunk": 1,
                                                    "sz_embedding": 32})
    trainer.backbone.train()
    assert not trainer.backbone.trunk.training and trainer.backbone.embed.training
    trunk_before = {k: v.clone() for k, v in trainer.backbone.trunk.state_dict().items()}
    embed_before = trainer.backbone.embed.weight.detach().clone()
    trainer.training_step(*training_batch(), 1, 0)
    assert all(parameter.grad is None for parameter in trainer.backbone.trunk.parameters())
    assert all(torch.equal(v, trunk_before[k]) for k, v in trainer.backbone.trunk.state_dict().items())
    assert not torch.equal(trainer.backbone.embed.weight, embed_before)


# --- end to end ----------------------------------------------------------------------

E2E_OPTIONS = {  # net_type -> (encoder_params, train_params): the ViT run uses every new option
    "timm:vit_tiny_patch16_224": ({"pool": "avg", "sz_embedding": 64},
                                  {"layer_decay": 0.75, "backbone_lr_scale": 0.5, "warmup_epochs": 1,
                                   "grad_clip": 1.0}),
    "timm:convnext_atto": ({"neck": 1}, {}),
    "timm:resnet18": ({}, {}),
}


@pytest.mark.slow
@pytest.mark.parametrize("net_type", MODELS)
def test_two_epochs_with_the_mpn_and_the_best_weights_give_the_same_recall_in_test_mode(
        net_type, tmp_path, pattern_tree):
    import json

    import yaml

    from tests.conftest import evaluate_best_weights_in_test_mode
    encoder, train_params = E2E_OPTIONS[net_type]
    raw = tiny_train_config(pattern_tree, num_epochs=2, lr_drop_epochs=[2], **train_params)
    raw["models"]["encoder_params"].update(net_type=net_type, imagenet_pretrained=0, **encoder)
    raw["dataset"].update(crop_size=CROP, resize_size=CROP)
    assert "lsgnn" in raw["train_params"]["loss_fn"]["fns"]
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    assert train.main(["--config_path", str(config_path), "--output_dir", str(tmp_path / "runs")]) == 0
    (run,) = list((tmp_path / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["last_epoch"] == 2 and "loss_MPN0" in (run / "metrics.csv").read_text()
    metrics = evaluate_best_weights_in_test_mode(run, tmp_path / "test")
    assert metrics["R@1"] == summary["best_metrics"]["test_R@1"]


def test_worked_example_config_is_valid_and_names_a_timm_model_with_pretrained_weights():
    from pathlib import Path
    config = load_config(Path(__file__).resolve().parents[1] / "config" / "config_cub_train_vits16_dino.yaml")
    net_type = config["models"]["encoder_params"]["net_type"]
    assert net_type == "timm:vit_small_patch16_224.dino"
    assert timm.get_pretrained_cfg(net_type[len("timm:"):]).hf_hub_id == "timm/vit_small_patch16_224.dino"
    assert config["dataset"]["crop_size"] == 224 and config["train_params"]["grad_clip"] == 3.0


def test_timm_names_become_file_names_without_a_colon(tmp_path):
    from run_folder.run_dir import make_run_dir
    config = {"models": {"encoder_params": {"neck": 0, "net_type": "timm:vit_tiny_patch16_224.augreg_in21k"}},
              "dataset": {"dataset_short": "cub"}}
    assert best_weight_names(0.5, config) == ("0.5timm-vit_tiny_patch16_224.augreg_in21k_cub.pth",
                                              "0.5gnn_timm-vit_tiny_patch16_224.augreg_in21k_cub.pth")
    assert make_run_dir(tmp_path, "cub_timm:resnet18_train").name.startswith("cub_timm-resnet18_train_")
