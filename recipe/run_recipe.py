"""What a run is: its trained classes, its input transform and its models, from its config.

Training, test, pseudo_test, hyper_search, ``embed.py`` and ``retrieve.py``
all ask a ``RunRecipe`` instead of reading these facts from the config
themselves: two derivations of one fact had drifted apart (a timm run
embedded with the authors' normalisation and bilinear resizing; an MLRC run
embedded with a head for the wrong number of classes).

The facts depend on the config alone, never on the mode: a config with
``dataset.val: 1`` describes weights whose heads were trained without the
held-out classes, whether it now trains, tests or embeds.
"""
import copy
import logging
from dataclasses import asdict, dataclass

import torch

from dataset.build import build_dataset, mlrc_fold, validation_cut
from dataset.table import read_table, table_classes
from dataset.transforms import AUTHORS_STD, CAFFE_MEAN_BGR, CAFFE_STD, IMAGENET_MEAN, build_transform
from evaluation.clustering import resolve_kmeans_backend
from evaluation.metric_sets import metric_set, table_metric_set
from schema.options import TABLE_DATASET
from net import backbone_input_config, build_backbone, build_mpn, load_weights

logger = logging.getLogger(__name__)

# The paper's embeddings are 512-d; the MPN grows with the square of the size.
LARGE_EMBEDDING_DIM = 1024
# last.pth holds the weights and RAdam's two moment estimates of every parameter.
CHECKPOINT_COPIES_OF_PARAMETERS = 3
# Held-out training classes are scored like CUB: Recall@1,2,4,8 (or eval_params.recall_at) and NMI.
VALIDATION_METRIC_SET = "cub"


@dataclass(frozen=True)
class InputTransform:
    """Every parameter of a run's input: what a client needs to prepare an image as the run did.

    Evaluation: resize the shorter side to ``resize_size`` (``interpolation``),
    centre-crop ``crop_size``, channels in ``channel_order`` on a 0-``pixel_scale``
    scale, minus ``mean``, divided by ``std``. Training: a random resized crop
    of ``crop_scale``, a flip, the same normalisation, random erasing for
    ``GL_orig_RE``.
    """

    trans: str
    net_type: str
    resize_size: int
    crop_size: int
    crop_scale: tuple
    mean: tuple
    std: tuple
    interpolation: str
    channel_order: str
    pixel_scale: float
    erasing_fill: str

    def evaluation(self):
        """The transform of every evaluation (and of embed.py / retrieve.py)."""
        return build_transform(self.trans, False, self.net_type, crop_size=self.crop_size,
                               resize_size=self.resize_size, mean=self.mean, std=self.std,
                               interpolation=self.interpolation)

    def training(self):
        return build_transform(self.trans, True, self.net_type, crop_size=self.crop_size,
                               resize_size=self.resize_size, crop_scale=self.crop_scale, mean=self.mean,
                               std=self.std, interpolation=self.interpolation, fill=self.erasing_fill)

    def as_dict(self):
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


class RunRecipe:
    """The facts of one run, from its validated config (``schema.load_config``)."""

    def __init__(self, config):
        self.config = config
        self.dataset_config = config["dataset"]
        self.encoder_params = config["models"]["encoder_params"]

    @property
    def dataset_name(self):
        return self.dataset_config["dataset_short"]

    @property
    def is_table(self):
        return self.dataset_name == TABLE_DATASET

    @property
    def table(self):
        """The checked ``DatasetTable`` of a table run (read once per process), else None."""
        if not self.is_table:
            return None
        return read_table(self.dataset_config["dataset_path"], self.dataset_config["table"])

    @property
    def num_classes(self):
        """The training classes: ``dataset.num_classes``, or for a table its training labels (which a given
        ``num_classes`` must match)."""
        if self.is_table:
            return table_classes(self.dataset_config["dataset_path"], self.dataset_config["table"],
                                 self.dataset_config["num_classes"])
        return self.dataset_config["num_classes"]

    @property
    def holds_out_classes(self):
        """Whether training classes are held out for model selection (``dataset.val``)."""
        return bool(self.dataset_config["val"])

    @property
    def validation_split(self):
        """``(val_fraction, val_fold)`` that ``build_dataset`` takes: the held-out classes, if any."""
        if not self.holds_out_classes:
            return 0.0, None
        if self.dataset_config["val_protocol"] == "mlrc":
            return 0.0, self.dataset_config["val_fold"]
        return self.dataset_config["val_fraction"], None

    @property
    def trained_classes(self):
        """Outputs of the classifier heads: the training classes less those held out."""
        num_classes = self.num_classes
        val_fraction, val_fold = self.validation_split
        if val_fold is not None:
            return num_classes - len(mlrc_fold(num_classes, val_fold))
        if val_fraction:
            return validation_cut(num_classes, val_fraction)
        return num_classes

    @property
    def input(self):
        """The ``InputTransform``: the authors' normalisation, a timm model's own, or BN-Inception's Caffe input."""
        net_type = self.encoder_params["net_type"]
        caffe_input = net_type == "bn_inception"
        pretrained = backbone_input_config(net_type)
        return InputTransform(
            trans=self.dataset_config["trans"], net_type=net_type,
            resize_size=self.dataset_config["resize_size"], crop_size=self.dataset_config["crop_size"],
            crop_scale=tuple(self.dataset_config["crop_scale"]),
            mean=tuple(CAFFE_MEAN_BGR if caffe_input else pretrained.get("mean", IMAGENET_MEAN)),
            std=tuple(CAFFE_STD if caffe_input else pretrained.get("std", AUTHORS_STD)),
            interpolation=pretrained.get("interpolation", "bilinear"),
            channel_order="BGR" if caffe_input else "RGB", pixel_scale=255.0 if caffe_input else 1.0,
            erasing_fill=self.dataset_config["erasing_fill"])

    @property
    def metric_set(self):
        """What the test evaluation reports (``evaluation.metric_sets``), with ``eval_params.recall_at`` if set.

        A table's: all test rows against each other, or its queries against its gallery when it marks them.
        """
        if self.is_table:
            table = self.table
            gallery_size = int((table.is_test & table.is_gallery).sum())
            protocol = table_metric_set(gallery_size, table.has_query_gallery)
        else:
            protocol = metric_set(self.dataset_name)
        return protocol.with_recall_ks(self.config["eval_params"]["recall_at"])

    @property
    def validation_metric_set(self):
        return metric_set(VALIDATION_METRIC_SET).with_recall_ks(self.config["eval_params"]["recall_at"])

    @property
    def test_splits(self):
        """The splits the test evaluation embeds: queries and gallery, or the one test split."""
        return ("query", "gallery") if self.metric_set.query_gallery else ("test",)

    @property
    def distance(self):
        """The distance the evaluation ranks by: 'cosine' for queries against a gallery (In-Shop's), else
        'euclidean'."""
        return self.metric_set.distance

    @property
    def kmeans_backend(self):
        """The k-means back end of this run's NMI (``eval_params.kmeans`` resolved for its dataset)."""
        return resolve_kmeans_backend(self.config["eval_params"]["kmeans"], self.dataset_name)

    @property
    def embedding_output(self):
        """``eval_params.output_test_enc``: which backbone output the evaluation embeds."""
        return self.config["eval_params"]["output_test_enc"]

    def dataset(self, split, transform=None):
        """The Dataset of ``split`` ('train', 'val', 'test'; In-Shop and a table with queries 'query' / 'gallery')."""
        val_fraction, val_fold = self.validation_split
        return build_dataset(self.dataset_name, self.dataset_config["dataset_path"], split, self.num_classes,
                             transform=transform, val_fraction=val_fraction, val_fold=val_fold,
                             skip_broken_images=bool(self.dataset_config["skip_broken_images"]),
                             table=self.dataset_config["table"])

    def build_backbone(self, weights=None, weights_flag=None):
        """The backbone with ``trained_classes`` outputs, built for ``dataset.crop_size``.

        Weights: those the config names (trained weights, else ImageNet), or,
        with ``weights``, that file alone (``weights_flag`` names it in messages).
        """
        encoder_params = self.encoder_params
        if weights is not None:
            # The weights come from the file below; nothing is downloaded or loaded twice.
            encoder_params = {**copy.deepcopy(encoder_params), "pretrained_path": "no", "imagenet_pretrained": 0}
        backbone, embed_dim = build_backbone(encoder_params, self.trained_classes,
                                             crop_size=self.dataset_config["crop_size"])
        if weights is not None:
            load_weights(backbone, weights, weights_flag)
        return backbone, embed_dim

    def build_models(self, device):
        """Backbone and MPN with ``trained_classes`` outputs, weights loaded as the config says, on ``device``."""
        backbone, embed_dim = self.build_backbone()
        gnn_params = copy.deepcopy(self.config["models"]["gnn_params"])
        gnn_params["classifier"]["num_classes"] = self.trained_classes
        mpn = build_mpn(gnn_params, embed_dim)
        warn_if_embedding_is_large(self.encoder_params, embed_dim, (backbone, mpn))
        if gnn_params["pretrained_path"] != "no":
            load_weights(mpn, gnn_params["pretrained_path"], "--gnn_path / models.gnn_params.pretrained_path")
        memory_format = torch.channels_last if self.encoder_params["channels_last"] else None
        backbone = backbone.to(device, memory_format=memory_format) if memory_format else backbone.to(device)
        return backbone, mpn.to(device)


def warn_if_embedding_is_large(encoder_params, embed_dim, models):
    """A legitimate but costly choice (e.g. ``red: 1`` on ResNet-50) is said with its consequence."""
    if embed_dim <= LARGE_EMBEDDING_DIM:
        return
    backbone_bytes, mpn_bytes = (sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())
                                 for model in models)
    net_type = encoder_params["net_type"]
    key, paper_value = (("bn_inception.sz_embedding", 512) if net_type == "bn_inception" else ("red", 4))
    logger.warning("The embedding of %s is %d-d (the paper's is 512-d), so the MPN grows with its square: "
                   "last.pth will take about %.2f GB and the best weights %.2f GB (backbone) + %.2f GB (MPN); "
                   "for the paper's size set models.encoder_params.%s to %d.",
                   net_type, embed_dim, CHECKPOINT_COPIES_OF_PARAMETERS * (backbone_bytes + mpn_bytes) / 1e9,
                   backbone_bytes / 1e9, mpn_bytes / 1e9, key, paper_value)
