"""The dataset every split becomes: a list of image paths with their labels."""
import logging
import os
from typing import NamedTuple

import numpy as np
import PIL.Image
import torch.utils.data

from utils.errors import UserInputError

logger = logging.getLogger(__name__)



class UnreadableImage(Exception):
    """The file cannot be decoded into an image; the message says why (the caller names the file)."""


# What ``load_rgb`` raises for a missing, unreadable, truncated, undecodable or oversized file.
IMAGE_READ_ERRORS = (UnreadableImage,)


class BrokenImage(NamedTuple):
    """Stands in for an item whose image could not be read."""

    index: int
    path: str
    reason: str


def broken_image_message(path, reason):
    return (f"The image {path} cannot be read ({reason}); replace or remove the file, "
            f"or set skip_broken_images to skip such images")


# PIL modes of one channel with more than 8 bits; PIL's own convert("RGB") clips them to 255
# (16-bit) or to 0 and 1 (float), which makes them white or black.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
SIXTEEN_BIT_MAX = 65535


def load_rgb(path):
    """The one function that opens an image: 8-bit RGB, whatever the file holds.

    Decodes the whole file now, so that a truncated image fails here.
    Palette, grey, RGBA and CMYK images are converted by PIL; 16-bit grey
    images are scaled from 0..65535 to 0..255, float images from 0..1.
    Whatever goes wrong while decoding (PIL raises many types for damaged
    files, and ``DecompressionBombError`` for an image of more pixels than
    ``PIL.Image.MAX_IMAGE_PIXELS`` allows, before allocating them) is an
    ``UnreadableImage`` with the reason; the caller names the file.
    """
    if not os.path.isfile(path):  # a regular file: a pipe or a device may block or never end
        raise UnreadableImage("not a regular file: a folder, pipe or device, whose reading may never end"
                              if os.path.exists(path) else "No such file or directory")
    try:
        with PIL.Image.open(path) as image:
            if image.mode in SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
                return high_bit_depth_to_rgb(image)
            return image.convert("RGB")
    except PIL.Image.DecompressionBombError as error:
        raise UnreadableImage(f"{str(error).rstrip('.')}, so it is not decoded; shrink it") from None
    except MemoryError:
        raise UnreadableImage("decoding it needs more memory than this machine has") from None
    except Exception as error:  # noqa: BLE001 - every failure to decode an untrusted file is the file's
        raise UnreadableImage(str(error) or type(error).__name__) from None


def high_bit_depth_to_rgb(image):
    """A 16-bit, 32-bit integer or float grey image as 8-bit RGB, scaled, never clipped."""
    pixels = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        if not (np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1):
            raise ValueError("a float image with values outside 0..1, which cannot be scaled to 8 bits; "
                             "save it as an 8- or 16-bit image")
        scaled = pixels * 255.0
    else:
        if pixels.min() < 0 or pixels.max() > SIXTEEN_BIT_MAX:
            raise ValueError(f"a {image.mode} image with values outside 0..{SIXTEEN_BIT_MAX}, which cannot "
                             "be scaled to 8 bits; save it as an 8- or 16-bit image")
        scaled = pixels * (255.0 / SIXTEEN_BIT_MAX)
    return PIL.Image.fromarray(np.round(scaled).astype(np.uint8), mode="L").convert("RGB")


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
