"""The dataset every split becomes: a list of image paths with their labels."""
import logging
from typing import NamedTuple

import PIL.Image
import torch.utils.data

from utils.errors import UserInputError

logger = logging.getLogger(__name__)

# What PIL raises for a missing, unreadable, truncated or undecodable file.
IMAGE_READ_ERRORS = (OSError, SyntaxError, ValueError)


class BrokenImage(NamedTuple):
    """Stands in for an item whose image could not be read."""

    index: int
    path: str
    reason: str


def broken_image_message(path, reason):
    return (f"The image {path} cannot be read ({reason}); replace or remove the file, "
            f"or set skip_broken_images to skip such images")


def load_rgb(path):
    """Decode the whole file now, so that a truncated image fails here."""
    with PIL.Image.open(path) as image:
        return image.convert("RGB")


def transform_with_seed(transform, image, seed):
    """``transform(image)`` with torch's CPU generator seeded from ``seed``, restored afterwards.

    torchvision's random transforms (and our erasing) draw from that generator;
    forking it keeps the caller's random stream (dropout, ...) untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return transform(image)


class ImageListDataset(torch.utils.data.Dataset):
    """Items are ``(image, label, index, path)``, as in the authors' datasets.

    A broken image raises ``UserInputError`` when read directly in the main
    process. Inside a loader worker (or with ``skip_broken_images``) it comes
    back as a ``BrokenImage`` so that the loader can report it from the main
    process in one sentence, or skip and count it.
    """

    def __init__(self, paths, labels, transform, skip_broken_images=False):
        self.paths = [str(path) for path in paths]
        self.labels = [int(label) for label in labels]
        self.num_classes = len(set(self.labels))
        self.transform = transform
        self.skip_broken_images = skip_broken_images

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, key):
        """``key``: an index, or ``(index, seed)`` to draw the random transforms from ``seed``."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        path = self.paths[index]
        try:
            image = load_rgb(path)
        except IMAGE_READ_ERRORS as error:
            in_worker = torch.utils.data.get_worker_info() is not None
            if self.skip_broken_images or in_worker:
                return BrokenImage(index, path, str(error))
            raise UserInputError(broken_image_message(path, error)) from error
        if self.transform is not None:
            image = self.transform(image) if seed is None else transform_with_seed(self.transform, image, seed)
        return image, self.labels[index], index, path
