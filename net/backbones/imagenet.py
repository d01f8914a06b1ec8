"""ImageNet initialisation of a backbone's trunk, from a local file or the torch hub cache.

Only the trunk takes the ImageNet weights; the head (``red``, neck,
classifier, ``embed``) stays freshly initialised, as in the authors' code.
"""
import logging
import os
from pathlib import Path
from urllib.parse import urlparse

import torch

from net.weights import load_state, read_state_dict
from utils.errors import UserInputError

logger = logging.getLogger(__name__)

CONFIG_KEY = "models.encoder_params.imagenet_weights"


def is_url(location):
    return urlparse(location).scheme in ("http", "https")


def cache_file(url):
    """Where torch hub keeps the file downloaded from ``url`` (honours TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def fetch_into_cache(url, net_type):
    """Path of the cached file for ``url``, downloading it first when it is not there."""
    cached = cache_file(url)
    if cached.is_file():
        return cached
    logger.info("downloading ImageNet weights for %s from %s to %s", net_type, url, cached)
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(cached), progress=False)
    except OSError as err:  # URLError, HTTPError and socket errors are OSErrors
        raise UserInputError(
            f"No ImageNet weights for {net_type}: {cached} is not there and downloading {url} "
            f"failed ({err}); set models.encoder_params.imagenet_weights: <file> to a local copy, "
            f"or models.encoder_params.imagenet_pretrained: 0 to start from random weights.") from err
    return cached


def load_imagenet_trunk(module, net_type, default_url, imagenet_weights, adapt=None):
    """Copy ImageNet weights into the trunk of ``module``.

    ``imagenet_weights`` is a local file, a URL (fetched through the hub cache)
    or ``None`` for ``default_url``. ``adapt`` maps the published file's keys
    and shapes to the module's trunk names.
    """
    location = imagenet_weights or default_url
    path = fetch_into_cache(location, net_type) if is_url(location) else Path(location)
    state = read_state_dict(path, CONFIG_KEY)
    if adapt is not None:
        state = adapt(state)
    state = {module.trunk_prefix + key: value for key, value in state.items()}
    load_state(module, state, path, CONFIG_KEY, keep_prefixes=module.head_prefixes)
