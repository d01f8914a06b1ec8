"""DenseNet backbones: torchvision's ``features``, ReLU, global average pooling, optional ``red``."""
import re

import torch
from torch import nn
from torch.nn import functional as F
from torchvision import models

from net.heads import classify, make_classifier, make_neck

# torchvision constructor and the V1 ImageNet weights.
DENSENETS = {
    "densenet121": (models.densenet121, models.DenseNet121_Weights.IMAGENET1K_V1),
    "densenet161": (models.densenet161, models.DenseNet161_Weights.IMAGENET1K_V1),
    "densenet169": (models.densenet169, models.DenseNet169_Weights.IMAGENET1K_V1),
    "densenet201": (models.densenet201, models.DenseNet201_Weights.IMAGENET1K_V1),
}
# The authors' DenseNet reduces to a fixed 512 dimensions whatever `red` > 1 is.
REDUCED_DIM = 512
# The published DenseNet files name dense-layer parts `norm.1`, `conv.2` where
# torchvision's modules are now called `norm1`, `conv2`.
_PUBLISHED_PART_NAME = re.compile(r"(denselayer\d+\.(?:norm|conv))\.([12])\.")


class DenseNetBackbone(nn.Module):
    """``features`` with torchvision's names, then ``classifier``, ``red``, ``bottleneck``.

    Defect of the authors' code, not reproduced (manifest quirk
    ``densenet_red_mismatch``): with ``red`` > 1 their ``red`` Linear gives 512
    features while their classifier expects int(num_features / red) inputs
    (256 for ``red: 4``), so the forward pass fails. Here the classifier takes
    the 512-d embedding; key names and order are otherwise the authors'.
    """

    trunk_prefix = ""
    head_prefixes = ("classifier.", "red.", "bottleneck.")

    def __init__(self, trunk, num_classes, red, neck):
        super().__init__()
        self.features = trunk.features
        width = trunk.classifier.in_features
        self.embed_dim = REDUCED_DIM if red > 1 else width
        # Registered before `red` to keep the authors' state-dict order.
        self.classifier = make_classifier(self.embed_dim, num_classes, neck)
        self.red = nn.Linear(width, REDUCED_DIM) if red > 1 else None
        self.bottleneck = make_neck(self.embed_dim) if neck else None

    def forward(self, x, output_option="plain"):
        """``(logits, embedding)`` of images ``x`` (RGB, ImageNet-normalised)."""
        pooled = F.adaptive_avg_pool2d(F.relu(self.features(x)), (1, 1))
        embedding = torch.flatten(pooled, 1)
        if self.red is not None:
            embedding = self.red(embedding)
        return classify(embedding, self.bottleneck, self.classifier, output_option)


def build_densenet(net_type, encoder_params, num_classes):
    """The DenseNet ``net_type`` with randomly initialised trunk and head."""
    constructor, _ = DENSENETS[net_type]
    return DenseNetBackbone(constructor(weights=None), num_classes,
                            red=encoder_params["red"], neck=encoder_params["neck"])


def imagenet_url(net_type):
    _, weights = DENSENETS[net_type]
    return weights.url


def rename_old_keys(state):
    """torchvision's current key names for a published DenseNet ImageNet file."""
    return {_PUBLISHED_PART_NAME.sub(r"\1\2.", key): value for key, value in state.items()}
