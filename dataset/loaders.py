"""Training and evaluation loaders; batches are ``(images, labels, indices, paths)``."""
import logging
import random

import numpy as np
import torch
import torch.utils.data
from torch.utils.data import default_collate

from .image_list import BrokenImage, broken_image_message
from utils.errors import UserInputError

logger = logging.getLogger(__name__)


def collate_readable(items):
    """Runs in the worker: batch the readable items, set the broken ones aside.

    Returns ``(batch or None, broken)`` so that the main process learns about
    every broken image, whichever worker read it.
    """
    broken = [item for item in items if isinstance(item, BrokenImage)]
    readable = [item for item in items if not isinstance(item, BrokenImage)]
    if not readable:
        return None, broken
    images, labels, indices = default_collate([item[:3] for item in readable])
    return (images, labels, indices, [item[3] for item in readable]), broken


def seed_worker(worker_id):
    """Seed numpy and ``random`` from the per-worker torch seed the loader set."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


class ImageLoader(torch.utils.data.DataLoader):
    """A DataLoader that reports broken images from the main process.

    A broken image stops the run with one sentence naming its path, or, when
    the dataset skips broken images, leaves a smaller batch, a warning and a
    count in ``num_skipped_images``.
    """

    def __init__(self, dataset, **loader_options):
        super().__init__(dataset, collate_fn=collate_readable, **loader_options)
        self.num_skipped_images = 0

    def __iter__(self):
        for batch, broken in super().__iter__():
            self.account_for(broken)
            if batch is not None:
                yield batch

    def account_for(self, broken):
        for item in broken:
            if not self.dataset.skip_broken_images:
                raise UserInputError(broken_image_message(item.path, item.reason))
            self.num_skipped_images += 1
            logger.warning("Skipped the broken image %s (%s); %d skipped so far.",
                           item.path, item.reason, self.num_skipped_images)


class SeededSampler(torch.utils.data.Sampler):
    """``(index, augmentation seed)`` pairs of a ``ClassBalancedSampler``.

    The dataset augments each item from its own seed, so augmentations do
    not depend on the worker count or on which worker reads the item.
    """

    def __init__(self, sampler):
        self.sampler = sampler

    def __iter__(self):
        return zip(iter(self.sampler), self.sampler.augmentation_seeds().tolist())

    def __len__(self):
        return len(self.sampler)


def build_train_loader(dataset, sampler, batch_size, num_workers, pin_memory=False, seed=0):
    """Batches of ``batch_size`` (= P*K) in the sampler's order; the last incomplete one is dropped.

    Each item's augmentation comes from the seed the sampler gives its
    position (``SeededSampler``), so an epoch's augmentations are the same
    in a resumed run and with any ``num_workers``. Workers are not
    persistent; ``generator`` (reseeded per epoch by the trainer) only seeds
    their numpy and ``random`` modules.
    """
    return ImageLoader(
        dataset, batch_size=batch_size, sampler=SeededSampler(sampler), drop_last=True,
        num_workers=num_workers, pin_memory=pin_memory, worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed))


def build_eval_loader(dataset, batch_size, num_workers, pin_memory=False, sampler=None):
    """All images in dataset order (or ``sampler``'s), the last batch kept."""
    return ImageLoader(
        dataset, batch_size=batch_size, sampler=sampler, shuffle=False, drop_last=False,
        num_workers=num_workers, pin_memory=pin_memory)
