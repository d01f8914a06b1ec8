"""Networks of SPEC 4 and 5: ``build_backbone`` and ``build_mpn`` are the only doors."""
from net.backbones import BACKBONES, backbone_input_config, build_backbone
from net.mpn import build_mpn
from net.weights import load_weights

__all__ = ["BACKBONES", "backbone_input_config", "build_backbone", "build_mpn", "load_weights"]
