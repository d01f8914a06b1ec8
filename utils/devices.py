"""The ``--device`` flag of every command: one rule for train.py, embed.py and retrieve.py."""
import torch

from utils.errors import UserInputError


def resolve_device(name):
    """``(device, requested)``: cuda when available unless ``name`` says otherwise.

    ``requested`` tells whether the user chose it; asking for CUDA without a
    GPU is a user error.
    """
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu"), False
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserInputError(f"--device {name} is not a device name; use cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"--device {name} asks for a GPU but torch sees no CUDA device; use --device cpu.")
    return device, True
