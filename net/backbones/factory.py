"""The one place a ``models.encoder_params`` section becomes a backbone module.

A registry maps every ``net_type`` to its constructor and its ImageNet
weights; weights are loaded in one final step: the trained backbone from
``pretrained_path`` when given, otherwise the ImageNet trunk (unless
``imagenet_pretrained: 0``).
"""
from functools import partial
from typing import Callable, NamedTuple, Optional

import torch

from net.backbones import bn_inception, densenet, resnet
from net.backbones.imagenet import load_imagenet_trunk
from net.weights import load_weights
from utils.errors import UserInputError

PRETRAINED_PATH_KEY = "--bb_path / models.encoder_params.pretrained_path"


class BackboneEntry(NamedTuple):
    """How to build one ``net_type`` and where its ImageNet weights come from."""
    build: Callable  # (encoder_params, num_classes) -> module with `embed_dim`
    imagenet_url: str
    adapt_imagenet: Optional[Callable] = None  # published file -> trunk keys/shapes
    is_resnet: bool = False


def _resnet_entry(net_type):
    return BackboneEntry(partial(resnet.build_resnet, net_type), resnet.imagenet_url(net_type),
                         is_resnet=True)


def _densenet_entry(net_type):
    return BackboneEntry(partial(densenet.build_densenet, net_type),
                         densenet.imagenet_url(net_type), densenet.rename_old_keys)


BACKBONES = {
    **{name: _resnet_entry(name) for name in resnet.RESNETS},
    **{name: _densenet_entry(name) for name in densenet.DENSENETS},
    "bn_inception": BackboneEntry(bn_inception.build_bn_inception, bn_inception.IMAGENET_URL,
                                  bn_inception.adapt_imagenet_state),
}


def build_backbone(encoder_params, num_classes):
    """``(module, embed_dim)`` for a validated ``models.encoder_params`` section.

    ``module(x, output_option)`` returns ``(logits, embedding)`` with
    ``output_option`` in ``plain`` (L2-normalised), ``norm`` (raw) or ``neck``
    (after the bottleneck).
    """
    net_type = encoder_params["net_type"]
    entry = _entry(net_type)
    _check_options(encoder_params, entry)
    module = entry.build(encoder_params, num_classes)
    if encoder_params["pretrained_path"] != "no":
        load_weights(module, encoder_params["pretrained_path"], PRETRAINED_PATH_KEY)
    elif encoder_params["imagenet_pretrained"]:
        load_imagenet_trunk(module, net_type, entry.imagenet_url,
                            encoder_params["imagenet_weights"], entry.adapt_imagenet)
    if encoder_params["channels_last"]:
        module = module.to(memory_format=torch.channels_last)
    return module, module.embed_dim


def _entry(net_type):
    if net_type not in BACKBONES:
        raise UserInputError(
            f"models.encoder_params.net_type is {net_type!r}, which is not a known backbone; "
            f"use one of {', '.join(BACKBONES)}.")
    return BACKBONES[net_type]


def _check_options(encoder_params, entry):
    """Options that only some backbones have, refused where they would be silently ignored."""
    net_type = encoder_params["net_type"]
    for key in ("last_stride", "checkpointing"):
        if encoder_params[key] and not entry.is_resnet:
            raise UserInputError(
                f"models.encoder_params.{key}: 1 is only available for ResNet backbones, "
                f"not {net_type}; set it to 0.")
    if net_type == "bn_inception" and encoder_params["neck"] and not encoder_params["bn_inception"]["embed"]:
        raise UserInputError(
            "models.encoder_params.neck: 1 needs models.encoder_params.bn_inception.embed: 1 "
            "for bn_inception; set neck: 0 or embed: 1.")
