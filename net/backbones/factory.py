"""The one place a ``models.encoder_params`` section becomes a backbone module.

A registry maps every ``net_type`` to its constructor and its ImageNet
weights; weights are loaded in one final step: the trained backbone from
``pretrained_path`` when given, otherwise the ImageNet trunk (unless
``imagenet_pretrained: 0``). ``timm:<name>`` builds any timm model
(``timm_backbone.py``); its pretrained weights come with the trunk.
"""
from functools import partial
from typing import Callable, NamedTuple, Optional

import torch

from net.backbones import bn_inception, densenet, resnet
from net.backbones.imagenet import load_imagenet_trunk
from net.backbones.timm_backbone import build_timm_backbone, input_config
from net.backbones.timm_weights import trunk_from_hub, trunk_from_local_file
from net.weights import load_weights
from schema.options import TIMM_PREFIX
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


def build_backbone(encoder_params, num_classes, crop_size=None):
    """``(module, embed_dim)`` for a validated ``models.encoder_params`` section.

    ``module(x, output_option)`` returns ``(logits, embedding)`` with
    ``output_option`` in ``plain`` (L2-normalised), ``norm`` (raw) or ``neck``
    (after the bottleneck). ``crop_size`` (``dataset.crop_size``) sizes timm
    models that take an ``img_size``, such as ViTs.
    """
    net_type = encoder_params["net_type"]
    if net_type.startswith(TIMM_PREFIX):
        module = _build_timm(encoder_params, num_classes, crop_size)
    else:
        module = _build_registered(encoder_params, num_classes)
    if crop_size is not None:
        check_takes_crop(module, net_type, crop_size)
    if encoder_params["channels_last"]:
        module = module.to(memory_format=torch.channels_last)
    return module, module.embed_dim


def check_takes_crop(module, net_type, crop_size):
    """One ``crop_size`` image passes through ``module`` (in eval mode, changing nothing).

    No rule says which sizes a backbone takes: DenseNet needs 29 px or more,
    and BN-Inception's ceil-mode pooling makes its branches disagree at 8-30
    and again at 39-55 px. Tried once here, a size it cannot take is one
    sentence before any data is read, not a failure in the first step.
    """
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros(1, 3, crop_size, crop_size), "plain")
    except (RuntimeError, ValueError) as error:
        reason = " ".join(str(error).split())[:160]
        raise UserInputError(f"dataset.crop_size {crop_size} is a size {net_type} cannot take ({reason}); choose "
                             "another crop_size (the paper: 227).") from None
    finally:
        module.train(was_training)


def backbone_input_config(net_type):
    """Preprocessing a backbone needs: ``{mean, std, interpolation}`` of a timm model's pretrained config.

    Empty for the authors' backbones, whose transforms keep the authors'
    normalisation (0.299 quirk included).
    """
    return input_config(net_type) if net_type.startswith(TIMM_PREFIX) else {}


def _build_registered(encoder_params, num_classes):
    net_type = encoder_params["net_type"]
    entry = _entry(net_type)
    _check_options(encoder_params, entry)
    module = entry.build(encoder_params, num_classes)
    if encoder_params["pretrained_path"] != "no":
        load_weights(module, encoder_params["pretrained_path"], PRETRAINED_PATH_KEY)
    elif encoder_params["imagenet_pretrained"]:
        load_imagenet_trunk(module, net_type, entry.imagenet_url,
                            encoder_params["imagenet_weights"], entry.adapt_imagenet)
    return module


def _build_timm(encoder_params, num_classes, crop_size):
    """timm's pretrained weights arrive with the trunk; trained weights are loaded over everything."""
    for key in ("last_stride", "checkpointing"):
        if encoder_params[key]:
            raise UserInputError(f"models.encoder_params.{key}: 1 is only available for our ResNet backbones, "
                                 f"not {encoder_params['net_type']}; set it to 0.")
    load_pretrained = None
    if encoder_params["pretrained_path"] == "no" and encoder_params["imagenet_pretrained"]:
        weights_file = encoder_params["imagenet_weights"]
        load_pretrained = trunk_from_hub if weights_file is None else \
            partial(trunk_from_local_file, path=weights_file)
    module = build_timm_backbone(encoder_params, num_classes, crop_size, load_pretrained)
    if encoder_params["pretrained_path"] != "no":
        load_weights(module, encoder_params["pretrained_path"], PRETRAINED_PATH_KEY)
    return module


def _entry(net_type):
    if net_type not in BACKBONES:
        raise UserInputError(
            f"models.encoder_params.net_type is {net_type!r}, which is not a known backbone; "
            f"use one of {', '.join(BACKBONES)} or {TIMM_PREFIX}<timm model name>.")
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
