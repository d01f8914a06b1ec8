"""The training loss of SPEC 6: one classification term per network.

L = scaling_ce * term(z_backbone / T, y) + scaling_gnn * sum_l term(z_mpn_l / T, y)

where the MPN sum runs over the last layer only, or over every layer when
``gnn_params.every`` is 1. ``lsce``/``lsgnn`` are cross entropy with label
smoothing 0.1 (targets 0.9 * onehot + 0.1 / C): torch's
``cross_entropy(label_smoothing=0.1)`` computes exactly the authors'
CrossEntropyLabelSmooth, mean over the batch.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from schema.options import backbone_loss_term, mpn_loss_term

LABEL_SMOOTHING = 0.1
# The authors' FocalLoss (utils/losses.py of their repository) defaults to gamma 7.
FOCAL_GAMMA = 7.0


def label_smoothed_cross_entropy(logits, labels):
    return F.cross_entropy(logits, labels, label_smoothing=LABEL_SMOOTHING)


def plain_cross_entropy(logits, labels):
    return F.cross_entropy(logits, labels)


def focal_loss(logits, labels, gamma=FOCAL_GAMMA):
    """The authors' focal loss: mean over the batch of -(1 - p_t)^gamma log p_t.

    As in their FocalLoss (gamma 7, no class weights), the modulating factor
    (1 - p_t)^gamma is computed from a detached p_t, so the gradient flows
    through log p_t only: a per-sample weighted cross entropy, not the
    gradient of Lin et al.'s loss.
    """
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, labels[:, None]).squeeze(1)
    weight = (1 - log_p.detach().exp()) ** gamma
    return (-weight * log_p).mean()


TERMS = {
    "lsce": label_smoothed_cross_entropy, "lsgnn": label_smoothed_cross_entropy,
    "ce": plain_cross_entropy, "gnn": plain_cross_entropy,
    "focalce": focal_loss, "focalgnn": focal_loss,
}


@dataclass(frozen=True)
class IntraBatchLoss:
    """Backbone term plus MPN term(s), each on logits divided by the temperature."""

    backbone_term: str
    mpn_term: str
    scaling_ce: float
    scaling_gnn: float
    temperature: float
    every: bool

    @classmethod
    def from_config(cls, config):
        loss_fn = config["train_params"]["loss_fn"]
        return cls(
            backbone_term=backbone_loss_term(loss_fn["fns"]),
            mpn_term=mpn_loss_term(loss_fn["fns"]),
            scaling_ce=loss_fn["scaling_ce"],
            scaling_gnn=loss_fn["scaling_gnn"],
            temperature=config["train_params"]["temperatur"],
            every=bool(config["models"]["gnn_params"]["every"]),
        )

    @property
    def uses_mpn(self):
        return self.mpn_term is not None

    def __call__(self, backbone_logits, mpn_logits, labels):
        """Total loss and the unscaled terms by name (``Backbone``, ``MPN0``, ...)."""
        terms = {}
        total = backbone_logits.new_zeros((), dtype=torch.float32)
        if self.backbone_term is not None:
            terms["Backbone"] = TERMS[self.backbone_term](backbone_logits.float() / self.temperature, labels)
            total = total + self.scaling_ce * terms["Backbone"]
        if self.mpn_term is not None:
            layer_logits = mpn_logits if self.every else mpn_logits[-1:]
            for layer, logits in enumerate(layer_logits):
                term = TERMS[self.mpn_term](logits.float() / self.temperature, labels)
                terms[f"MPN{layer}"] = term
                total = total + self.scaling_gnn * term
        return total, terms
