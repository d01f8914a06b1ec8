"""BatchNorm running statistics after a real training step match the authors' double update."""
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from recipe import RunRecipe
from schema import load_config
from tests.conftest import bare_trainer

CUB_CONFIG = "config/config_cub_train.yaml"
IMAGES_PER_CLASS = 2
# Smaller than the config's 227 px crop to keep the test fast; BatchNorm does not care.
IMAGE_SIZE = 64
MOMENTUM = 0.1


def cub_trainer(tmp_path):
    config = load_config(CUB_CONFIG, {"models.encoder_params.imagenet_pretrained": 0,
                                      "train_params.num_elements_class": IMAGES_PER_CLASS})
    device = torch.device("cpu")
    backbone, mpn = RunRecipe(config).build_models(device)
    return bare_trainer(config, backbone, mpn, tmp_path), config


def record_batch_statistics(module):
    """Per BatchNorm: its buffers before the step and the mean / unbiased variance of its input."""
    records = {}

    def hook(norm, inputs, _output):
        x = inputs[0].detach().double()
        dims = [0] + list(range(2, x.dim()))
        records[norm]["batch"] = (x.mean(dims), x.var(dims, unbiased=True))
    for norm in module.modules():
        if isinstance(norm, _BatchNorm):
            records[norm] = {"before": (norm.running_mean.double().clone(), norm.running_var.double().clone())}
            norm.register_forward_hook(hook)
    return records


def ema(running, batch, updates):
    for _ in range(updates):
        running = (1 - MOMENTUM) * running + MOMENTUM * batch
    return running


def test_one_cub_resnet50_step_updates_stage_batchnorms_twice_with_the_same_batch(tmp_path):
    torch.manual_seed(0)
    trainer, config = cub_trainer(tmp_path)
    stem = trainer.backbone.bn1
    records = record_batch_statistics(trainer.backbone)
    num_classes_iter = config["train_params"]["num_classes_iter"]
    images = torch.randn(num_classes_iter * IMAGES_PER_CLASS, 3, IMAGE_SIZE, IMAGE_SIZE)
    labels = torch.arange(num_classes_iter).repeat_interleave(IMAGES_PER_CLASS)
    trainer.training_step(images, labels, epoch=1, step=0)
    assert len(records) == 53
    for norm, record in records.items():
        updates = 1 if norm is stem else 2
        (mean_before, var_before), (batch_mean, batch_var) = record["before"], record["batch"]
        torch.testing.assert_close(norm.running_mean.double(), ema(mean_before, batch_mean, updates),
                                   rtol=0, atol=1e-6)
        torch.testing.assert_close(norm.running_var.double(), ema(var_before, batch_var, updates),
                                   rtol=0, atol=1e-6)
        assert norm.num_batches_tracked.item() == updates
