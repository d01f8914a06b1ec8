"""Any folder of images a user wants embedded: every image under it, with labels if it has class folders.

Files are found as ``dataset.folder`` finds them (ImageFolder's extensions,
sorted walk). When every image lies inside a sub-folder of the root, the
sub-folders are classes (sorted by name, labels 0..N-1, as ImageFolder);
an image directly in the root means the folder has no labels.
"""
import os
from pathlib import Path
from typing import NamedTuple, Optional

from torchvision.datasets.folder import IMG_EXTENSIONS

from .folder import is_image_file
from utils.errors import UserInputError


class ImageFolderListing(NamedTuple):
    """``paths`` absolute, in a sorted walk; ``labels`` index ``classes`` (both None without classes)."""

    root: Path
    paths: list
    labels: Optional[list]
    classes: Optional[list]


def image_paths_under(folder):
    """Every image file under ``folder``, recursively, in a sorted walk."""
    paths = []
    for directory, subdirectories, names in os.walk(folder, followlinks=True):
        subdirectories.sort()
        paths.extend(os.path.join(directory, name) for name in sorted(names) if is_image_file(name))
    return paths


def read_image_folder(root, flag="--images"):
    """The images under ``root``; an absent or image-less folder is a ``UserInputError``."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise UserInputError(f"{flag} {root} is not a folder; give a folder that holds images.")
    paths = image_paths_under(root)
    if not paths:
        raise UserInputError(f"{flag} {root} holds no images (looked for {', '.join(IMG_EXTENSIONS)} "
                             "in it and its sub-folders); give a folder with images.")
    relative = [Path(path).relative_to(root) for path in paths]
    if any(len(path.parts) == 1 for path in relative):
        return ImageFolderListing(root, paths, None, None)
    classes = sorted({path.parts[0] for path in relative})
    label_of = {name: label for label, name in enumerate(classes)}
    return ImageFolderListing(root, paths, [label_of[path.parts[0]] for path in relative], classes)
