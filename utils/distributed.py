"""Several processes (``torchrun``): DistributedDataParallel, gathers, rank 0 writes.

Started by torchrun, ``train.py`` finds RANK / WORLD_SIZE / LOCAL_RANK in the
environment and joins a process group (NCCL on CUDA, gloo on the CPU), also
for one process, so that ``--nproc_per_node=1`` runs the same DDP code as
several; started without them, nothing here is used.

Each rank trains on its own P x K batches (the sampler hands out disjoint
chunks of one shared per-epoch order), so the MPN graph is one rank's batch
as in the paper; ``graph_scope: global`` all-gathers the embeddings, with
gradients, to form one graph over the batches of all ranks.
"""
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from utils.errors import UserInputError

logger = logging.getLogger(__name__)


# How gloo and NCCL report that another process of the group went away (its rank died or was killed).
LOST_PEER_SIGNS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "NCCL communicator was aborted",
                   "remote process exited", "Socket Timeout")


def lost_a_peer(error):
    """Whether ``error``, raised by a collective, says that another process of the group is gone."""
    return isinstance(error, getattr(dist, "DistBackendError", ())) or any(
        sign in str(error) for sign in LOST_PEER_SIGNS)


def unwrap(model):
    """The module inside a DistributedDataParallel wrapper, or the model itself."""
    return getattr(model, "module", model)


@dataclass
class Distributed:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self):
        return self.rank == 0

    @classmethod
    def from_environment(cls, device_name=None):
        """The process group torchrun asked for, or None when not started by torchrun."""
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return None
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        use_cuda = torch.cuda.is_available() and (device_name is None or device_name.startswith("cuda"))
        if use_cuda:
            if local_rank >= torch.cuda.device_count():
                raise UserInputError(f"torchrun started {world_size} processes per node but only "
                                     f"{torch.cuda.device_count()} GPUs are visible; lower --nproc_per_node.")
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return cls(rank, world_size, local_rank)

    @staticmethod
    def backend():
        return dist.get_backend()

    def device(self):
        if dist.get_backend() == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def device_and_request(self):
        """This rank's device, as if named by --device (torchrun chose it)."""
        return self.device(), True

    def check_options(self, config):
        if config["train_params"]["sync_bn"] and dist.get_backend() != "nccl":
            raise UserInputError("train_params.sync_bn is 1 but SyncBatchNorm needs CUDA GPUs (NCCL); set it "
                                 "to 0 for runs on the CPU.")

    def wrap_models(self, backbone, mpn, config):
        """DDP around both networks; ``sync_bn: 1`` first turns BatchNorm into SyncBatchNorm.

        The converted BatchNorm layers keep the same parameter tensors, so an
        optimiser built on the bare models stays valid.
        """
        if config["train_params"]["sync_bn"]:
            backbone = torch.nn.SyncBatchNorm.convert_sync_batchnorm(backbone)
            mpn = torch.nn.SyncBatchNorm.convert_sync_batchnorm(mpn)
        device_ids = [self.local_rank] if dist.get_backend() == "nccl" else None
        fns = config["train_params"]["loss_fn"]["fns"].split("_")
        # The backbone classifier gets no gradient when only the MPN term is trained.
        backbone_unused = not any(term in fns for term in ("lsce", "ce", "focalce"))
        backbone = torch.nn.parallel.DistributedDataParallel(
            backbone, device_ids=device_ids, find_unused_parameters=backbone_unused)
        mpn = torch.nn.parallel.DistributedDataParallel(mpn, device_ids=device_ids)
        return backbone, mpn

    def gather_with_grad(self, embedding):
        """Embeddings of all ranks in rank order; gradients flow back to each rank's own rows."""
        return GatherWithGrad.apply(embedding)

    def local_rows(self, tensor):
        """This rank's rows of a tensor gathered by ``gather_with_grad`` (equal batch sizes)."""
        rows = tensor.shape[0] // self.world_size
        return tensor[self.rank * rows:(self.rank + 1) * rows]

    def gather_embeddings(self, embeddings, labels, indices):
        """Concatenate every rank's shard of extracted embeddings (shards may differ in size)."""
        device = self.device()
        parts = [_all_gather_variable(tensor.to(device)) for tensor in (embeddings, labels, indices)]
        return tuple(part.to(tensor.device) for part, tensor in zip(parts, (embeddings, labels, indices)))

    def any_rank(self, flag):
        """True on every rank when ``flag`` is True on any (stop together, never deadlock)."""
        value = torch.tensor([1 if flag else 0], device=self.device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def share_from_main(self, compute):
        """Run ``compute()`` on rank 0 only and return its result on every rank."""
        return self.broadcast_object(compute() if self.is_main else None)

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank."""
        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def barrier(self):
        dist.barrier()

    def shutdown(self):
        if dist.is_initialized():
            dist.destroy_process_group()


class GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands every rank the summed gradient of its own rows."""

    @staticmethod
    def forward(ctx, tensor):
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        rows = grad.shape[0] // dist.get_world_size()
        rank = dist.get_rank()
        return grad[rank * rows:(rank + 1) * rows]


def _all_gather_variable(tensor):
    """all_gather for tensors whose first dimension differs between ranks."""
    world_size = dist.get_world_size()
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    largest = int(max(s.item() for s in sizes))
    padded = torch.zeros((largest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[:tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([part[:int(s.item())] for part, s in zip(gathered, sizes)])
