"""Every config key: its default, type, choices and doc (the YAML schema).

The authors' keys (misspellings ``temperatur`` and ``output_paht``
included) plus a few of ours, each with a default that keeps the authors'
behaviour. ``docs/configuration.md`` is generated from ``SCHEMA``
(``python -m schema.reference``).
"""
from dataclasses import dataclass
from typing import Any

from utils.flags import MAX_SEED, MAX_THREADS

BACKBONES = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "densenet121", "densenet161", "densenet169", "densenet201", "bn_inception",
)
DATASETS = ("cub", "cars", "sop", "in_shop", "demo", "table")
# The dataset whose images, labels and splits come from dataset.table (dataset/table.py).
TABLE_DATASET = "table"
BACKBONE_LOSSES = ("lsce", "focalce", "ce")
MPN_LOSSES = ("lsgnn", "focalgnn", "gnn")
# eval_params.metrics: reported besides the paper's Recall@K and NMI (evaluation.metric_sets).
# Each extra metric's config name and its column name in metrics.csv (the one list of them).
EXTRA_METRIC_COLUMNS = {"map_at_r": "MAP@R", "r_precision": "RP", "precision_at_1": "P@1"}
EXTRA_METRICS = tuple(EXTRA_METRIC_COLUMNS)
VAL_PROTOCOLS = ("fraction", "mlrc")
# The reality-check paper splits the training classes into this many folds.
MLRC_NUM_FOLDS = 4
# ``net_type: timm:<model name>`` builds any timm model (net/backbones/timm_backbone.py).
TIMM_PREFIX = "timm:"
TIMM_ONLY_ENCODER_KEYS = ("pool", "sz_embedding", "freeze_trunk")


@dataclass(frozen=True)
class Option:
    """One config key: its default (``REQUIRED`` if none), type and doc."""

    default: Any
    kind: type
    doc: str
    choices: tuple = ()
    minimum: float = None
    nullable: bool = False
    open_prefix: str = None  # values starting with it are allowed besides ``choices``
    maximum: float = None


REQUIRED = object()
# The first epoch at whose start best weights exist to reload (epoch 1 makes the first best).
FIRST_DROP_EPOCH = 2
# Bounds of the keys that size memory or processes: far beyond any published setting (512-d embeddings,
# 1-2 MPN layers, 227 px crops, 4-8 loader workers), yet a typo such as 10000000 is one sentence at load
# instead of an allocation that exhausts the machine.
MAX_EMBEDDING_SIZE = 65536
MAX_MPN_LAYERS = 64
MAX_IMAGE_SIDE = 4096
MAX_LOADER_WORKERS = 256


def _flag(default, doc):
    return Option(default, int, doc, choices=(0, 1))


SCHEMA = {
    "mode": Option(REQUIRED, str, "train: train and evaluate after every epoch; test: load weights and "
                   "evaluate once; pseudo_test: as test, then again with the MPN refining each test item's "
                   "graph of k-reciprocal neighbours (both sets reported); hyper_search: random search "
                   "(see hyper_search).",
                   choices=("train", "test", "pseudo_test", "hyper_search")),
    "application": Option("DML", str, "Authors' key, only 'DML' is meaningful.", choices=("DML",)),
    "output_paht": Option(".", str, "Authors' spelling, kept on purpose: folder under which runs/ is "
                          "created unless --output_dir is given."),
    "label": Option(None, str, "Ours: a name for the run (--label), e.g. the ablation's arm; changes nothing "
                    "in the run, `python -m tools.results` shows it as a column.", nullable=True),
    "models": {
        "encoder_params": {
            "pretrained_path": Option("no", str, "Trained backbone weights to load (test mode, --bb_path); "
                                      "'no' for none."),
            "net_type": Option(REQUIRED, str, "Backbone: one of the names below, or timm:<model name> for any "
                               "timm model (e.g. timm:vit_small_patch16_224.dino).", choices=BACKBONES,
                               open_prefix=TIMM_PREFIX),
            "neck": _flag(0, "1 adds the BatchNorm1d bottleneck before a bias-free classifier (ResNet-34: "
                          "built but not applied, only the classifier loses its bias, as in the authors' "
                          "factory)."),
            "last_stride": _flag(0, "1 sets the stride of the last ResNet stage to 1 (ignored by ResNet-34, as "
                                 "in the authors' factory)."),
            "red": Option(4, int, "ResNet-50+: Linear 2048 -> 2048/red (512 for 4); DenseNet: >1 adds a "
                          "Linear to 512; ResNet-18/34 ignore it.", minimum=1),
            "bn_inception": {
                "embed": _flag(1, "BN-Inception: 1 adds the Linear 'embed' 1024 -> sz_embedding."),
                "sz_embedding": Option(512, int, "BN-Inception embedding size with embed: 1.", minimum=1,
                                       maximum=MAX_EMBEDDING_SIZE),
            },
            "imagenet_pretrained": _flag(1, "Ours. 1 starts the trunk from ImageNet weights, 0 from random "
                                         "initialisation (ignored when pretrained_path is set)."),
            "imagenet_weights": Option(None, str, "Ours. Local ImageNet weights file (or URL for "
                                       "bn_inception; a timm state dict for timm:<name>); null uses "
                                       "torchvision's weights API and cache (timm models: timm's pretrained "
                                       "weights from the hub cache or a download).", nullable=True),
            "checkpointing": _flag(0, "Ours. 1 uses gradient checkpointing of the ResNet stages "
                                   "(less memory, same numbers)."),
            "channels_last": _flag(0, "Ours. 1 uses the channels_last memory format (faster on GPU; 1.25x "
                                      "for ResNet-50 training on a 2-core AVX-512 CPU)."),
            "single_bn_update": _flag(0, "Ours. 1 updates the BatchNorm running statistics of ResNet layer1-4 "
                                      "once per training step; 0 twice with the same batch, as the authors' "
                                      "checkpointed ResNet did (DenseNet and BN-Inception: once either way)."),
            "pool": Option(None, str, "Ours, timm ViTs: pooling of the tokens (token: class token, avg: mean "
                           "of the patch tokens, gem: GeM p=3 of the patch tokens); null: the model's own.",
                           choices=("token", "avg", "gem"), nullable=True),
            "sz_embedding": Option(None, int, "Ours, timm: a Linear 'embed' from the model's width to this "
                                   "size; null: no Linear, the embedding is the model's width.", minimum=1,
                                   maximum=MAX_EMBEDDING_SIZE, nullable=True),
            "freeze_trunk": _flag(0, "Ours, timm: 1 freezes the trunk (eval mode, no gradients); only the "
                                  "embed Linear, neck, classifier and MPN train."),
        },
        "gnn_params": {
            "pretrained_path": Option("no", str, "Trained MPN weights to load (--gnn_path); 'no' for none."),
            "red": Option(1, int, "dim_red maps d -> d/red.", minimum=1),
            "cat": _flag(0, "1 concatenates the outputs of all layers."),
            "every": _flag(0, "1 gives every layer its own classifier and loss term."),
            "gnn": {
                "num_layers": Option(1, int, "Message passing layers.", minimum=1, maximum=MAX_MPN_LAYERS),
                "aggregator": Option("add", str, "How messages are combined.", choices=("add", "mean", "max")),
                "num_heads": Option(2, int, "Attention heads.", minimum=1),
                "attention": Option("dot", str, "Attention type (dot product).", choices=("dot",)),
                "mlp": _flag(1, "1 keeps the feed-forward block."),
                "dropout_mlp": Option(0.1, float, "Dropout inside the feed-forward block.", minimum=0, maximum=1),
                "norm1": _flag(1, "1 keeps the LayerNorm after attention."),
                "norm2": _flag(1, "1 keeps the LayerNorm after the feed-forward block."),
                "res1": _flag(1, "1 keeps the residual around attention."),
                "res2": _flag(1, "1 keeps the residual around the feed-forward block."),
                "dropout_1": Option(0.1, float, "Dropout on the attention output.", minimum=0, maximum=1),
                "dropout_2": Option(0.1, float, "Dropout on the feed-forward output.", minimum=0, maximum=1),
                "mult_attr": _flag(0, "1 multiplies attention weights by the correlation edge weights."),
            },
            "classifier": {
                "neck": _flag(1, "1: BatchNorm1d then a bias-free Linear; 0: Linear with bias."),
                "num_classes": Option(None, int, "MPN classifier outputs; must equal dataset.num_classes "
                                      "(required with it; a table run may leave both out).", minimum=1,
                                      nullable=True),
                "dropout_p": Option(0.4, float, "Authors' key, unused by their model.", minimum=0, maximum=1),
                "use_batchnorm": _flag(0, "Authors' key, unused by their model."),
            },
        },
    },
    "graph_params": {
        "sim_type": Option("correlation", str, "Edge weights: Pearson correlation.", choices=("correlation",)),
        "thresh": Option("no", str, "'no': fully connected graph (the paper's).", choices=("no",)),
        "set_negative": Option("hard", str, "Authors' key: negative correlations set to 0.", choices=("hard",)),
    },
    "dataset": {
        "dataset_path": Option(REQUIRED, str, "Dataset root (holds images/ or, for In-Shop, Img/ and Eval/; for "
                               "a table, the folder its paths are relative to)."),
        "dataset_short": Option(REQUIRED, str, "Which dataset; selects splits and metrics. table: your own "
                                "images, listed in dataset.table (docs/your_own_data.md).", choices=DATASETS),
        "table": Option(None, str, "Ours. With dataset_short: table, the CSV file of the images (relative to "
                        "dataset_path or absolute): columns path, label, split (train/test), optionally "
                        "is_query and is_gallery (0/1).", nullable=True),
        "num_classes": Option(None, int, "Training classes; the next ones are the test classes. Required, "
                              "except for a table, where null (or leaving it out) means the number of training "
                              "labels of the table, and a number given must be that.", minimum=2, nullable=True),
        "number_aug": Option(2, int, "Authors' key, unused."),
        "magnitude": Option(27, int, "Authors' key, unused."),
        "trans": Option("GL_orig_RE", str, "Transforms: GL_orig_RE (with random erasing) or GLorig.",
                        choices=("GL_orig_RE", "GLorig")),
        "sampling": Option("no", str, "Authors' key, only 'no'.", choices=("no",)),
        "bssampling": Option("no", str, "NumberSampler draws P (classes per batch) anew every epoch.",
                             choices=("no", "NumberSampler")),
        "val": _flag(0, "Authors' key, implemented by us: 1 holds out val_fraction of the training classes "
                     "to pick the best epoch; the test set is evaluated once at the end."),
        "val_fraction": Option(0.15, float, "Ours. Share of training classes held out with val: 1.",
                               minimum=0, maximum=1),
        "val_protocol": Option("fraction", str, "Ours. Which classes val: 1 holds out: 'fraction' (the "
                               "last val_fraction of them) or 'mlrc' (fold val_fold of 4 class-disjoint "
                               "folds, as in A Metric Learning Reality Check).", choices=VAL_PROTOCOLS),
        "val_fold": Option(0, int, "Ours. With val_protocol: mlrc, the held-out fold, 0 to 3.",
                           minimum=0),
        "nb_workers": Option(4, int, "Data loader worker processes.", minimum=0, maximum=MAX_LOADER_WORKERS),
        "crop_size": Option(227, int, "Ours. Crop size of the transforms.", minimum=8, maximum=MAX_IMAGE_SIDE),
        "resize_size": Option(256, int, "Ours. Resize before the evaluation centre crop.", minimum=8,
                              maximum=MAX_IMAGE_SIDE),
        "crop_scale": Option([0.08, 1.0], list, "Ours. Area share [min, max] of the training "
                             "RandomResizedCrop; the default is torchvision's, as the authors used."),
        "skip_broken_images": _flag(0, "Ours. 1 skips unreadable images (counted in the log) instead of "
                                    "stopping."),
        "erasing_fill": Option("authors", str, "Random erasing fill. authors: the constants (0.4914, 0.4822, "
                               "0.4465) written into the normalised input of every backbone, for BN-Inception "
                               "into BGR 0-255 minus the Caffe mean (almost the mean colour); colour (ours): "
                               "BN-Inception gets the pixel colour they stand for in the ResNet input.",
                               choices=("authors", "colour")),
    },
    "train_params": {
        "num_classes_iter": Option(6, int, "P: classes per batch.", minimum=1),
        "num_elements_class": Option(9, int, "K: images per class in a batch.", minimum=1),
        "lr": Option(REQUIRED, float, "RAdam learning rate.", minimum=0, maximum=1),
        "weight_decay": Option(0.0, float, "Decoupled weight decay.", minimum=0, maximum=1),
        "num_epochs": Option(70, int, "Epochs.", minimum=1),
        "is_apex": Option("authors", object, "authors: what the authors' code ran whatever their YAML said, "
                          "mixed precision on CUDA (Apex amp O1 if installed, else float16 autocast with a "
                          "dynamic gradient scaler) and float32 on the CPU; the run's config.yaml records the "
                          "0 or 1 it resolved to. 1: mixed precision (bfloat16 autocast on an explicit "
                          "--device cpu). 0: float32.", choices=("authors", 0, 1)),
        "temperatur": Option(1.0, float, "Authors' spelling, kept on purpose: logits are divided by it.",
                             minimum=1e-8, maximum=1e4),
        "output_train_enc": Option("plain", str, "Backbone output fed to the MPN.",
                                   choices=("plain", "norm", "neck")),
        "output_train_gnn": Option("plain", str, "MPN output option.", choices=("plain", "norm", "neck")),
        "loss_fn": {
            "fns": Option(REQUIRED, str, "Loss terms joined by '_': lsce|ce|focalce for the backbone, "
                          "lsgnn|gnn|focalgnn for the MPN."),
            "scaling_ce": Option(1.0, float, "Weight of the backbone term.", minimum=0, maximum=1e4),
            "scaling_gnn": Option(1.0, float, "Weight of the MPN term.", minimum=0, maximum=1e4),
            "scaling_distance": Option(0.01, float, "Authors' key, unused."),
            "scaling_center": Option(0.5, float, "Authors' key, unused."),
            "scaling_triplet": Option(1.0, float, "Authors' key, unused."),
            "scaling_of": Option(1.0, float, "Authors' key, unused."),
            "scaling_of_pre": Option(1.0, float, "Authors' key, unused."),
            "scaling_distill": Option(1.0, float, "Authors' key, unused."),
            "soft_temp": Option(1.0, float, "Authors' key, unused."),
            "feats": Option("no", str, "Authors' key, unused."),
            "preds": Option("no", str, "Authors' key, unused."),
        },
        "lr_drop_epochs": Option([31, 51], list, "Ours. At the start of each of these epochs the best "
                                 "weights are reloaded; the lr becomes lr/10 at the first one."),
        "max_iters_per_epoch": Option(None, int, "Ours. Stop an epoch after this many steps (smoke runs).",
                                      minimum=1, nullable=True),
        "eval_before_training": _flag(0, "Ours. 1 evaluates once before the first epoch (epoch 0)."),
        "seed": Option(0, int, "Ours. Seed of sampler, initialisation and augmentation (--seed).", minimum=0,
                       maximum=MAX_SEED),
        "threads": Option(None, int, "Ours. CPU threads of torch (--threads); null: OMP_NUM_THREADS if set, "
                          "else the free cores minus one per data-loader worker, at most 8.",
                          minimum=1, maximum=MAX_THREADS, nullable=True),
        "graph_scope": Option("local", str, "Ours, multi-GPU: 'local' builds the graph per GPU batch (the "
                              "paper's), 'global' over the batches of all GPUs.", choices=("local", "global")),
        "sync_bn": _flag(0, "Ours, multi-GPU: 1 converts BatchNorm to SyncBatchNorm."),
        "backbone_lr_scale": Option(1.0, float, "Ours. The backbone trunk's lr is lr times this; its head "
                                    "(red/embed, neck, classifier) and the MPN keep lr.", minimum=0),
        "layer_decay": Option(1.0, float, "Ours, timm: layer-wise lr decay (timm's param_groups_layer_decay "
                              "rule): the last trunk layer keeps the trunk lr, each layer below it gets "
                              "layer_decay times the lr of the one above (ViT: blocks, then the stem); 1: off.",
                              minimum=0),
        "warmup_epochs": Option(0.0, float, "Ours. Linear lr warm-up over this many epochs, updated every "
                                "step from lr/steps to lr; 0: off.", minimum=0),
        "grad_clip": Option(None, float, "Ours. Clip the gradient norm of all trained parameters to this "
                            "(after unscaling mixed-precision gradients); null: off.", minimum=0,
                            nullable=True),
    },
    "eval_params": {
        "cat": _flag(0, "pseudo_test: 1 concatenates the MPN's output features (one per classifier, "
                     "so per layer with every: 1) into the refined embedding; 0 takes the last."),
        "output_test_enc": Option("plain", str, "Backbone output used as the embedding.",
                                  choices=("plain", "norm", "neck")),
        "output_test_gnn": Option("plain", str, "pseudo_test: MPN output option of the refined embedding.",
                                  choices=("plain", "norm", "neck")),
        "batch_size": Option(64, int, "Ours. Images per batch when extracting embeddings.", minimum=1),
        "block_size": Option(512, int, "Ours. Queries per block in Recall@K (bounds memory).", minimum=1),
        "recall_at": Option(None, list, "Ours. The K of Recall@K, increasing whole numbers; null: the dataset's "
                            "own (1, 2, 4, 8 for cub, cars and demo; 1, 10, 100, 1000 for sop; 1, 10, 20, 30, 40 "
                            "for in_shop; for a table 1, 2, 4, 8, or 1, 10, 100, 1000 from a gallery of "
                            "10,000 images on). Also the K of the held-out classes with dataset.val: 1.",
                            nullable=True),
        "metrics": Option([], list, "Ours. Extra metrics besides the paper's: any of map_at_r, "
                          "r_precision, precision_at_1 (pytorch-metric-learning's definitions)."),
        "kmeans": Option("paper", str, "k-means back end of NMI. paper: scikit-learn (n_init 10, the authors' "
                         "choice) for cub, cars and demo, auto for sop and in_shop (the authors reported no "
                         "NMI there) and for a table; auto: faiss if installed, else sklearn.",
                         choices=("paper", "sklearn", "faiss", "auto")),
        "k1": Option(30, int, "pseudo_test: k of the k-reciprocal neighbours (the authors' 30); the "
                     "expansion uses k1/2.", minimum=1),
        "graph_size": Option(None, int, "pseudo_test: items per test graph, the query included; null is "
                             "the authors' hard-coded 7 (4 for In-Shop).", minimum=2, nullable=True),
        "graphs_per_chunk": Option(1024, int, "Ours. pseudo_test: graphs refined per MPN call (bounds "
                                   "memory).", minimum=1),
    },
    "logging": {
        "pictures": _flag(1, "Ours. After training (best and last epoch) or a test run, draw "
                             "retrieval_worst.png, retrieval_random.png and embedding_map.png of the "
                             "evaluated set under pictures/."),
        "embedding_map": Option("tsne", str, "Ours. 2-D map of embedding_map.png: scikit-learn t-SNE, or "
                                "UMAP (needs umap-learn).", choices=("tsne", "umap")),
        "tensorboard": _flag(0, "Ours. Also log the metrics.csv columns and the pictures to "
                                "<run>/tensorboard (needs tensorboard)."),
    },
    "hyper_search": {
        "num_trials": Option(30, int, "Ours. Random-search trials (the authors ran 30).", minimum=1),
        "num_epochs": Option(40, int, "Epochs per trial (the authors' 40).", minimum=1),
    },
}


def backbone_loss_term(fns):
    """The backbone term selected by ``loss_fn.fns`` (authors' precedence), or None."""
    terms = fns.split("_")
    return next((term for term in BACKBONE_LOSSES if term in terms), None)


def mpn_loss_term(fns):
    """The MPN term selected by ``loss_fn.fns`` (authors' precedence), or None."""
    terms = fns.split("_")
    return next((term for term in MPN_LOSSES if term in terms), None)


def iter_options(schema=SCHEMA, prefix=""):
    """Yield ``(dotted_key, Option)`` for every leaf, in schema order (for the README)."""
    for key, spec in schema.items():
        if isinstance(spec, dict):
            yield from iter_options(spec, prefix + key + ".")
        else:
            yield prefix + key, spec
