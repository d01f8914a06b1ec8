"""The YAML schema, validated once, up front.

The schema is the authors' one (their config files load as they are,
misspelled keys ``temperatur`` and ``output_paht`` included) plus a few keys
of ours, each with a default that keeps the authors' behaviour. ``load_config``
returns a plain nested dict with every key present and every value checked;
nothing below ``train.py`` re-reads raw YAML or guesses defaults.
"""
import copy
import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from utils.errors import UserInputError

BACKBONES = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "densenet121", "densenet161", "densenet169", "densenet201", "bn_inception",
)
DATASETS = ("cub", "cars", "sop", "in_shop", "demo")
BACKBONE_LOSSES = ("lsce", "focalce", "ce")
MPN_LOSSES = ("lsgnn", "focalgnn", "gnn")
# eval_params.metrics: reported besides the paper's Recall@K and NMI (evaluation.metric_sets).
EXTRA_METRICS = ("map_at_r", "r_precision", "precision_at_1")
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
                "sz_embedding": Option(512, int, "BN-Inception embedding size with embed: 1.", minimum=1),
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
                                   nullable=True),
            "freeze_trunk": _flag(0, "Ours, timm: 1 freezes the trunk (eval mode, no gradients); only the "
                                  "embed Linear, neck, classifier and MPN train."),
        },
        "gnn_params": {
            "pretrained_path": Option("no", str, "Trained MPN weights to load (--gnn_path); 'no' for none."),
            "red": Option(1, int, "dim_red maps d -> d/red.", minimum=1),
            "cat": _flag(0, "1 concatenates the outputs of all layers."),
            "every": _flag(0, "1 gives every layer its own classifier and loss term."),
            "gnn": {
                "num_layers": Option(1, int, "Message passing layers.", minimum=1),
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
                "num_classes": Option(REQUIRED, int, "MPN classifier outputs; must equal dataset.num_classes.",
                                      minimum=1),
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
        "dataset_path": Option(REQUIRED, str, "Dataset root (holds images/ or, for In-Shop, Img/ and Eval/)."),
        "dataset_short": Option(REQUIRED, str, "Which dataset; selects splits and metrics.", choices=DATASETS),
        "num_classes": Option(REQUIRED, int, "Training classes; the next ones are the test classes.", minimum=2),
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
        "nb_workers": Option(4, int, "Data loader worker processes.", minimum=0),
        "crop_size": Option(227, int, "Ours. Crop size of the transforms.", minimum=8),
        "resize_size": Option(256, int, "Ours. Resize before the evaluation centre crop.", minimum=8),
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
        "seed": Option(0, int, "Ours. Seed of sampler, initialisation and augmentation (--seed)."),
        "threads": Option(None, int, "Ours. CPU threads of torch (--threads); null: OMP_NUM_THREADS if set, "
                          "else the free cores minus one per data-loader worker, at most 8.",
                          minimum=1, nullable=True),
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
        "metrics": Option([], list, "Ours. Extra metrics besides the paper's: any of map_at_r, "
                          "r_precision, precision_at_1 (pytorch-metric-learning's definitions)."),
        "kmeans": Option("paper", str, "k-means back end of NMI. paper: scikit-learn (n_init 10, the authors' "
                         "choice) for cub, cars and demo, auto for sop and in_shop (the authors reported no "
                         "NMI there); auto: faiss if installed, else sklearn.",
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


def load_config(path, overrides=None):
    """Read, merge command-line overrides into, and validate a YAML config.

    ``overrides`` maps dotted keys (``dataset.dataset_path``) to values;
    each replaces exactly its own key. Returns a complete, checked dict.
    """
    raw = read_yaml(path)
    for dotted_key, value in (overrides or {}).items():
        check_override(dotted_key, value)
        _set_dotted(raw, dotted_key, value)
    refuse_authors_pseudo_mode(raw, path)
    config = validate(raw, SCHEMA, prefix="", source=path)
    check_consistency(config, path)
    return config


class DuplicateKey(Exception):
    def __init__(self, key, first_line, second_line):
        super().__init__(key)
        self.key, self.first_line, self.second_line = key, first_line, second_line


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error.

    (Plain YAML keeps the last value silently: ``lr`` twice trains with the second.)
    """

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key; the base class reports it
                continue
            if first != key_node.start_mark.line + 1:
                raise DuplicateKey(key, first, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, UniqueKeyLoader.construct_mapping)


def safe_load_unique_keys(text):
    """``yaml.safe_load`` that also refuses a key set twice in one mapping."""
    loader = UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def refuse_authors_pseudo_mode(raw, source):
    """The authors' Cars file says ``mode: "pseudo"``, which in their code trains (only
    modes containing 'test' skip training); say so instead of guessing what was meant."""
    if raw.get("mode") == "pseudo":
        raise UserInputError(
            f"Key 'mode' in {source} is 'pseudo', which in the authors' code trains for "
            "train_params.num_epochs epochs and evaluates with the MPN after each; to evaluate the "
            "weights with the MPN write mode: pseudo_test (or mode: train to train).")


def read_yaml(path):
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"Config file {path} does not exist; pass an existing YAML file with "
                             "--config_path (see config/).")
    try:
        raw = safe_load_unique_keys(path.read_text())
    except DuplicateKey as error:
        raise UserInputError(f"Config file {path} sets '{error.key}' twice, at lines {error.first_line} and "
                             f"{error.second_line}; keep one of them.") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserInputError(f"Config file {path} is not valid YAML{where}; fix the syntax there.") from None
    if not isinstance(raw, dict):
        raise UserInputError(f"Config file {path} does not hold a mapping of sections; start from one of "
                             "the files in config/.")
    return raw


def check_override(dotted_key, value, source="the command line"):
    """A command-line override names one key of the schema and holds a valid value for it.

    Checked before merging, so that a typo gets the closest valid name and a
    bad value names the command line rather than the config file.
    """
    node, prefix = SCHEMA, ""
    for name in dotted_key.split("."):
        if not isinstance(node, dict) or name not in node:
            choices = list(node) if isinstance(node, dict) else []
            close = difflib.get_close_matches(name, choices, n=1)
            hint = f"did you mean '{prefix}{close[0]}'?" if close else \
                (f"allowed keys here: {', '.join(choices)}." if choices else
                 f"'{prefix.rstrip('.')}' has no keys below it.")
            raise UserInputError(f"Unknown key '{dotted_key}' on {source}; {hint}")
        node, prefix = node[name], f"{prefix}{name}."
    if isinstance(node, dict):
        raise UserInputError(f"Key '{dotted_key}' on {source} is a section; set one of its keys, e.g. "
                             f"'{dotted_key}.{next(iter(node))}'.")
    check_value(value, node, dotted_key, source)


def _set_dotted(raw, dotted_key, value):
    node = raw
    *parents, leaf = dotted_key.split(".")
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = value


def validate(raw, schema, prefix, source):
    """Check ``raw`` against ``schema``; returns a new dict with defaults filled."""
    if not isinstance(raw, dict):
        raise UserInputError(f"Key '{prefix.rstrip('.')}' in {source} must be a section (a mapping), "
                             f"got {raw!r}.")
    for key in raw:
        if key not in schema:
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f"did you mean '{prefix}{close[0]}'?" if close else \
                f"allowed keys here: {', '.join(schema)}."
            raise UserInputError(f"Unknown key '{prefix}{key}' in {source}; {hint}")
    checked = {}
    for key, spec in schema.items():
        name = prefix + key
        if isinstance(spec, dict):
            checked[key] = validate(raw.get(key, {}), spec, name + ".", source)
        elif key in raw:
            checked[key] = check_value(raw[key], spec, name, source)
        elif spec.default is REQUIRED:
            raise UserInputError(f"Key '{name}' is missing in {source}; add it ({spec.doc}).")
        else:
            checked[key] = copy.deepcopy(spec.default)
    return checked


def check_value(value, spec, name, source):
    """One value against its option: type, choices, finiteness and range."""
    if value is None and spec.nullable:
        return None
    written = value
    value = _coerce(value, spec.kind)
    if value is None:
        raise UserInputError(f"Key '{name}' in {source} must be of type {spec.kind.__name__}, got "
                             f"{written!r}; fix its value.")
    if spec.open_prefix and isinstance(value, str) and value.startswith(spec.open_prefix):
        if value == spec.open_prefix:
            raise UserInputError(f"Key '{name}' in {source} is {value!r} without a name after it; write "
                                 f"{spec.open_prefix}<name>.")
        return value
    if spec.choices and value not in spec.choices:
        allowed = ", ".join(str(choice) for choice in spec.choices)
        if spec.open_prefix:
            allowed += f" or {spec.open_prefix}<name>"
        raise UserInputError(f"Key '{name}' in {source} has the unknown value {value!r}; allowed: {allowed}.")
    if spec.kind is float and not math.isfinite(value):
        raise UserInputError(f"Key '{name}' in {source} is {written!r} but must be a finite number{_range(spec)}.")
    if spec.minimum is not None and value < spec.minimum:
        raise UserInputError(f"Key '{name}' in {source} is {written!r} but must be at least {spec.minimum}.")
    if spec.maximum is not None and value > spec.maximum:
        raise UserInputError(f"Key '{name}' in {source} is {written!r} but must be at most {spec.maximum}.")
    return value


def _range(spec):
    if spec.minimum is None and spec.maximum is None:
        return ""
    low = "" if spec.minimum is None else f" from {spec.minimum}"
    high = "" if spec.maximum is None else f" up to {spec.maximum}"
    return low + high


def _coerce(value, kind):
    """The value as ``kind`` when that is unambiguous, else None."""
    if kind is float:
        # PyYAML reads '1e-4' (no dot) as a string; accept any number.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return None
        return None
    if kind is int:
        if isinstance(value, bool):
            return int(value)
        return value if isinstance(value, int) else None
    if kind is str:
        # The authors write thresholds like `thresh: no` that YAML may read as a bool.
        if isinstance(value, bool):
            return "no" if value is False else None
        return value if isinstance(value, str) else None
    return value if isinstance(value, kind) else None


def check_consistency(config, source):
    """Rules that tie several keys together."""
    fns = config["train_params"]["loss_fn"]["fns"]
    terms = fns.split("_")
    unknown = [term for term in terms if term not in BACKBONE_LOSSES + MPN_LOSSES]
    if unknown:
        raise UserInputError(f"Key 'train_params.loss_fn.fns' in {source} has the unknown term "
                             f"'{unknown[0]}'; allowed terms: {', '.join(BACKBONE_LOSSES + MPN_LOSSES)} "
                             "joined by '_'.")
    if not any(term in BACKBONE_LOSSES + MPN_LOSSES for term in terms):
        raise UserInputError(f"Key 'train_params.loss_fn.fns' in {source} selects no loss term.")
    num_classes = config["dataset"]["num_classes"]
    mpn_classes = config["models"]["gnn_params"]["classifier"]["num_classes"]
    if mpn_classes != num_classes:
        raise UserInputError(f"Key 'models.gnn_params.classifier.num_classes' in {source} is {mpn_classes} "
                             f"but dataset.num_classes is {num_classes}; set both to the number of "
                             "training classes.")
    drops = config["train_params"]["lr_drop_epochs"]
    if not all(isinstance(epoch, int) and epoch >= FIRST_DROP_EPOCH for epoch in drops) or drops != sorted(drops):
        raise UserInputError(f"Key 'train_params.lr_drop_epochs' in {source} must be an increasing list "
                             f"of epoch numbers >= {FIRST_DROP_EPOCH} (a drop reloads the best weights, which "
                             f"exist from the end of epoch 1 on), got {drops!r}.")
    scale = config["dataset"]["crop_scale"]
    if not (len(scale) == 2 and all(isinstance(value, (int, float)) for value in scale)
            and 0 < scale[0] <= scale[1] <= 1):
        raise UserInputError(f"Key 'dataset.crop_scale' in {source} must be [min, max] with "
                             f"0 < min <= max <= 1, got {scale!r}.")
    crop_size, resize_size = config["dataset"]["crop_size"], config["dataset"]["resize_size"]
    if crop_size > resize_size:
        raise UserInputError(f"Key 'dataset.crop_size' in {source} is {crop_size}, larger than dataset.resize_size "
                             f"{resize_size}, so the evaluation centre crop would pad every test image with black; "
                             "make resize_size at least crop_size (the paper: 256 and 227).")
    fraction = config["dataset"]["val_fraction"]
    if config["dataset"]["val"] and not 0 < fraction < 1:
        raise UserInputError(f"Key 'dataset.val_fraction' in {source} must lie between 0 and 1 when "
                             f"dataset.val is 1, got {fraction}.")
    check_validation_protocol(config["dataset"], source)
    check_extra_metrics(config["eval_params"]["metrics"], source)
    check_timm_and_schedule_options(config, source)


def check_validation_protocol(dataset, source):
    """mlrc holds out one of 4 folds, so it needs val: 1 and a fold number below 4."""
    if dataset["val_protocol"] != "mlrc":
        return
    if not dataset["val"]:
        raise UserInputError(f"Key 'dataset.val_protocol' in {source} is 'mlrc' but dataset.val is 0; "
                             "set dataset.val to 1 to hold out a fold.")
    if dataset["val_fold"] >= MLRC_NUM_FOLDS:
        raise UserInputError(f"Key 'dataset.val_fold' in {source} is {dataset['val_fold']} but must be "
                             f"0 to {MLRC_NUM_FOLDS - 1}.")


def check_extra_metrics(metrics, source):
    unknown = [name for name in metrics if name not in EXTRA_METRICS]
    if unknown:
        raise UserInputError(f"Key 'eval_params.metrics' in {source} has the unknown metric {unknown[0]!r}; "
                             f"allowed: {', '.join(EXTRA_METRICS)}.")
    if len(set(metrics)) != len(metrics):
        raise UserInputError(f"Key 'eval_params.metrics' in {source} names a metric twice; list each once.")



def check_timm_and_schedule_options(config, source):
    """Keys that only work with a timm backbone, or only together with the lr schedule."""
    encoder, train_params = config["models"]["encoder_params"], config["train_params"]
    is_timm = encoder["net_type"].startswith(TIMM_PREFIX)
    defaults = SCHEMA["models"]["encoder_params"]
    for key in TIMM_ONLY_ENCODER_KEYS:
        if not is_timm and encoder[key] != defaults[key].default:
            raise UserInputError(f"Key 'models.encoder_params.{key}' in {source} is only available for "
                                 f"net_type: timm:<name>, not {encoder['net_type']}; remove it.")
    layer_decay = train_params["layer_decay"]
    if not 0 < layer_decay <= 1:
        raise UserInputError(f"Key 'train_params.layer_decay' in {source} must lie in (0, 1] (1: off), "
                             f"got {layer_decay}.")
    if layer_decay != 1 and not is_timm:
        raise UserInputError(f"Key 'train_params.layer_decay' in {source} needs a timm backbone (its blocks "
                             f"give the layers), not {encoder['net_type']}; set it to 1.")
    first_drop = (train_params["lr_drop_epochs"] or [None])[0]
    if first_drop is not None and train_params["warmup_epochs"] > first_drop - 1:
        raise UserInputError(f"Key 'train_params.warmup_epochs' in {source} is "
                             f"{train_params['warmup_epochs']} but the lr drops at epoch {first_drop}; the "
                             f"warm-up must end before it (at most {first_drop - 1}).")
    if train_params["grad_clip"] is not None and train_params["grad_clip"] <= 0:
        raise UserInputError(f"Key 'train_params.grad_clip' in {source} must be positive, or null for no "
                             f"clipping; got {train_params['grad_clip']}.")


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


def config_to_yaml(config):
    """The resolved config as YAML text (same schema, every key present)."""
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
