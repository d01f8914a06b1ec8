"""Any timm model as a backbone: ``net_type: timm:<model name>``.

The timm model is the trunk (built with ``num_classes=0``, so it ends at its
pooled features); our head follows it as for the ResNets: an optional
Linear ``embed`` (the ResNets' ``red``), the neck and the classifier of
``net/heads.py``, and the same ``plain|norm|neck`` outputs, so the MPN and
the loss see exactly what they see with the authors' backbones.
"""
import difflib

import timm
import torch
from torch import nn

from net.heads import classify, make_classifier, make_neck
from schema.options import TIMM_PREFIX
from utils.errors import UserInputError

GEM_POWER = 3.0
GEM_EPS = 1e-6
CLOSEST_NAMES = 3


def timm_model_name(net_type):
    """``timm:vit_small_patch16_224.dino`` -> ``vit_small_patch16_224.dino``."""
    return net_type[len(TIMM_PREFIX):]


def check_model_name(name):
    """A ``UserInputError`` with the closest timm names when timm does not know ``name``."""
    architecture, _, tag = name.partition(".")
    known_architecture = timm.is_model(architecture)
    if known_architecture and (not tag or name in timm.list_pretrained(architecture + ".*")):
        return
    candidates = timm.list_pretrained(architecture + ".*") if known_architecture else \
        timm.list_models() + timm.list_pretrained()
    close = difflib.get_close_matches(name, candidates, n=CLOSEST_NAMES, cutoff=0.5)
    hint = f"the closest are {', '.join(TIMM_PREFIX + match for match in close)}" if close else \
        "see timm.list_models() for the names"
    raise UserInputError(f"models.encoder_params.net_type is {TIMM_PREFIX}{name}, which timm {timm.__version__} "
                         f"does not know; {hint}.")


def create_trunk(name, crop_size, **kwargs):
    """``timm.create_model`` without classifier, at ``crop_size`` when the model takes an ``img_size``.

    ViTs size their position embedding from ``img_size``; convolutional
    models have no such argument and refuse it with a TypeError.
    """
    try:
        return timm.create_model(name, num_classes=0, img_size=crop_size, **kwargs)
    except TypeError as error:
        if "img_size" not in str(error):
            raise
        return timm.create_model(name, num_classes=0, **kwargs)


def is_vision_transformer(trunk):
    """Token models: ``forward_features`` gives (batch, tokens, width), the first ones prefix tokens."""
    return hasattr(trunk, "num_prefix_tokens")


class TimmBackbone(nn.Module):
    """A timm trunk, its pooling (or ours for ViTs), then ``embed`` -> neck -> ``fc``.

    State-dict keys: ``trunk.*`` (the timm model's own names), ``embed``,
    ``bottleneck``, ``fc``; a timm state dict loads into ``trunk``.
    """

    trunk_prefix = "trunk."
    head_prefixes = ("embed.", "bottleneck.", "fc.")

    def __init__(self, trunk, num_classes, neck, sz_embedding=None, pool=None, freeze_trunk=False):
        super().__init__()
        self.trunk = trunk
        self.pool = pool
        # The model's own head may end with a pre-logits layer wider than the features (MobileNetV3).
        width = trunk.num_features if pool else getattr(trunk, "head_hidden_size", trunk.num_features)
        self.embed_dim = sz_embedding or width
        self.embed = nn.Linear(width, sz_embedding) if sz_embedding else None
        self.bottleneck = make_neck(self.embed_dim) if neck else None
        self.fc = make_classifier(self.embed_dim, num_classes, neck)
        self.freeze_trunk = freeze_trunk
        if freeze_trunk:
            self.trunk.requires_grad_(False)
            self.trunk.eval()

    def train(self, mode=True):
        """A frozen trunk stays in eval mode (no dropout, no BatchNorm statistics updates)."""
        super().train(mode)
        if self.freeze_trunk:
            self.trunk.eval()
        return self

    def forward(self, x, output_option="plain"):
        """``(logits, embedding)`` of images ``x`` normalised as the model's pretrained config says."""
        if self.freeze_trunk:
            with torch.no_grad():
                pooled = self.pooled_features(x)
        else:
            pooled = self.pooled_features(x)
        embedding = pooled if self.embed is None else self.embed(pooled)
        return classify(embedding, self.bottleneck, self.fc, output_option)

    def pooled_features(self, x):
        features = self.trunk.forward_features(x)
        if self.pool is None:
            return self.trunk.forward_head(features, pre_logits=True)
        if self.pool == "token":
            return features[:, 0]
        patches = features[:, self.trunk.num_prefix_tokens:]
        if self.pool == "avg":
            return patches.mean(dim=1)
        return patches.clamp(min=GEM_EPS).pow(GEM_POWER).mean(dim=1).pow(1.0 / GEM_POWER)

    def layer_ids(self):
        """``({parameter name: layer id}, number of layers)`` of the trunk, by timm's own grouping.

        timm's ``group_matcher`` gives a ViT's layers as: the stem (patch
        and position embeddings, class token) 0, block j j + 1, the final
        norm with the last block; ConvNeXt and ResNet group by stage blocks
        likewise. The grouping timm's ``param_groups_layer_decay`` uses.
        """
        layer_of = timm.models.group_parameters(self.trunk, self.trunk.group_matcher(coarse=False), reverse=True)
        return {self.trunk_prefix + name: layer for name, layer in layer_of.items()}, max(layer_of.values()) + 1


def check_pool(trunk, pool, net_type):
    if pool is None:
        return
    if not is_vision_transformer(trunk):
        raise UserInputError(f"models.encoder_params.pool: {pool} is only available for vision transformers, "
                             f"not {net_type}; remove it to use the model's own pooling.")
    if pool == "token" and trunk.num_prefix_tokens == 0:
        raise UserInputError(f"models.encoder_params.pool: token needs a class token, which {net_type} has "
                             "not; use avg or gem.")


def build_timm_backbone(encoder_params, num_classes, crop_size, load_pretrained):
    """The ``timm:<name>`` backbone; ``load_pretrained(name, crop_size)`` returns a trunk with weights.

    Random initialisation uses ``pretrained=False``.
    """
    net_type = encoder_params["net_type"]
    name = timm_model_name(net_type)
    check_model_name(name)
    trunk = load_pretrained(name, crop_size) if load_pretrained else create_trunk(name, crop_size, pretrained=False)
    check_pool(trunk, encoder_params["pool"], net_type)
    return TimmBackbone(trunk, num_classes, neck=encoder_params["neck"], sz_embedding=encoder_params["sz_embedding"],
                        pool=encoder_params["pool"], freeze_trunk=bool(encoder_params["freeze_trunk"]))


def input_config(net_type):
    """``{mean, std, interpolation}`` of the model's pretrained config (its ImageNet preprocessing)."""
    name = timm_model_name(net_type)
    check_model_name(name)
    config = timm.get_pretrained_cfg(name)
    if config is None:
        return {}
    return {"mean": tuple(config.mean), "std": tuple(config.std), "interpolation": config.interpolation}
