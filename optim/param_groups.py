"""The optimiser of SPEC 6, and the parameter groups of the per-part learning rates."""
from optim.radam import RAdam


def build_optimizer(parameters, lr, weight_decay):
    """RAdam, betas (0.9, 0.999), eps 1e-8, decoupled weight decay: the authors' RAdam.py,
    which shrinks every parameter by lr * wd before the update (``optim.radam``, checked
    against their steps in ``radam.pt``). ``parameters`` may be groups from
    ``build_param_groups``, whose ``lr`` already carries their ``lr_scale``.
    """
    return RAdam(parameters, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)


def build_param_groups(backbone, mpn, lr, backbone_lr_scale=1.0, layer_decay=1.0):
    """Parameter groups, each with ``lr = lr * lr_scale`` and its ``lr_scale`` stored for the schedule.

    The MPN and the backbone's head (the parameters under its
    ``head_prefixes``: red/embed, neck, classifier) keep ``lr``; the trunk
    gets ``backbone_lr_scale`` times it, and with ``layer_decay < 1`` layer
    ``i`` of ``n`` (``backbone.layer_ids()``, timm's grouping) a further
    ``layer_decay ** (n - 1 - i)``, the rule of timm's
    ``param_groups_layer_decay`` (after BEiT): for a ViT of depth d the
    stem is layer 0, block j layer j + 1, the final norm shares the last
    block's layer, which keeps scale 1. Parameters of one scale share a
    group, so the defaults give the authors' single group of all
    parameters; the first group has scale 1. Frozen parameters (no
    gradient) stay in their group: RAdam skips them, no update, no decay.
    """
    layer_of, num_layers = backbone.layer_ids() if layer_decay != 1 else ({}, 1)
    scaled = {1.0: []}
    for name, parameter in backbone.named_parameters():
        scale = 1.0
        if not name.startswith(backbone.head_prefixes):
            scale = backbone_lr_scale * layer_decay ** (num_layers - 1 - layer_of.get(name, num_layers - 1))
        scaled.setdefault(scale, []).append(parameter)
    scaled[1.0].extend(mpn.parameters())
    return [{"params": parameters, "lr": lr * scale, "lr_scale": scale}
            for scale, parameters in scaled.items() if parameters]

