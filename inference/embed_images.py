"""Embed a list of image files with a run's backbone, exactly as its evaluation embeds a test set."""
import logging
from pathlib import Path

import numpy as np

from dataset.image_list import ImageListDataset
from dataset.loaders import build_eval_loader
from evaluation.embeddings import extract_embeddings
from evaluation.evaluator import in_index_order
from inference.embedding_file import EmbeddedImages
from utils.errors import UserInputError

logger = logging.getLogger(__name__)


def embed_listing(model, listing, flag="--images"):
    """``EmbeddedImages`` of an ``ImageFolderListing``; unreadable images are logged, counted and left out."""
    labels = listing.labels if listing.labels is not None else [0] * len(listing.paths)
    dataset = ImageListDataset(listing.paths, labels, model.transform, skip_broken_images=True)
    loader = build_eval_loader(dataset, model.batch_size, model.num_workers,
                               pin_memory=model.device.type == "cuda")
    embedded = in_index_order(*extract_embeddings(model.backbone, loader, model.device,
                                                  output_option=model.output_option))
    if loader.num_skipped_images:
        logger.warning("%d of %d images could not be read and were left out.", loader.num_skipped_images,
                       len(listing.paths))
    if len(embedded.indices) == 0:
        raise UserInputError(f"{flag} {listing.root}: none of its {len(listing.paths)} images could be read; "
                             "check the files.")
    kept = embedded.indices.cpu().numpy()
    paths = [Path(listing.paths[index]).relative_to(listing.root) for index in kept]
    embedded_labels = None if listing.labels is None else np.asarray(listing.labels, dtype=np.int64)[kept]
    return EmbeddedImages(embedded.embeddings.cpu().numpy(), paths, listing.root, model.distance,
                          embedded_labels, listing.classes)
