"""ResNet backbones: torchvision's trunk, global max pooling, optional ``red`` Linear and neck."""
import logging
from contextlib import contextmanager, nullcontext
from functools import partial

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint
from torchvision import models

from net.heads import classify, make_classifier, make_neck
from utils.errors import UserInputError

# torchvision constructor and the V1 ImageNet weights the authors started from.
RESNETS = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (models.resnet101, models.ResNet101_Weights.IMAGENET1K_V1),
    "resnet152": (models.resnet152, models.ResNet152_Weights.IMAGENET1K_V1),
}
# Quirk (load_net_misc): the authors' load_net forces red = 1 for these.
_NO_REDUCTION = ("resnet18", "resnet34")
# Quirk: the authors' resnet34() factory drops its neck and last_stride
# arguments, so their ResNet-34 keeps stride 2 in layer4 and never applies a
# neck in forward; load_net still adds the `bottleneck` module (its keys are
# in their checkpoints) and the bias-free classifier when neck is 1.
_IGNORES_NECK_AND_LAST_STRIDE = ("resnet34",)

logger = logging.getLogger(__name__)


class ResNetBackbone(nn.Module):
    """conv1 .. layer4 with torchvision's names, then the embedding head.

    State-dict keys and order are the authors': trunk, ``red``, ``bottleneck``,
    ``fc``, so their released checkpoints load with ``strict=True``.
    """

    trunk_prefix = ""
    head_prefixes = ("red.", "bottleneck.", "fc.")

    def __init__(self, trunk, num_classes, red, neck, checkpointing, neck_in_forward=True,
                 single_bn_update=False):
        super().__init__()
        self.conv1 = trunk.conv1
        self.bn1 = trunk.bn1
        self.relu = trunk.relu
        self.maxpool = trunk.maxpool
        self.layer1 = trunk.layer1
        self.layer2 = trunk.layer2
        self.layer3 = trunk.layer3
        self.layer4 = trunk.layer4
        # Quirk (resnet_global_max_pool): global MAX pooling, stored under the
        # authors' attribute name `avgpool`.
        self.avgpool = nn.AdaptiveMaxPool2d((1, 1))
        width = trunk.fc.in_features
        self.embed_dim = int(width / red)
        self.red = nn.Linear(width, self.embed_dim) if red > 1 else None
        self.bottleneck = make_neck(self.embed_dim) if neck else None
        self.fc = make_classifier(self.embed_dim, num_classes, neck)
        self.neck_in_forward = neck_in_forward
        if self.bottleneck is not None and not neck_in_forward:
            # Never in the graph, so never updated (as theirs); frozen so DDP expects no gradient.
            self.bottleneck.requires_grad_(False)
        self.checkpointing = checkpointing
        self.single_bn_update = single_bn_update

    def forward(self, x, output_option="plain"):
        """``(logits, embedding)`` of images ``x`` (RGB, ImageNet-normalised)."""
        return self.head(self.layer4_features(x), output_option)

    def layer4_features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        stages = (self.layer1, self.layer2, self.layer3, self.layer4)
        with self._stage_statistics_as_the_authors(stages):
            for stage in stages:
                x = self._run_stage(stage, x)
        return x

    @contextmanager
    def _stage_statistics_as_the_authors(self, stages):
        """BatchNorm statistics of layer1-4 updated as twice with the same batch, by default.

        Quirk (bn_double_update): the authors run layer1-4 through reentrant
        ``torch.utils.checkpoint`` in every forward, and the recomputation in
        backward updates each of their BatchNorms a second time with the same
        batch (same input, weights not yet stepped). Two updates with momentum
        m equal one with 1 - (1 - m)^2 (0.19 for 0.1), for the mean and for
        the unbiased variance alike, plus one more count in
        ``num_batches_tracked``; that is done here without a second forward.
        The stem ``bn1`` and the neck run once in their code too. Only a
        training forward that builds a graph is doubled (theirs recomputes in
        backward only). ``single_bn_update`` switches this off.
        """
        norms = [] if self.single_bn_update or not (self.training and torch.is_grad_enabled()) else [
            norm for stage in stages for norm in stage.modules()
            if isinstance(norm, _BatchNorm) and norm.track_running_stats and norm.momentum is not None]
        momenta = [norm.momentum for norm in norms]
        for norm, momentum in zip(norms, momenta):
            norm.momentum = 1.0 - (1.0 - momentum) ** 2
        try:
            yield
        finally:
            for norm, momentum in zip(norms, momenta):
                norm.momentum = momentum
        with torch.no_grad():
            for norm in norms:
                norm.num_batches_tracked.add_(1)

    def head(self, layer4_out, output_option="plain"):
        """Global max pool -> ``red`` -> neck -> ``fc`` -> output option.

        The embedding is taken after ``red`` and before the neck.
        """
        embedding = torch.flatten(self.avgpool(layer4_out), 1)
        if self.red is not None:
            embedding = self.red(embedding)
        bottleneck = self.bottleneck if self.neck_in_forward else None
        return classify(embedding, bottleneck, self.fc, output_option)

    def _run_stage(self, stage, x):
        """Run one stage, recomputed in backward when checkpointing a training step.

        Gradient checkpointing is how the authors fit a batch of 54 at 227 px.
        """
        if not (self.checkpointing and self.training and torch.is_grad_enabled()):
            return stage(x)
        return checkpoint(stage, x, use_reentrant=False,
                          context_fn=partial(_batchnorm_stats_kept_on_recompute, stage))


def _batchnorm_stats_kept_on_recompute(stage):
    """Checkpoint contexts: plain forward, and a recompute that leaves BN buffers as they were.

    The recomputation in backward runs the stage's BatchNorms in training mode
    again, which would add an update of their running statistics (and batch
    counters) to the one of the forward, where the authors' double update is
    already applied (``_stage_statistics_as_the_authors``).
    """
    return nullcontext(), _batchnorm_buffers_restored(stage)


@contextmanager
def _batchnorm_buffers_restored(module):
    saved = [(buffer, buffer.clone())
             for norm in module.modules() if isinstance(norm, _BatchNorm)
             for buffer in norm.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def _set_last_stride_one(layer4):
    """Stride 1 instead of 2 in the first block of the last stage (and its shortcut)."""
    for conv in layer4[0].modules():
        if isinstance(conv, nn.Conv2d) and conv.stride == (2, 2):
            conv.stride = (1, 1)


def build_resnet(net_type, encoder_params, num_classes):
    """The ResNet ``net_type`` with randomly initialised trunk and head."""
    constructor, _ = RESNETS[net_type]
    trunk = constructor(weights=None)
    ignores_options = net_type in _IGNORES_NECK_AND_LAST_STRIDE
    if ignores_options and (encoder_params["neck"] or encoder_params["last_stride"]):
        logger.info("%s: as in the authors' factory, neck and last_stride do not change the network "
                    "(layer4 keeps stride 2, the neck is built but not applied; a neck only makes the "
                    "classifier bias-free)", net_type)
    if encoder_params["last_stride"] and not ignores_options:
        _set_last_stride_one(trunk.layer4)
    red = 1 if net_type in _NO_REDUCTION else encoder_params["red"]
    if red > trunk.fc.in_features:
        raise UserInputError(f"models.encoder_params.red {red} leaves {net_type} no embedding channel of its "
                             f"{trunk.fc.in_features}; use a red of at most {trunk.fc.in_features} (the paper: 4, "
                             "2048 -> 512).")
    return ResNetBackbone(trunk, num_classes, red=red, neck=encoder_params["neck"],
                          checkpointing=encoder_params["checkpointing"], neck_in_forward=not ignores_options,
                          single_bn_update=bool(encoder_params["single_bn_update"]))


def imagenet_url(net_type):
    _, weights = RESNETS[net_type]
    return weights.url
