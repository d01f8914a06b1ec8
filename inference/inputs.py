"""What ``retrieve.py`` searches: an embedding file, a folder of images, one image, or (a gallery) an index.

Folders and images are embedded with the run's model, which is loaded only
when one of the inputs needs it.
"""
from pathlib import Path

from dataset.folder import is_image_file
from dataset.image_folder import ImageFolderListing, read_image_folder
from inference.embed_images import embed_listing
from inference.embedding_file import load_embeddings
from inference.gallery_index import load_gallery_index
from utils.errors import UserInputError


class LazyModel:
    """Calls ``load()`` on first use only: two embedding files need no model at all."""

    def __init__(self, load):
        self._load = load
        self._model = None

    def get(self):
        if self._model is None:
            self._model = self._load()
        return self._model


def single_image_listing(path):
    path = Path(path).resolve()
    return ImageFolderListing(path.parent, [str(path)], None, None)


def embedded_input(value, flag, model, allow_image=False):
    """``EmbeddedImages`` of ``value`` (an .npz file, a folder, or with ``allow_image`` one image file)."""
    path = Path(value)
    if path.is_file() and path.suffix == ".npz":
        return load_embeddings(path, flag)
    if path.is_dir():
        return embed_listing(model.get(), read_image_folder(path, flag), flag)
    if allow_image and path.is_file() and is_image_file(path.name):
        return embed_listing(model.get(), single_image_listing(path), flag)
    what = "an .npz file of embed.py, a folder of images or an image file" if allow_image else \
        "an .npz file of embed.py or a folder of images"
    raise UserInputError(f"{flag} {value} is not {what}; check the path.")


def gallery_input(value, flag, model):
    """A ``GalleryIndex`` of ``index.py`` (a .index file), else ``EmbeddedImages`` as ``embedded_input`` gives."""
    path = Path(value)
    if path.is_file() and path.suffix == ".index":
        return load_gallery_index(path, flag)
    return embedded_input(value, flag, model)
