"""A resume continues exactly the recorded run.

At its creation a run records its resolved config twice: ``config.yaml``
for the reader and a hidden copy, ``.config_recorded.yaml``, to compare
with. ``--resume`` loads the run folder's ``config.yaml`` with the
command-line overrides applied; any key that then differs from the record
is refused in one sentence, except the keys in ``RESUME_SAFE_KEYS``, which
change neither the trained weights nor the metrics (the length of the run,
loader and evaluation batching, CPU threads, pictures and TensorBoard): those are applied and recorded.
"""
from pathlib import Path

import yaml

from run_folder.layout import CONFIG_NAME, RECORD_NAME
from schema import iter_options
from schema.loading import DuplicateKey, ExpandsTooFar, safe_load_unique_keys
from utils.errors import UserInputError
from utils.text_files import read_text

RESUME_SAFE_KEYS = (
    "train_params.num_epochs",
    "dataset.nb_workers",
    "eval_params.batch_size",
    "eval_params.block_size",
    "output_paht",
    "train_params.threads",
    "logging.pictures",
    "logging.embedding_map",
    "logging.tensorboard",
)


def flatten(config, prefix=""):
    """``{dotted key: value}`` of a nested config."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def recorded_config(run_dir):
    """The config the run was created with: its hidden record, else (older runs) its config.yaml."""
    run_dir = Path(run_dir)
    record = run_dir / RECORD_NAME
    source = record if record.is_file() else run_dir / CONFIG_NAME
    try:
        recorded = safe_load_unique_keys(read_text(source, "run record"))
    except (yaml.YAMLError, DuplicateKey, ExpandsTooFar):
        recorded = None
    if not isinstance(recorded, dict):
        raise UserInputError(f"The run record {source} is damaged (not a YAML mapping), so the resume cannot be "
                             f"checked against it; copy {CONFIG_NAME} of the run over it if that file is intact, "
                             "or start a new run.")
    return recorded


def differences(recorded, current):
    """``[(dotted key, recorded value, current value)]`` for every key whose value differs.

    A key the record lacks (added to the schema after the run was made) is
    no difference while it holds its default, which is what the run had.
    """
    before, after = flatten(recorded), flatten(current)
    defaults = {key: option.default for key, option in iter_options()}
    return [(key, before.get(key), after.get(key)) for key in sorted(set(before) | set(after))
            if before.get(key) != after.get(key)
            and not (key not in before and key in defaults and after.get(key) == defaults[key])]


def describe(changes):
    return ", ".join(f"{key} {old!r} -> {new!r}" for key, old, new in changes)
