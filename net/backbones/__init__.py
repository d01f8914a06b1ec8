"""CNN backbones that embed images (SPEC section 4); ``build_backbone`` is the entry point."""
from net.backbones.factory import BACKBONES, build_backbone

__all__ = ["BACKBONES", "build_backbone"]
