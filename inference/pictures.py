"""Pictures of what a model retrieves: a grid of queries and neighbours, and a 2-D map of embeddings.

Both return a ``PIL.Image``; the caller writes it (and may send it to TensorBoard).
"""
import functools
import logging
from pathlib import Path

import matplotlib
import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from dataset.image_list import IMAGE_READ_ERRORS, load_rgb

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only back end)

logger = logging.getLogger(__name__)

THUMBNAIL = 96
FRAME = 4
PADDING = 4
TEXT_HEIGHT = 14
TITLE_HEIGHT = 20
QUERY_GAP = 16
CELL_WIDTH = THUMBNAIL + 2 * PADDING
CELL_HEIGHT = THUMBNAIL + 2 * PADDING + TEXT_HEIGHT
BACKGROUND = (255, 255, 255)
PLACEHOLDER = (200, 200, 200)
CORRECT, WRONG, QUERY = (0, 170, 0), (220, 0, 0), (0, 0, 0)
TEXT = (0, 0, 0)
MAP_FIGURE_SIZE = (7, 6)
MAP_DPI = 100
CAPTION_FONT_SIZE = 11
# The font of matplotlib's plots, shipped inside it: Pillow's default bitmap font squeezes the spaces.
CAPTION_FONT_FILE = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


@functools.cache
def caption_font():
    """DejaVu Sans at CAPTION_FONT_SIZE px, or Pillow's own font at that size if the file is missing."""
    if CAPTION_FONT_FILE.is_file():
        return PIL.ImageFont.truetype(str(CAPTION_FONT_FILE), CAPTION_FONT_SIZE)
    return PIL.ImageFont.load_default(size=CAPTION_FONT_SIZE)


def grid_size(num_rows, top_k):
    """``(width, height)`` in pixels of a retrieval grid."""
    return (top_k + 1) * CELL_WIDTH + QUERY_GAP, TITLE_HEIGHT + num_rows * CELL_HEIGHT


def thumbnail(path):
    """The image fitted into THUMBNAIL x THUMBNAIL (aspect kept), or a grey square if unreadable."""
    try:
        image = load_rgb(path)
    except IMAGE_READ_ERRORS as error:
        logger.warning("Cannot draw %s (%s); a grey square stands in for it.", path, error)
        return PIL.Image.new("RGB", (THUMBNAIL, THUMBNAIL), PLACEHOLDER)
    scale = THUMBNAIL / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, PIL.Image.Resampling.BILINEAR)


def _paste_cell(canvas, draw, left, top, path, frame_colour, caption):
    if frame_colour is not None:
        draw.rectangle([left, top, left + CELL_WIDTH - 1, top + THUMBNAIL + 2 * PADDING - 1], fill=frame_colour)
        draw.rectangle([left + FRAME, top + FRAME, left + CELL_WIDTH - 1 - FRAME,
                        top + THUMBNAIL + 2 * PADDING - 1 - FRAME], fill=BACKGROUND)
    image = thumbnail(path)
    canvas.paste(image, (left + PADDING + (THUMBNAIL - image.width) // 2,
                         top + PADDING + (THUMBNAIL - image.height) // 2))
    draw.text((left + PADDING, top + THUMBNAIL + 2 * PADDING), caption, fill=TEXT,
              font=caption_font())


def draw_retrieval_grid(query_paths, neighbour_paths, distances, same_label=None, title="", query_captions=None):
    """One row per query: the query, a gap, then its neighbours nearest first.

    ``neighbour_paths`` and ``distances`` are ``(rows, K)``; with
    ``same_label`` (bool, ``(rows, K)``) each neighbour is framed green
    (same class as the query) or red. Distances are printed under the
    neighbours, ``query_captions`` (e.g. the class) under the queries.
    """
    num_rows, top_k = np.shape(distances)
    canvas = PIL.Image.new("RGB", grid_size(num_rows, top_k), BACKGROUND)
    draw = PIL.ImageDraw.Draw(canvas)
    draw.text((PADDING, 4), title, fill=TEXT, font=caption_font())
    for row in range(num_rows):
        top = TITLE_HEIGHT + row * CELL_HEIGHT
        caption = query_captions[row] if query_captions is not None else "query"
        _paste_cell(canvas, draw, 0, top, query_paths[row], QUERY if same_label is not None else None, caption)
        for rank in range(top_k):
            colour = None if same_label is None else (CORRECT if same_label[row][rank] else WRONG)
            _paste_cell(canvas, draw, QUERY_GAP + (rank + 1) * CELL_WIDTH, top, neighbour_paths[row][rank], colour,
                        f"{distances[row][rank]:.3f}")
    return canvas


def two_d_map(embeddings, method="tsne", seed=0):
    """``(n, 2)`` coordinates by t-SNE (scikit-learn) or UMAP (umap-learn)."""
    if method == "umap":
        import umap  # optional; checked when the config is read
        return umap.UMAP(n_components=2, random_state=seed).fit_transform(embeddings)
    from sklearn.manifold import TSNE
    perplexity = min(30.0, (len(embeddings) - 1) / 3.0)
    return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(embeddings)


def draw_embedding_map(embeddings, labels, method="tsne", seed=0, title="", class_names=None):
    """A scatter plot of the embeddings in 2-D, one colour per class (named in the legend
    by ``class_names[label]`` when given, for at most 20 classes)."""
    points = two_d_map(np.asarray(embeddings, dtype=np.float32), method, seed)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    colours = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
    figure, axis = plt.subplots(figsize=MAP_FIGURE_SIZE)
    for position, label in enumerate(classes):
        chosen = labels == label
        axis.scatter(points[chosen, 0], points[chosen, 1], s=8, color=colours(position % colours.N),
                     label=str(class_names[label] if class_names else label) if len(classes) <= 20 else None)
    if len(classes) <= 20:
        axis.legend(title="class", markerscale=2, fontsize="small", loc="best")
    axis.set_title(title)
    axis.set_xticks([])
    axis.set_yticks([])
    figure.set_dpi(MAP_DPI)
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[:, :, :3].copy()
    plt.close(figure)
    return PIL.Image.fromarray(pixels)
