"""Pictures of the best and the last epoch, drawn once at the end from embeddings already computed.

The trainer's evaluations leave their embeddings with the evaluator; this
hook keeps a CPU copy of the best epoch's and the last epoch's, so the
pictures cost nothing per epoch (a resumed run may embed one again). Files:
``pictures/best_epoch/`` and ``pictures/last_epoch/``, each with
``retrieval_worst.png``, ``retrieval_random.png`` and ``embedding_map.png``
(a test run: ``pictures/``; a pseudo_test run also ``pictures/mpn_refined/``).
"""
import copy
import importlib.util
import io
import logging
import shutil

from inference.evaluation_pictures import draw_evaluation_pictures, evaluated_sets
from run_folder.layout import PICTURES_FOLDER
from run_folder.tensorboard_log import check_tensorboard
from utils.distributed import unwrap
from utils.errors import UserInputError
from utils.io import atomic_write

from engine.hooks.base import Hook

logger = logging.getLogger(__name__)


def check_logging_options(config):
    """Optional packages the ``logging`` section asks for are installed (checked before the run starts)."""
    options = config["logging"]
    if options["tensorboard"]:
        check_tensorboard()
    if options["pictures"] and options["embedding_map"] == "umap":
        if importlib.util.find_spec("umap") is None:
            raise UserInputError("logging.embedding_map: umap needs the umap-learn package, which is not "
                                 "installed; pip install umap-learn, or set logging.embedding_map to tsne.")


def write_pictures(folder, pictures, heading):
    """Each ``{name: PIL image}`` as a PNG in ``folder``; ``heading`` says what they show."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in pictures.items():
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        atomic_write(folder / name, buffer.getvalue())
    logger.info("Pictures of the %s: %s in %s", heading, ", ".join(pictures), folder)


def draw_test_pictures(config, run_dir, last, loaders, subfolder="", heading="test run"):
    """Test modes: the pictures of one evaluation in ``<run_dir>/pictures[/subfolder]``."""
    options = config["logging"]
    if options["pictures"]:
        pictures = draw_evaluation_pictures(evaluated_sets(last, loaders), heading, config["train_params"]["seed"],
                                            options["embedding_map"])
        write_pictures(run_dir / PICTURES_FOLDER / subfolder, pictures, heading)


class Pictures(Hook):
    """``(epoch, split, sets)`` of the last and the best epoch; the final test's replace the best's.

    Every process has this hook, and only the main process keeps ``sets`` and
    draws. A run resumed after its best or its last epoch did not evaluate
    that epoch in this process: it is embedded again at the end with the same
    weights (the same embeddings, so the same pictures), which under torchrun
    every process takes part in.
    """

    def __init__(self, run_dir, map_method, seed, best_weights, final_test, tensorboard=None, is_main=True):
        self.run_dir = run_dir
        self.map_method = map_method
        self.seed = seed
        self.best_weights = best_weights
        self.final_test = final_test
        self.tensorboard = tensorboard
        self.is_main = is_main
        self.best = self.last = None

    def before_train(self, trainer):
        """Resumed after its last epoch: embed it now, with the weights last.pth restored (the final test
        may replace them with the best epoch's)."""
        if trainer.history.rows and trainer.epoch >= trainer.options.num_epochs:
            self.last = self.embedded_again(trainer, trainer.epoch, trainer.backbone)

    def after_epoch(self, trainer, epoch, row):
        split = trainer.selection_split
        sets = evaluated_sets(trainer.evaluators[split].last, trainer.data.eval_loaders[split]) if self.is_main \
            else None
        self.last = (epoch, split, sets)
        if epoch >= 1 and self.best_weights.best.epoch == epoch:
            self.best = self.last

    def after_train(self, trainer):
        best_epoch = self.best_weights.best.epoch
        if self.final_test.tested is not None:
            epoch, last, loaders = self.final_test.tested
            self.best = (epoch, "test", evaluated_sets(last, loaders) if self.is_main else None)
        elif self.last is not None and self.last[0] == best_epoch:
            self.best = self.last
        elif best_epoch >= 1 and (self.best is None or self.best[0] != best_epoch):
            self.best = self.embedded_again(trainer, best_epoch, self.best_backbone(trainer))
        if self.last is None or not self.is_main:
            return
        last_folder = self.run_dir / PICTURES_FOLDER / "last_epoch"
        last_pictures = self.draw(*self.last, "last")
        write_pictures(last_folder, last_pictures, self.heading(*self.last, "last"))
        self.to_tensorboard("last_epoch", last_pictures, self.last[0])
        if self.best is self.last:
            shutil.copytree(last_folder, self.run_dir / PICTURES_FOLDER / "best_epoch", dirs_exist_ok=True)
            logger.info("The best epoch is the last: pictures/best_epoch holds the same pictures.")
            self.to_tensorboard("best_epoch", last_pictures, self.best[0])
        elif self.best is not None:
            best_pictures = self.draw(*self.best, "best")
            write_pictures(self.run_dir / PICTURES_FOLDER / "best_epoch", best_pictures,
                           self.heading(*self.best, "best"))
            self.to_tensorboard("best_epoch", best_pictures, self.best[0])

    def embedded_again(self, trainer, epoch, backbone):
        split = trainer.selection_split
        loaders = trainer.data.eval_loaders[split]
        last = trainer.evaluators[split].embed_test_set(backbone, **loaders)
        logger.info("Embedded the %s set again with the weights of epoch %d for its pictures (the run was resumed "
                    "after that epoch).", split, epoch)
        return epoch, split, evaluated_sets(last, loaders) if self.is_main else None

    def best_backbone(self, trainer):
        """A copy of the backbone with the best epoch's weights (the trainer's keeps its own)."""
        backbone = copy.deepcopy(unwrap(trainer.backbone))
        self.best_weights.reload(trainer, [(backbone, self.best_weights.best.backbone_file)])
        return backbone

    @staticmethod
    def heading(epoch, split, _sets, which):
        return f"{which} epoch {epoch}, {split} set"

    def draw(self, epoch, split, sets, which):
        return draw_evaluation_pictures(sets, self.heading(epoch, split, sets, which), self.seed, self.map_method)

    def to_tensorboard(self, prefix, pictures, step):
        if self.tensorboard is not None:
            for name, image in pictures.items():
                self.tensorboard.log.add_picture(f"{prefix}/{name.removesuffix('.png')}", image, step)
