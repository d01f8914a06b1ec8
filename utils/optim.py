"""The optimiser of SPEC 6."""
import torch


def build_optimizer(parameters, lr, weight_decay):
    """RAdam, betas (0.9, 0.999), eps 1e-8, decoupled weight decay, one parameter group.

    The authors' RAdam.py shrinks every parameter by lr * wd before the
    update; torch's RAdam with ``decoupled_weight_decay=True`` does the same
    (checked against their steps in ``radam.pt``).
    """
    return torch.optim.RAdam(parameters, lr=lr, betas=(0.9, 0.999), eps=1e-8,
                             weight_decay=weight_decay, decoupled_weight_decay=True)
