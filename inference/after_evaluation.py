"""What a run draws from its evaluations: pictures of the best and the last epoch, and TensorBoard.

The trainer reports every evaluation (``epoch_done``); the pictures are
drawn once, at the end (``finish``), from embeddings already computed: a
CPU copy of the best epoch's, and the last epoch's as the evaluator left
them. So the pictures cost nothing per epoch. Only the main process makes
one of these (rank 0 under torchrun).

Files: ``pictures/best_epoch/`` and ``pictures/last_epoch/``, each with
``retrieval_worst.png``, ``retrieval_random.png`` and ``embedding_map.png``
(a test run: ``pictures/``).
"""
import importlib.util
import io
import logging
import shutil
from pathlib import Path

from inference.evaluation_pictures import draw_evaluation_pictures, evaluated_sets
from utils.errors import UserInputError
from utils.io import atomic_write
from run_folder.tensorboard_log import TensorBoardLog, check_tensorboard

logger = logging.getLogger(__name__)

PICTURES_FOLDER = "pictures"


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


class AfterEvaluation:
    def __init__(self, run_dir, options, seed):
        self.run_dir = Path(run_dir)
        self.pictures = bool(options["pictures"])
        self.map_method = options["embedding_map"]
        self.seed = seed
        self.tensorboard = TensorBoardLog(self.run_dir) if options["tensorboard"] else None
        self.best = self.last = None

    @classmethod
    def from_config(cls, config, run_dir):
        """None when the config asks for neither pictures nor TensorBoard."""
        options = config["logging"]
        if not options["pictures"] and not options["tensorboard"]:
            return None
        return cls(run_dir, options, config["train_params"]["seed"])

    def epoch_done(self, epoch, split, row, last, loaders, is_best):
        """After the evaluation of ``epoch`` on ``split``: its metrics.csv ``row``, the evaluator's ``last``."""
        if self.tensorboard is not None:
            self.tensorboard.add_row(row)
        if self.pictures:
            sets = evaluated_sets(last, loaders)
            self.last = (epoch, split, sets)
            if is_best:
                self.best = self.last

    def best_weights_tested(self, epoch, last, loaders):
        """The best epoch's weights were evaluated on the test set: draw those for the best epoch."""
        if self.pictures:
            self.best = (epoch, "test", evaluated_sets(last, loaders))

    def finish(self, best_epoch):
        """Draw and write the pictures of the best and the last epoch; close TensorBoard."""
        if self.pictures and self.last is not None:
            last_folder = self.run_dir / PICTURES_FOLDER / "last_epoch"
            last_pictures = self._draw(*self.last, "last")
            write_pictures(last_folder, last_pictures, self._heading(*self.last, "last"))
            self._to_tensorboard("last_epoch", last_pictures, self.last[0])
            if self.best is self.last:
                shutil.copytree(last_folder, self.run_dir / PICTURES_FOLDER / "best_epoch", dirs_exist_ok=True)
                logger.info("The best epoch is the last: pictures/best_epoch holds the same pictures.")
                self._to_tensorboard("best_epoch", last_pictures, self.best[0])
            elif self.best is not None and self.best[0] == best_epoch:
                best_pictures = self._draw(*self.best, "best")
                write_pictures(self.run_dir / PICTURES_FOLDER / "best_epoch", best_pictures,
                               self._heading(*self.best, "best"))
                self._to_tensorboard("best_epoch", best_pictures, self.best[0])
            elif best_epoch:
                logger.info("No pictures of the best epoch %d: its embeddings were not kept (the run was "
                            "resumed after it).", best_epoch)
        if self.tensorboard is not None:
            self.tensorboard.close()

    @staticmethod
    def _heading(epoch, split, _sets, which):
        return f"{which} epoch {epoch}, {split} set"

    def _draw(self, epoch, split, sets, which):
        return draw_evaluation_pictures(sets, self._heading(epoch, split, sets, which), self.seed, self.map_method)

    def _to_tensorboard(self, prefix, pictures, step):
        if self.tensorboard is not None:
            for name, image in pictures.items():
                self.tensorboard.add_picture(f"{prefix}/{name.removesuffix('.png')}", image, step)


def draw_test_pictures(config, run_dir, last, loaders):
    """Test mode: the pictures of its one evaluation in ``<run_dir>/pictures``."""
    options = config["logging"]
    if options["pictures"]:
        pictures = draw_evaluation_pictures(evaluated_sets(last, loaders), "test run", config["train_params"]["seed"],
                                            options["embedding_map"])
        write_pictures(Path(run_dir) / PICTURES_FOLDER, pictures, "test run")
