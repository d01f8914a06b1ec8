"""A resume continues the recorded run: exactly, or, when the user says so, with other numbers.

At its creation a run records its resolved config twice: ``config.yaml``
for the reader and a hidden copy, ``.config_recorded.yaml``, to compare
with. ``--resume`` loads the run folder's ``config.yaml`` with the
command-line overrides applied and compares it with the record:

- ``KEYS_KEEPING_NUMBERS`` (the length of the run, the loader workers,
  where runs go, the run's label, pictures and TensorBoard) change neither the weights nor
  the metrics: they are applied and recorded;
- ``KEYS_CHANGING_NUMBERS`` (the evaluation's batching, which rounds the
  embeddings and distances differently) and a different environment (device,
  CPU threads, processes, library versions, k-means back end, compared with
  the run's last ``environment*.json``) change the numbers from the step at
  which the run continues: allowed only with ``ALLOW_FLAG``, and then
  recorded in the log, in ``config.yaml`` and in ``summary.json``
  (``"resumed_exactly": false`` and where the run starts to differ);
- any other key is refused.

A run whose epochs are all done and whose summary.json is written is
finished: resuming it says so and changes nothing.
"""
from dataclasses import dataclass
from pathlib import Path

import yaml

from run_folder.checkpoint import load_checkpoint
from run_folder.layout import CONFIG_NAME, ENVIRONMENT_NAME, RECORD_NAME, SUMMARY_NAME, read_summary
from schema import iter_options
from schema.loading import DuplicateKey, ExpandsTooFar, safe_load_unique_keys
from utils.errors import UserInputError
from utils.text_files import read_json_object, read_text

ALLOW_FLAG = "--allow_different_numbers"
KEYS_KEEPING_NUMBERS = (
    "train_params.num_epochs",
    "dataset.nb_workers",
    "output_paht",
    "label",
    "train_params.threads",  # the thread count itself is compared in the environment (the automatic choice too)
    "logging.pictures",
    "logging.embedding_map",
    "logging.tensorboard",
)
KEYS_CHANGING_NUMBERS = (
    "eval_params.batch_size",
    "eval_params.block_size",
)
# Fields of environment.json that change the numbers a run produces when they change.
ENVIRONMENT_CHANGING_NUMBERS = ("device", "device_name", "processes", "cpu_threads", "torch", "torchvision",
                                "numpy", "scikit-learn", "faiss", "cuda", "cudnn", "nmi_backend")
# Key of last.pth: one record per resume, {"epoch", "step", "exact", "changes"}.
RESUMES_KEY = "resumes"


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


def last_environment(run_dir):
    """The newest ``environment*.json`` of the run (that of its last resume), or None."""
    run_dir = Path(run_dir)
    resumes = sorted(run_dir.glob("environment_resume*.json"),
                     key=lambda path: int(path.stem.removeprefix("environment_resume") or 0))
    path = resumes[-1] if resumes else run_dir / ENVIRONMENT_NAME
    try:
        return read_json_object(path, "environment record")
    except UserInputError:
        return None


def environment_differences(recorded, current):
    """``[(field, recorded, current)]`` of the fields that change numbers; none without a record."""
    if not isinstance(recorded, dict):
        return []
    return [(name, recorded[name], current.get(name)) for name in ENVIRONMENT_CHANGING_NUMBERS
            if name in recorded and recorded[name] != current.get(name)]


def is_finished(run_dir, state, num_epochs):
    """Every epoch trained and the summary written (a run stopped in its final test is not finished)."""
    if state["epoch"] < num_epochs or state.get("resume_step", 0):
        return False
    try:  # a damaged summary is written again by the resume, which goes through the run's end once more
        return read_summary(run_dir).get("status") != "failed"
    except UserInputError:
        return False


@dataclass
class Resume:
    """A run to continue: its checkpoint, the config changes and, once checked, the environment's.

    ``state`` (the loaded last.pth) is handed to the trainer once by
    ``take_state``, so that its tensors are not held twice during training.
    """

    path: Path
    state: dict
    changes: list
    finished: bool = False
    environment_changes: tuple = ()

    def __post_init__(self):
        self.completed_epochs = self.state["epoch"]
        self.steps_done = self.state.get("resume_step", 0)
        self.previous_records = list(self.state.get(RESUMES_KEY, []))

    @property
    def run_dir(self):
        return self.path.parent

    @property
    def epoch(self):
        """The epoch the resume continues in."""
        return self.completed_epochs + 1

    @property
    def step(self):
        """The step (1-based) the resume continues at within ``epoch``."""
        return self.steps_done + 1

    @property
    def changes_numbers(self):
        return [change for change in self.changes if change[0] in KEYS_CHANGING_NUMBERS] + list(
            self.environment_changes)

    @property
    def exact(self):
        return not self.changes_numbers

    def take_state(self):
        state, self.state = self.state, None
        return state

    def check_environment(self, environment, allowed):
        """Refuse (one sentence) a resume whose changes alter the numbers, unless ``allowed``."""
        self.environment_changes = tuple(environment_differences(last_environment(self.run_dir), environment))
        if self.changes_numbers and not allowed:
            raise UserInputError(
                f"--resume {self.run_dir}: {describe(self.changes_numbers)} differ(s) from the run's record, "
                f"and that changes the numbers from epoch {self.epoch}, step {self.step} on; resume where the "
                f"run was made (same device, threads and libraries), or add {ALLOW_FLAG} to continue anyway "
                "(the run then records that it was not resumed exactly).")

    def finished_message(self):
        return (f"{self.run_dir} is finished (all {self.completed_epochs} epochs trained, {SUMMARY_NAME} "
                "written); nothing was changed. To train it longer, resume with "
                "--set train_params.num_epochs=N (N larger).")

    def record(self):
        """This resume as kept in last.pth (``RESUMES_KEY``) and summarised in summary.json."""
        return {"epoch": self.epoch, "step": self.step, "exact": self.exact,
                "changes": describe(self.changes_numbers if not self.exact else self.changes)}

    def all_records(self):
        """The resumes before this one (from the checkpoint), then this one."""
        return [*self.previous_records, self.record()]


def inexact_resume_note(records):
    """Comment lines for config.yaml naming each resume that changed the numbers ('' when none did)."""
    return "".join(f"# Resumed with {ALLOW_FLAG} at epoch {record['epoch']}, step {record['step']}: "
                   f"{record['changes']}; from there the numbers differ from an uninterrupted run.\n"
                   for record in records if not record["exact"])


def resume_summary(records):
    """summary.json's resume entries: ``resumed_exactly`` and, when not, where the run first differs."""
    if not records:
        return {}
    inexact = [record for record in records if not record["exact"]]
    if not inexact:
        return {"resumed_exactly": True}
    first = inexact[0]
    return {"resumed_exactly": False,
            "differs_from": {"epoch": first["epoch"], "step": first["step"], "changes": first["changes"]}}


def plan_resume(resume_path, config):
    """The ``Resume`` of ``resume_path`` under ``config``; refuses changes that no resume may make.

    A finished run comes back marked as such (nothing will change), once
    its config passed this check.
    """
    changes = differences(recorded_config(resume_path.parent), config)
    refused = [change for change in changes if change[0] not in (*KEYS_KEEPING_NUMBERS, *KEYS_CHANGING_NUMBERS)]
    if refused:
        raise UserInputError(f"--resume {resume_path.parent} continues the recorded run, but {describe(refused)} "
                             f"differ(s) from its record (from its {CONFIG_NAME} or the command line); undo "
                             "that, or start a new run with it.")
    state = load_checkpoint(resume_path)
    finished = is_finished(resume_path.parent, state, config["train_params"]["num_epochs"])
    return Resume(resume_path, state, changes, finished=finished)
