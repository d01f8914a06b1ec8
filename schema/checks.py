"""Checks of a config against the schema: each value, then the rules that tie keys together."""
import copy
import difflib
import math

from schema.options import (BACKBONE_LOSSES, EXTRA_METRICS, FIRST_DROP_EPOCH, MLRC_NUM_FOLDS, MPN_LOSSES, REQUIRED,
                            SCHEMA, TABLE_DATASET, TIMM_ONLY_ENCODER_KEYS, TIMM_PREFIX)
from utils.errors import UserInputError


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
    check_dataset_source(config, source)
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
    check_recall_at(config["eval_params"]["recall_at"], source)
    check_timm_and_schedule_options(config, source)


def check_dataset_source(config, source):
    """A table names its CSV file and may leave the class count to it; the other datasets need the count."""
    dataset = config["dataset"]
    is_table = dataset["dataset_short"] == TABLE_DATASET
    if is_table and not dataset["table"]:
        raise UserInputError(f"Key 'dataset.table' is missing in {source} but dataset.dataset_short is table; set "
                             "it to the CSV file of your images (python -m dataset.prepare table writes one).")
    if not is_table and dataset["table"] is not None:
        raise UserInputError(f"Key 'dataset.table' in {source} is only read with dataset.dataset_short: table, not "
                             f"{dataset['dataset_short']}; remove it or set dataset_short to table.")
    num_classes = dataset["num_classes"]
    if num_classes is None and not is_table:
        raise UserInputError(f"Key 'dataset.num_classes' is missing in {source}; add it "
                             f"({SCHEMA['dataset']['num_classes'].doc}).")
    mpn_classes = config["models"]["gnn_params"]["classifier"]["num_classes"]
    if mpn_classes != num_classes:
        raise UserInputError(f"Key 'models.gnn_params.classifier.num_classes' in {source} is {mpn_classes} "
                             f"but dataset.num_classes is {num_classes}; set both to the number of "
                             "training classes (a table run may leave both out).")


def check_recall_at(recall_at, source):
    if recall_at is None:
        return
    whole = all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in recall_at)
    if not recall_at or not whole or recall_at != sorted(set(recall_at)):
        raise UserInputError(f"Key 'eval_params.recall_at' in {source} must be an increasing list of whole "
                             f"numbers of at least 1 (e.g. [1, 2, 4, 8]), or null for the dataset's own, got "
                             f"{recall_at!r}.")


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
