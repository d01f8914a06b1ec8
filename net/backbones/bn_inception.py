"""BN-Inception (Inception v2 ported from Caffe), with the authors' parameter names.

Input is Caffe-style: BGR channels, values 0-255 minus the mean
(104, 117, 128). Every convolution has a bias and is followed by a BatchNorm
and a ReLU; the branch outputs of an inception block are concatenated.
"""
from typing import NamedTuple, Optional

import torch
from torch import nn
from torch.nn import functional as F

from net.heads import classify, make_classifier, make_neck

# Cadene's port of the Caffe ImageNet weights, the authors' starting point.
IMAGENET_URL = "http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth"
FEATURE_DIM = 1024


class InceptionBlock(NamedTuple):
    """Channel widths of one inception block (``None``: branch absent).

    Blocks without a 1x1 branch (3c, 4e) halve the resolution: their 3x3 and
    second double-3x3 convolutions have stride 2 and their pool branch is a
    stride-2 max pool passed through without projection.
    """
    name: str
    in_channels: int
    one_by_one: Optional[int]
    reduce_3x3: int
    out_3x3: int
    reduce_double_3x3: int
    out_double_3x3: int
    pool: str
    pool_proj: Optional[int]


BLOCKS = (
    InceptionBlock("inception_3a", 192, 64, 64, 64, 64, 96, "avg", 32),
    InceptionBlock("inception_3b", 256, 64, 64, 96, 64, 96, "avg", 64),
    InceptionBlock("inception_3c", 320, None, 128, 160, 64, 96, "max_stride2", None),
    InceptionBlock("inception_4a", 576, 224, 64, 96, 96, 128, "avg", 128),
    InceptionBlock("inception_4b", 576, 192, 96, 128, 96, 128, "avg", 128),
    InceptionBlock("inception_4c", 576, 160, 128, 160, 128, 160, "avg", 128),
    InceptionBlock("inception_4d", 608, 96, 128, 192, 160, 192, "avg", 128),
    InceptionBlock("inception_4e", 608, None, 128, 192, 192, 256, "max_stride2", None),
    InceptionBlock("inception_5a", 1056, 352, 192, 320, 160, 224, "avg", 128),
    InceptionBlock("inception_5b", 1024, 352, 192, 320, 192, 224, "max", 128),
)


def _pool(kind):
    if kind == "avg":
        return nn.AvgPool2d(3, stride=1, padding=1, ceil_mode=True, count_include_pad=True)
    if kind == "max":
        return nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
    return nn.MaxPool2d(3, stride=2, ceil_mode=True)


class BNInception(nn.Module):
    """The trunk and its ``last_linear`` classifier on the 1024-d pooled features.

    With ``bn_inception.embed: 0`` this is the whole backbone. Quirk
    (bn_inception_flag_and_output): its forward ignores ``output_option`` and
    returns ``(last_linear logits, raw 1024-d pooled vector)``, never normalised.
    """

    trunk_prefix = ""
    head_prefixes = ("last_linear.",)
    embed_dim = FEATURE_DIM

    def __init__(self, num_classes):
        super().__init__()
        self._add_unit("conv1_7x7_s2", 3, 64, kernel_size=7, stride=2, padding=3)
        self.pool1_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self._add_unit("conv2_3x3_reduce", 64, 64, kernel_size=1)
        self._add_unit("conv2_3x3", 64, 192, kernel_size=3, padding=1)
        self.pool2_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for block in BLOCKS:
            self._add_block(block)
        self.last_linear = nn.Linear(FEATURE_DIM, num_classes)

    def _add_unit(self, name, in_channels, out_channels, kernel_size, stride=1, padding=0):
        """Register ``name`` (conv with bias) and ``name_bn``, as in the Caffe port."""
        self.add_module(name, nn.Conv2d(in_channels, out_channels, kernel_size,
                                        stride=stride, padding=padding))
        # Quirk of the Caffe port: momentum 0.9 (PyTorch's default is 0.1), so the
        # running statistics follow the latest batches closely during training.
        self.add_module(f"{name}_bn", nn.BatchNorm2d(out_channels, eps=1e-5, momentum=0.9))

    def _add_block(self, block):
        name, width = block.name, block.in_channels
        stride = 2 if block.one_by_one is None else 1
        if block.one_by_one is not None:
            self._add_unit(f"{name}_1x1", width, block.one_by_one, kernel_size=1)
        self._add_unit(f"{name}_3x3_reduce", width, block.reduce_3x3, kernel_size=1)
        self._add_unit(f"{name}_3x3", block.reduce_3x3, block.out_3x3,
                       kernel_size=3, stride=stride, padding=1)
        self._add_unit(f"{name}_double_3x3_reduce", width, block.reduce_double_3x3, kernel_size=1)
        self._add_unit(f"{name}_double_3x3_1", block.reduce_double_3x3, block.out_double_3x3,
                       kernel_size=3, padding=1)
        self._add_unit(f"{name}_double_3x3_2", block.out_double_3x3, block.out_double_3x3,
                       kernel_size=3, stride=stride, padding=1)
        self.add_module(f"{name}_pool", _pool(block.pool))
        if block.pool_proj is not None:
            self._add_unit(f"{name}_pool_proj", width, block.pool_proj, kernel_size=1)

    def _unit(self, name, x):
        conv, norm = getattr(self, name), getattr(self, f"{name}_bn")
        return F.relu(norm(conv(x)))

    def _block(self, block, x):
        name = block.name
        branches = []
        if block.one_by_one is not None:
            branches.append(self._unit(f"{name}_1x1", x))
        branches.append(self._unit(f"{name}_3x3", self._unit(f"{name}_3x3_reduce", x)))
        double = self._unit(f"{name}_double_3x3_reduce", x)
        double = self._unit(f"{name}_double_3x3_1", double)
        branches.append(self._unit(f"{name}_double_3x3_2", double))
        pooled = getattr(self, f"{name}_pool")(x)
        branches.append(pooled if block.pool_proj is None else self._unit(f"{name}_pool_proj", pooled))
        return torch.cat(branches, 1)

    def features(self, x):
        """The inception_5b map (1024 channels, 7x7 for a 227 px crop)."""
        x = self.pool1_3x3_s2(self._unit("conv1_7x7_s2", x))
        x = self._unit("conv2_3x3", self._unit("conv2_3x3_reduce", x))
        x = self.pool2_3x3_s2(x)
        for block in BLOCKS:
            x = self._block(block, x)
        return x

    def pooled_features(self, x):
        """The 1024-d max over the feature map.

        The authors' MaxPool2d(7) on the 7x7 map of a 227 px crop is this
        global max; taking the global max keeps other input sizes working.
        """
        return torch.flatten(F.adaptive_max_pool2d(self.features(x), (1, 1)), 1)

    def forward(self, x, output_option="plain"):
        """``(logits, pooled)``; ``output_option`` is ignored (quirk, see the class)."""
        pooled = self.pooled_features(x)
        return self.last_linear(pooled), pooled


class BNInceptionEmbedding(nn.Module):
    """``bn_inception.embed: 1``: Linear ``embed`` 1024 -> sz_embedding on the pooled features.

    ``inception.last_linear`` stays in the state dict (the authors' layout) but
    is not used; the logits come from ``fc``.
    """

    trunk_prefix = "inception."
    head_prefixes = ("inception.last_linear.", "embed.", "bottleneck.", "fc.")

    def __init__(self, num_classes, sz_embedding, neck):
        super().__init__()
        self.inception = BNInception(num_classes)
        self.embed = nn.Linear(FEATURE_DIM, sz_embedding)
        self.bottleneck = make_neck(sz_embedding) if neck else None
        self.fc = make_classifier(sz_embedding, num_classes, neck)
        self.embed_dim = sz_embedding

    def forward(self, x, output_option="plain"):
        embedding = self.embed(self.inception.pooled_features(x))
        return classify(embedding, self.bottleneck, self.fc, output_option)


def build_bn_inception(encoder_params, num_classes):
    """BN-Inception with or without the ``embed`` Linear, randomly initialised."""
    settings = encoder_params["bn_inception"]
    if not settings["embed"]:
        return BNInception(num_classes)
    return BNInceptionEmbedding(num_classes, settings["sz_embedding"], encoder_params["neck"])


def adapt_imagenet_state(state):
    """Cadene's file stores BatchNorm vectors as [1, C]; the authors squeeze them to [C]."""
    return {key: value.squeeze(0) if value.dim() > 1 and value.size(0) == 1 else value
            for key, value in state.items()}
