"""The embedding head shared by all backbones: neck, classifier, output option.

The parts are created by the backbones themselves (the authors' state-dict
keys are top-level names such as ``red``, ``bottleneck``, ``fc``), so this
file offers the pieces and the forward rule, not a wrapping module.
"""
from torch import nn
from torch.nn import functional as F

OUTPUT_OPTIONS = ("plain", "norm", "neck")
CLASSIFIER_WEIGHT_STD = 0.001


def make_neck(dim):
    """BatchNorm1d ``bottleneck`` with weight 1 and a bias frozen at 0 (no shift)."""
    bottleneck = nn.BatchNorm1d(dim)
    nn.init.ones_(bottleneck.weight)
    nn.init.zeros_(bottleneck.bias)
    bottleneck.bias.requires_grad_(False)
    return bottleneck


def make_classifier(dim, num_classes, neck):
    """Linear classifier on the embedding.

    After a neck it has no bias and weights drawn from N(0, 0.001); otherwise
    it is a plain Linear with bias and PyTorch's default initialisation.
    """
    if not neck:
        return nn.Linear(dim, num_classes)
    classifier = nn.Linear(dim, num_classes, bias=False)
    nn.init.normal_(classifier.weight, std=CLASSIFIER_WEIGHT_STD)
    return classifier


def classify(embedding, bottleneck, classifier, output_option):
    """``(logits, embedding)`` for one output option.

    ``plain``: the L2-normalised embedding; ``norm``: the raw embedding;
    ``neck``: the embedding after the bottleneck (the raw embedding when
    there is none, as in the authors' code). The logits always come from the
    embedding after the bottleneck.
    """
    after_neck = embedding if bottleneck is None else bottleneck(embedding)
    logits = classifier(after_neck)
    if output_option == "plain":
        return logits, F.normalize(embedding, p=2, dim=1)
    if output_option == "norm":
        return logits, embedding
    if output_option == "neck":
        return logits, after_neck
    raise ValueError(f"output_option must be one of {OUTPUT_OPTIONS}, got {output_option!r}")
