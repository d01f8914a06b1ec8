"""The best epoch's weights: written to their files when an epoch becomes the best, reloaded, replaced."""
import logging
from dataclasses import dataclass, field

from net.weights import load_weights
from run_folder.checkpoint import BEST_REPLACED_KEY, FORMAT_1_BEST_WEIGHTS
from run_folder.layout import CHECKPOINT_NAME
from utils.distributed import unwrap
from utils.errors import UserInputError
from utils.io import atomic_torch_save

from engine.hooks.base import Hook

logger = logging.getLogger(__name__)


@dataclass
class BestEpoch:
    """The best epoch so far and the names of its weights files in the run folder.

    Names, not paths, so a copied run folder still resumes.
    """

    score: float = -1.0
    epoch: int = 0
    metrics: dict = field(default_factory=dict)
    backbone_file: str = None
    mpn_file: str = None


class BestWeights(Hook):
    """Selects the best epoch by the selection split's R@1 and keeps its weights files.

    The files are written (atomically, in the authors' naming) as soon as an
    epoch becomes the best; those of the epoch it replaces are deleted only
    after last.pth stops naming them (``after_epoch``, after the checkpoint).
    The schedule and the final test read them back (``reload``).
    """

    def __init__(self, run_dir, file_names, is_main=True):
        self.run_dir = run_dir
        self.file_names = file_names  # score -> (backbone file name, MPN file name)
        self.is_main = is_main
        self.best = BestEpoch()
        self.replaced = None

    def after_evaluation(self, trainer, epoch, metrics):
        score = metrics[f"{trainer.selection_split}_R@1"]
        if epoch < 1 or score <= self.best.score:
            return
        backbone_file, mpn_file = self.file_names(score)
        if self.is_main:
            atomic_torch_save(_cpu_copy(unwrap(trainer.backbone).state_dict()), self.run_dir / backbone_file)
            atomic_torch_save(_cpu_copy(unwrap(trainer.mpn).state_dict()), self.run_dir / mpn_file)
        self.replaced, self.best = self.best, BestEpoch(score, epoch, dict(metrics), backbone_file, mpn_file)
        logger.info("Epoch %d: new best %s R@1 %.2f", epoch, trainer.selection_split, 100 * score)

    def after_epoch(self, trainer, epoch, row):
        """Delete the files of a former best epoch: this run wrote them and last.pth no longer names them."""
        self.delete_replaced()

    def before_train(self, trainer):
        """A kill between last.pth and the deletion left the replaced files; last.pth names them."""
        self.delete_replaced()

    def delete_replaced(self):
        replaced, self.replaced = self.replaced, None
        if replaced is None or not self.is_main:
            return
        current = (self.best.backbone_file, self.best.mpn_file)
        for name in (replaced.backbone_file, replaced.mpn_file):
            if name is not None and name not in current:
                (self.run_dir / name).unlink(missing_ok=True)

    def reload(self, trainer, modules_and_files):
        """Load each ``(module, file name)`` of the best epoch from the run folder."""
        if trainer.distributed is not None:
            trainer.distributed.barrier()  # rank 0 wrote the files; every rank reads them
        for module, name in modules_and_files:
            load_weights(unwrap(module), self.run_dir / name, "the best epoch's weights named in last.pth")

    def state_dict(self):
        # last.pth is written before the replaced files are deleted: it names them for a resume to finish.
        return {"best": vars(self.best), BEST_REPLACED_KEY: None if self.replaced is None else vars(self.replaced)}

    def load_state_dict(self, trainer, checkpoint):
        self.best = BestEpoch(**checkpoint["best"])
        replaced = checkpoint.get(BEST_REPLACED_KEY)
        self.replaced = None if replaced is None else BestEpoch(**replaced)
        if FORMAT_1_BEST_WEIGHTS in checkpoint:
            self.adopt_format_1_best_weights(checkpoint[FORMAT_1_BEST_WEIGHTS])
        self.check_files_present()

    def adopt_format_1_best_weights(self, weights):
        """A format-1 checkpoint held the best weights itself: give them their files, as format 2 does.

        A finished format-1 run already wrote these files; they are kept as they are.
        """
        self.best.backbone_file, self.best.mpn_file = self.file_names(self.best.score)
        if not self.is_main:
            return
        for name, state in ((self.best.backbone_file, weights["backbone"]), (self.best.mpn_file, weights["mpn"])):
            if not (self.run_dir / name).exists():
                atomic_torch_save(state, self.run_dir / name)

    def check_files_present(self):
        """A resumed run needs the best weights files its checkpoint names: say so before training."""
        if not self.is_main:
            return
        for name in (self.best.backbone_file, self.best.mpn_file):
            if name is not None and not (self.run_dir / name).is_file():
                raise UserInputError(
                    f"--resume {self.run_dir}: {CHECKPOINT_NAME} names the best weights file {name}, which is not "
                    f"in the run folder; copy it back beside {CHECKPOINT_NAME} (the lr drops and the final test "
                    "read it).")


def _cpu_copy(state):
    return {key: value.detach().to("cpu", copy=True) for key, value in state.items()}
