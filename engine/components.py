"""Config to objects: datasets, loaders, models and evaluators of one run.

Everything here receives the validated config of ``schema.options`` and hands
plain, checked values to the builders of ``dataset``, ``net`` and
``evaluation``; no other module reads the config to build things.
"""
import copy
import logging
from dataclasses import dataclass, field

import torch

from dataset import (ClassBalancedSampler, build_dataset, build_eval_loader, build_train_loader,
                     build_transform, ensure_demo_dataset)
from evaluation import Evaluator, resolve_kmeans_backend
from evaluation.refinement import RefinementOptions
from net import backbone_input_config, build_backbone, build_mpn, load_weights

logger = logging.getLogger(__name__)

# Held-out training classes are scored like CUB: Recall@1,2,4,8 and NMI.
VALIDATION_METRIC_SET = "cub"
# The paper's embeddings are 512-d; the MPN grows with the square of the size.
LARGE_EMBEDDING_DIM = 1024
# last.pth holds the weights and RAdam's two moment estimates of every parameter.
CHECKPOINT_COPIES_OF_PARAMETERS = 3


@dataclass
class Data:
    """The loaders of one run and the per-epoch reseeding they need."""

    batch_size: int
    num_train_classes: int
    eval_loaders: dict
    train_loader: torch.utils.data.DataLoader = None
    sampler: ClassBalancedSampler = None
    seed: int = 0
    generator: torch.Generator = field(default=None, repr=False)

    def set_epoch(self, epoch):
        """Batches and augmentations depend on (seed, epoch) only, so a resumed run repeats them."""
        self.sampler.set_epoch(epoch)
        if self.generator is not None:
            self.generator.manual_seed(self.seed * 100_003 + epoch)

    def skip_batches(self, count):
        """Resume mid-epoch: the sampler drops the first batches without loading their images."""
        self.sampler.skip_batches(count)


def ensure_dataset_present(config):
    """The demo dataset is built on first use; the others must be downloaded (README)."""
    if config["dataset"]["dataset_short"] == "demo":
        ensure_demo_dataset(config["dataset"]["dataset_path"])


def build_data(config, mode, rank=0, world_size=1, pin_memory=False):
    """Datasets and loaders for ``mode`` ('train' or 'test'); errors name the bad key or path."""
    dataset_cfg, train_params = config["dataset"], config["train_params"]
    net_type = config["models"]["encoder_params"]["net_type"]
    name, root = dataset_cfg["dataset_short"], dataset_cfg["dataset_path"]
    # timm models: mean, std and interpolation of their pretrained config; ours: the authors'.
    sizes = dict(crop_size=dataset_cfg["crop_size"], resize_size=dataset_cfg["resize_size"],
                 **backbone_input_config(net_type))
    eval_transform = build_transform(dataset_cfg["trans"], False, net_type, **sizes)
    holds_out = bool(dataset_cfg["val"]) and mode == "train"
    mlrc = dataset_cfg["val_protocol"] == "mlrc"
    val_fraction = dataset_cfg["val_fraction"] if holds_out and not mlrc else 0.0
    val_fold = dataset_cfg["val_fold"] if holds_out and mlrc else None
    common = dict(num_classes=dataset_cfg["num_classes"], val_fraction=val_fraction, val_fold=val_fold,
                  skip_broken_images=bool(dataset_cfg["skip_broken_images"]))
    eval_batch, workers = config["eval_params"]["batch_size"], dataset_cfg["nb_workers"]

    def eval_loader(split):
        split_set = build_dataset(name, root, split, transform=eval_transform, **common)
        # Several processes: each embeds its shard; the evaluator gathers them in index order.
        shard = None if world_size == 1 else torch.utils.data.DistributedSampler(
            split_set, num_replicas=world_size, rank=rank, shuffle=False)
        return build_eval_loader(split_set, eval_batch, workers, pin_memory=pin_memory, sampler=shard)

    if name == "in_shop":
        eval_loaders = {"test": {"query_loader": eval_loader("query"), "gallery_loader": eval_loader("gallery")}}
    else:
        eval_loaders = {"test": {"loader": eval_loader("test")}}
    if holds_out:
        eval_loaders["val"] = {"loader": eval_loader("val")}
    if mode != "train":
        return Data(batch_size=0, num_train_classes=dataset_cfg["num_classes"], eval_loaders=eval_loaders)

    train_transform = build_transform(dataset_cfg["trans"], True, net_type, crop_scale=dataset_cfg["crop_scale"],
                                      fill=dataset_cfg["erasing_fill"], **sizes)
    train_set = build_dataset(name, root, "train", transform=train_transform, **common)
    num_classes_iter, num_elements_class = train_params["num_classes_iter"], train_params["num_elements_class"]
    seed = train_params["seed"]
    sampler = ClassBalancedSampler(
        train_set.labels, num_classes_iter, num_elements_class,
        batch_size_sampling=None if dataset_cfg["bssampling"] == "no" else dataset_cfg["bssampling"],
        seed=seed, rank=rank, world_size=world_size)
    batch_size = num_classes_iter * num_elements_class
    train_loader = build_train_loader(train_set, sampler, batch_size, workers, pin_memory=pin_memory, seed=seed)
    return Data(batch_size=batch_size, num_train_classes=train_set.num_classes, eval_loaders=eval_loaders,
                train_loader=train_loader, sampler=sampler, seed=seed, generator=train_loader.generator)


def build_models(config, num_classes, device):
    """Backbone and MPN with ``num_classes`` outputs, weights loaded as the config says."""
    backbone, embed_dim = build_backbone(config["models"]["encoder_params"], num_classes,
                                         crop_size=config["dataset"]["crop_size"])
    gnn_params = copy.deepcopy(config["models"]["gnn_params"])
    gnn_params["classifier"]["num_classes"] = num_classes
    mpn = build_mpn(gnn_params, embed_dim)
    warn_if_embedding_is_large(config["models"]["encoder_params"], embed_dim, (backbone, mpn))
    if gnn_params["pretrained_path"] != "no":
        load_weights(mpn, gnn_params["pretrained_path"], "--gnn_path / models.gnn_params.pretrained_path")
    memory_format = torch.channels_last if config["models"]["encoder_params"]["channels_last"] else None
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


def build_evaluators(config, device, autocast_dtype=None, distributed=None, stop_request=None):
    """The test evaluator of the dataset's metric set, and the validation one when classes are held out.

    Under torchrun every rank embeds its shard; the shards are gathered and
    the metrics computed on rank 0, then shared, so all ranks agree. With a
    ``stop_request`` an evaluation stops within one batch of a signal (all
    ranks together).
    """
    should_stop = None
    if stop_request is not None:
        should_stop = (lambda: distributed.any_rank(stop_request.is_set())) if distributed else stop_request.is_set
    options = dict(device=device, autocast_dtype=autocast_dtype, block_size=config["eval_params"]["block_size"],
                   nmi_seed=config["train_params"]["seed"],
                   gather=distributed.gather_embeddings if distributed else None,
                   share=distributed.share_from_main if distributed else None,
                   output_option=config["eval_params"]["output_test_enc"],
                   extra_metrics=config["eval_params"]["metrics"],
                   kmeans_backend=resolve_kmeans_backend(config["eval_params"]["kmeans"],
                                                         config["dataset"]["dataset_short"]),
                   should_stop=should_stop)
    evaluators = {"test": Evaluator(config["dataset"]["dataset_short"], **options)}
    if config["dataset"]["val"] and config["mode"] not in ("test", "pseudo_test"):
        evaluators["val"] = Evaluator(VALIDATION_METRIC_SET, **options)
    return evaluators


def build_refinement_options(config):
    """How ``pseudo_test`` builds and refines the test graphs (``eval_params``)."""
    eval_params = config["eval_params"]
    return RefinementOptions(k1=eval_params["k1"], graph_size=eval_params["graph_size"],
                             graphs_per_chunk=eval_params["graphs_per_chunk"],
                             output_option=eval_params["output_test_gnn"], concatenate=bool(eval_params["cat"]))
