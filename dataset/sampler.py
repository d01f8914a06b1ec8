"""Class-balanced sampling of SPEC 3: batches of P classes x K images.

P = ``num_classes_iter``, K = ``num_elements_class``. A *chunk* is K indices
of one class; a batch is P consecutive chunks of the epoch's chunk order.
"""
import numpy as np
import torch.utils.data

from utils.errors import UserInputError

BATCH_SIZE_SAMPLINGS = (None, "no", "NumberSampler")
# Keeps the augmentation seeds' random stream apart from the batch order's.
AUGMENTATION_STREAM = 1


def allowed_num_classes_iter(batch_size):
    """NumberSampler's choices for P: the divisors of P*K between 2 and P*K/2."""
    return [divisor for divisor in range(2, batch_size // 2 + 1) if batch_size % divisor == 0]


def class_chunks(rng, class_indices, num_elements_class):
    """Steps 1-2 for one class: shuffle, pad, cut into chunks of K (rows)."""
    k = num_elements_class
    shuffled = rng.permutation(class_indices)
    if len(shuffled) < k:
        shuffled = np.concatenate([shuffled, rng.choice(shuffled, k - len(shuffled))])
    # Quirk: pad up to the next multiple of K *above* the size, with distinct
    # draws from the class, so a class whose size is a multiple of K gets K more.
    extra = (len(shuffled) // k + 1) * k - len(shuffled)
    padded = np.concatenate([shuffled, rng.choice(shuffled, extra, replace=False)])
    return padded.reshape(-1, k)


def epoch_chunks(rng, indices_per_class, num_classes_iter, num_elements_class):
    """Step 3: all chunks shuffled, topped up to a multiple of P with existing chunks."""
    chunks = np.concatenate([class_chunks(rng, indices, num_elements_class)
                             for indices in indices_per_class])
    chunks = chunks[rng.permutation(len(chunks))]
    missing = -len(chunks) % num_classes_iter
    # Distinct repeats as in the authors' code; with replacement only when
    # NumberSampler draws a P larger than the number of chunks allows.
    repeats = rng.choice(len(chunks), missing, replace=missing > len(chunks))
    return np.concatenate([chunks, chunks[repeats]])


class ClassBalancedSampler(torch.utils.data.Sampler):
    """Yields flat dataset indices; the loader cuts them into batches of P*K.

    Each epoch's order is a function of (seed, epoch) only: call
    ``set_epoch`` before iterating, as with ``DistributedSampler``. With
    ``world_size`` > 1 every rank computes the same chunk order and takes the
    batches rank, rank + world_size, ..., the same number on every rank.
    """

    def __init__(self, labels, num_classes_iter, num_elements_class, batch_size_sampling=None,
                 seed=0, rank=0, world_size=1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size = {world_size}), got {rank}")
        check_batch_fits(labels, num_classes_iter, num_elements_class, batch_size_sampling)
        labels = np.asarray(labels)
        self.indices_per_class = [np.flatnonzero(labels == label) for label in np.unique(labels)]
        self.batch_size = num_classes_iter * num_elements_class
        self.configured = (num_classes_iter, num_elements_class)
        self.number_sampler = batch_size_sampling == "NumberSampler"
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.set_epoch(0)
        if len(self.indices) == 0:
            raise UserInputError(
                f"The training split gives fewer batches per epoch than the {world_size} "
                f"training processes; use fewer processes or a smaller train_params.num_classes_iter.")

    def draw_batch_shape(self, rng):
        """NumberSampler: P uniform over the allowed divisors, K = P*K / P."""
        if not self.number_sampler:
            return self.configured
        num_classes_iter = int(rng.choice(allowed_num_classes_iter(self.batch_size)))
        return num_classes_iter, self.batch_size // num_classes_iter

    def set_epoch(self, epoch):
        """Fix this epoch's batch shape and order from (seed, epoch)."""
        self.epoch = epoch
        rng = np.random.default_rng([self.seed, epoch])
        self.num_classes_iter, self.num_elements_class = self.draw_batch_shape(rng)
        chunks = epoch_chunks(rng, self.indices_per_class, self.num_classes_iter,
                              self.num_elements_class)
        batches = chunks.reshape(-1, self.batch_size)
        batches_per_rank = len(batches) // self.world_size
        self.indices = batches[self.rank::self.world_size][:batches_per_rank].reshape(-1)
        self.first_position = 0

    def skip_batches(self, count):
        """Drop this epoch's first ``count`` batches (a run resumed mid-epoch); ``set_epoch`` undoes it."""
        self.indices = self.indices[count * self.batch_size:]
        self.first_position += count * self.batch_size

    def augmentation_seeds(self):
        """One seed per yielded index: a function of (seed, epoch, rank, position in the epoch) only.

        The item at position p of epoch e gets the same augmentation whichever
        loader worker reads it, with any number of workers, and in a run
        resumed mid-epoch (the skipped positions still count).
        """
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, AUGMENTATION_STREAM])
        seeds = rng.integers(0, 2**63 - 1, size=self.first_position + len(self.indices), dtype=np.int64)
        return seeds[self.first_position:]

    def __iter__(self):
        return iter(self.indices.tolist())

    def __len__(self):
        return len(self.indices)


def check_batch_fits(labels, num_classes_iter, num_elements_class, batch_size_sampling):
    """The batch shape of the config against the training split."""
    if batch_size_sampling not in BATCH_SIZE_SAMPLINGS:
        raise UserInputError(
            f"Unknown dataset.bssampling '{batch_size_sampling}'; use NumberSampler or no.")
    if num_classes_iter < 1 or num_elements_class < 1:
        raise UserInputError(
            f"train_params.num_classes_iter ({num_classes_iter}) and "
            f"train_params.num_elements_class ({num_elements_class}) must be at least 1.")
    batch_size = num_classes_iter * num_elements_class
    if batch_size_sampling == "NumberSampler" and not allowed_num_classes_iter(batch_size):
        raise UserInputError(
            f"dataset.bssampling NumberSampler needs a batch size with a divisor between 2 and "
            f"half of it, but train_params.num_classes_iter x train_params.num_elements_class "
            f"= {batch_size}; choose another batch shape or set dataset.bssampling to no.")
    num_classes = len(set(labels))
    if num_classes < num_classes_iter:
        raise UserInputError(
            f"The training split has {num_classes} classes, fewer than "
            f"train_params.num_classes_iter = {num_classes_iter}; lower "
            f"train_params.num_classes_iter or raise dataset.num_classes.")
    if len(labels) < batch_size:
        raise UserInputError(
            f"The training split has {len(labels)} images, fewer than one batch of "
            f"train_params.num_classes_iter x train_params.num_elements_class = "
            f"{num_classes_iter} x {num_elements_class}; lower either value.")
