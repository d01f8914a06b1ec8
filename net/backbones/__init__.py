"""Backbones that embed images (SPEC section 4; timm models too); ``build_backbone`` is the entry point."""
from net.backbones.factory import BACKBONES, backbone_input_config, build_backbone

__all__ = ["BACKBONES", "backbone_input_config", "build_backbone"]
