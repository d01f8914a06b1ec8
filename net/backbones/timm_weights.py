"""ImageNet (or DINO, CLIP, ...) weights of a timm trunk: a local file, the hub caches, or a download.

The order: ``imagenet_weights: <file>`` (a timm state dict, read by
``net.weights.read_state_dict`` and converted by timm's own
``checkpoint_filter_fn`` of the architecture, e.g. resampling a ViT's
position embedding to the crop size); else the file timm would download, if
it is already in the Hugging Face or torch hub cache (loaded by timm, no
network); else timm's download; offline, one sentence naming the file and
where to put it.
"""
import importlib
import logging
from pathlib import Path

import huggingface_hub
import timm

from net.backbones.imagenet import CONFIG_KEY, cache_file
from net.backbones.timm_backbone import create_trunk
from net.weights import load_state, read_state_dict
from utils.errors import UserInputError

logger = logging.getLogger(__name__)

# What timm's Hugging Face hub loader looks for, in its order.
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def trunk_from_local_file(name, crop_size, path):
    """A randomly built trunk, then the timm state dict at ``path`` loaded strictly into it."""
    trunk = create_trunk(name, crop_size, pretrained=False)
    state = read_state_dict(path, CONFIG_KEY)
    for classifier in _classifier_names(trunk):
        state = {key: value for key, value in state.items() if not key.startswith(classifier + ".")}
    convert = getattr(importlib.import_module(type(trunk).__module__), "checkpoint_filter_fn", None)
    if convert is not None:
        state = convert(state, trunk)
    load_state(trunk, state, path, CONFIG_KEY)
    return trunk


def trunk_from_hub(name, crop_size):
    """The trunk with timm's pretrained weights, from the hub caches if there, else downloaded."""
    config = timm.get_pretrained_cfg(name)
    cached = cached_weights(config)
    if cached is not None:
        logger.info("timm weights for %s from the cache: %s", name, cached)
        # A cached hub file is a plain state dict even where the download URL is a custom format (.npz).
        return create_trunk(name, crop_size, pretrained=True,
                            pretrained_cfg_overlay={"file": str(cached), "custom_load": False})
    try:
        return create_trunk(name, crop_size, pretrained=True)
    except (OSError, RuntimeError, ValueError, huggingface_hub.errors.HfHubHTTPError) as error:
        raise UserInputError(
            f"No pretrained weights for timm:{name}: {expected_place(config)} is not there and timm could not "
            f"download it ({type(error).__name__}); put the file there, set {CONFIG_KEY}: <file> to a local "
            "timm state dict saved with torch.save, or models.encoder_params.imagenet_pretrained: 0 to start "
            "from random weights.") from None


def cached_weights(config):
    """Path of the model's weights in the Hugging Face hub cache or the torch hub cache, or None."""
    if config is None:
        return None
    if config.hf_hub_id:
        filenames = (config.hf_hub_filename,) if config.hf_hub_filename else HF_WEIGHT_FILES
        for filename in filenames:
            found = huggingface_hub.try_to_load_from_cache(config.hf_hub_id, filename)
            if isinstance(found, str):
                return Path(found)
    if config.url and not config.custom_load and cache_file(config.url).is_file():
        return cache_file(config.url)
    return None


def expected_place(config):
    """Where the weights file is looked for, in words."""
    if config is None:
        return "the pretrained weights file"
    if config.hf_hub_id:
        filename = config.hf_hub_filename or HF_WEIGHT_FILES[0]
        return (f"{filename} of the Hugging Face repository {config.hf_hub_id} (huggingface-cli download "
                f"{config.hf_hub_id}, cache {huggingface_hub.constants.HF_HUB_CACHE})")
    return str(cache_file(config.url))


def _classifier_names(trunk):
    """The names of the ImageNet classifier in timm's state dicts (absent from a ``num_classes=0`` trunk)."""
    classifier = trunk.pretrained_cfg.get("classifier") or ()
    return (classifier,) if isinstance(classifier, str) else tuple(classifier)
