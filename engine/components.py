"""A run's loaders and evaluators, from its ``RunRecipe`` (the datasets, transforms and models come from there)."""
import logging
from dataclasses import dataclass, field

import torch

from dataset import ClassBalancedSampler, build_eval_loader, build_train_loader, ensure_demo_dataset
from dataset.build import gallery_copies
from evaluation import Evaluator
from evaluation.refinement import RefinementOptions
from utils.errors import UserInputError

logger = logging.getLogger(__name__)


@dataclass
class Data:
    """The loaders of one run and the per-epoch reseeding they need."""

    batch_size: int
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


def build_data(recipe, mode, rank=0, world_size=1, pin_memory=False):
    """Datasets and loaders of ``recipe`` for ``mode`` ('train' or 'test'); errors name the bad key or path."""
    config = recipe.config
    dataset_cfg, train_params = config["dataset"], config["train_params"]
    eval_transform = recipe.input.evaluation()
    holds_out = recipe.holds_out_classes and mode == "train"
    eval_batch, workers = config["eval_params"]["batch_size"], dataset_cfg["nb_workers"]

    def eval_loader(split):
        split_set = recipe.dataset(split, eval_transform)
        # Several processes: each embeds its shard; the evaluator gathers them in index order.
        shard = None if world_size == 1 else torch.utils.data.DistributedSampler(
            split_set, num_replicas=world_size, rank=rank, shuffle=False)
        return build_eval_loader(split_set, eval_batch, workers, pin_memory=pin_memory, sampler=shard)

    if recipe.test_splits == ("query", "gallery"):
        query_loader, gallery_loader = eval_loader("query"), eval_loader("gallery")
        # A table may list an image as query and gallery item; it must never be its own neighbour.
        eval_loaders = {"test": {"query_loader": query_loader, "gallery_loader": gallery_loader,
                                 "query_in_gallery": gallery_copies(query_loader.dataset, gallery_loader.dataset)}}
    else:
        eval_loaders = {"test": {"loader": eval_loader("test")}}
    if holds_out:
        eval_loaders["val"] = {"loader": eval_loader("val")}
    if mode != "train":
        return Data(batch_size=0, eval_loaders=eval_loaders)

    train_set = recipe.dataset("train", recipe.input.training())
    if train_set.num_classes != recipe.trained_classes:
        raise UserInputError(f"The training split of {dataset_cfg['dataset_path']} has {train_set.num_classes} "
                             f"classes with images but the config trains heads for {recipe.trained_classes}; "
                             "set dataset.num_classes to the number of training classes.")
    num_classes_iter, num_elements_class = train_params["num_classes_iter"], train_params["num_elements_class"]
    seed = train_params["seed"]
    sampler = ClassBalancedSampler(
        train_set.labels, num_classes_iter, num_elements_class,
        batch_size_sampling=None if dataset_cfg["bssampling"] == "no" else dataset_cfg["bssampling"],
        seed=seed, rank=rank, world_size=world_size)
    batch_size = num_classes_iter * num_elements_class
    train_loader = build_train_loader(train_set, sampler, batch_size, workers, pin_memory=pin_memory, seed=seed)
    return Data(batch_size=batch_size, eval_loaders=eval_loaders, train_loader=train_loader, sampler=sampler,
                seed=seed, generator=train_loader.generator)


def build_evaluators(recipe, device, autocast_dtype=None, distributed=None, stop_request=None):
    """The test evaluator of the recipe's metric set, and the validation one when classes are held out.

    Under torchrun every rank embeds its shard; the shards are gathered and
    the metrics computed on rank 0, then shared, so all ranks agree. With a
    ``stop_request`` an evaluation stops within one batch of a signal (all
    ranks together).
    """
    config = recipe.config
    should_stop = None
    if stop_request is not None:
        should_stop = (lambda: distributed.any_rank(stop_request.is_set())) if distributed else stop_request.is_set
    options = dict(device=device, autocast_dtype=autocast_dtype, block_size=config["eval_params"]["block_size"],
                   nmi_seed=config["train_params"]["seed"],
                   gather=distributed.gather_embeddings if distributed else None,
                   share=distributed.share_from_main if distributed else None,
                   output_option=recipe.embedding_output,
                   extra_metrics=config["eval_params"]["metrics"],
                   kmeans_backend=recipe.kmeans_backend,
                   should_stop=should_stop)
    evaluators = {"test": Evaluator(recipe.metric_set, **options)}
    if recipe.holds_out_classes and config["mode"] not in ("test", "pseudo_test"):
        evaluators["val"] = Evaluator(recipe.validation_metric_set, **options)
    return evaluators


def build_refinement_options(config):
    """How ``pseudo_test`` builds and refines the test graphs (``eval_params``)."""
    eval_params = config["eval_params"]
    return RefinementOptions(k1=eval_params["k1"], graph_size=eval_params["graph_size"],
                             graphs_per_chunk=eval_params["graphs_per_chunk"],
                             output_option=eval_params["output_test_gnn"], concatenate=bool(eval_params["cat"]))
