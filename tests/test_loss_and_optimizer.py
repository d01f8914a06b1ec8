"""SPEC 6: the two-term label-smoothed loss and RAdam, against the authors' values."""
import pytest
import torch
import torch.nn.functional as F

from tests.reference import LOSS_TOL, RADAM_TOL, load
from utils.losses import IntraBatchLoss, focal_loss, label_smoothed_cross_entropy
from utils.optim import build_optimizer


def cub_loss(**changes):
    options = dict(backbone_term="lsce", mpn_term="lsgnn", scaling_ce=1.0, scaling_gnn=1.0,
                   temperature=0.2, every=False)
    options.update(changes)
    return IntraBatchLoss(**options)


def test_loss_matches_authors_trainer_on_cub_fixture():
    fixture = load("loss_cub.pt")
    total, terms = cub_loss()(fixture["backbone_logits"], [fixture["gnn_logits"]], fixture["labels"])
    torch.testing.assert_close(terms["Backbone"], fixture["loss_ce"], **LOSS_TOL["loss_ce"])
    torch.testing.assert_close(terms["MPN0"], fixture["loss_gnn"], **LOSS_TOL["loss_gnn"])
    torch.testing.assert_close(total, fixture["total"], **LOSS_TOL["total"])


def test_label_smoothing_targets_are_09_onehot_plus_01_over_classes():
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    targets = 0.9 * F.one_hot(labels, 5) + 0.1 / 5
    expected = -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    torch.testing.assert_close(label_smoothed_cross_entropy(logits, labels), expected)


def test_temperature_divides_logits_and_scalings_weight_terms():
    fixture = load("loss_cub.pt")
    logits, gnn_logits, labels = fixture["backbone_logits"], fixture["gnn_logits"], fixture["labels"]
    total, _ = cub_loss(scaling_ce=0.5, scaling_gnn=2.0, temperature=0.5)(logits, [gnn_logits], labels)
    expected = 0.5 * label_smoothed_cross_entropy(logits / 0.5, labels) + \
        2.0 * label_smoothed_cross_entropy(gnn_logits / 0.5, labels)
    torch.testing.assert_close(total, expected)


def test_backbone_term_alone_ignores_mpn_logits():
    fixture = load("loss_cub.pt")
    loss = cub_loss(mpn_term=None)
    total, terms = loss(fixture["backbone_logits"], [], fixture["labels"])
    assert not loss.uses_mpn and list(terms) == ["Backbone"]
    torch.testing.assert_close(total, fixture["loss_ce"], **LOSS_TOL["loss_ce"])


def test_every_gives_one_term_per_layer_and_otherwise_only_the_last():
    generator = torch.Generator().manual_seed(1)
    layers = [torch.randn(8, 4, generator=generator) for _ in range(3)]
    labels = torch.arange(8) % 4
    _, every_terms = cub_loss(backbone_term=None, every=True)(layers[0], layers, labels)
    _, last_terms = cub_loss(backbone_term=None)(layers[0], layers, labels)
    assert list(every_terms) == ["MPN0", "MPN1", "MPN2"]
    torch.testing.assert_close(last_terms["MPN0"], every_terms["MPN2"])


def test_focal_loss_reduces_to_cross_entropy_at_gamma_zero():
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 0, 1])
    torch.testing.assert_close(focal_loss(logits, labels, gamma=0.0), F.cross_entropy(logits, labels))


# Fixed logits and the values the authors' FocalLoss() (utils/losses.py, gamma 7,
# detached p_t) gives for them, loss and gradient, run in float64.
FOCAL_LOGITS = [[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, 0.3, -0.4], [-2.0, 3.0, 1.0, 0.5]]
FOCAL_LABELS = [0, 2, 0]
AUTHORS_FOCAL_LOSS = 1.697251431626116
AUTHORS_FOCAL_GRAD = [
    [-1.6628971627052928e-05, 2.0279305661307055e-06, 9.088554253632468e-06, 5.51248680728976e-06],
    [0.006276076996391492, 0.006936137776015438, -0.017018847893435544, 0.003806633121028614],
    [-0.3189352755500843, 0.26197631196243454, 0.035454638380719286, 0.021504325206930523],
]


@pytest.mark.parametrize("term", ["focalce", "focalgnn"])
def test_focal_terms_equal_the_authors_focal_loss_and_its_gradient(term):
    logits = torch.tensor(FOCAL_LOGITS, requires_grad=True)
    labels = torch.tensor(FOCAL_LABELS)
    loss = cub_loss(backbone_term=term if term == "focalce" else None,
                    mpn_term=term if term == "focalgnn" else None, temperature=1.0)
    total, _ = loss(logits, [logits], labels)
    total.backward()
    assert abs(total.item() - AUTHORS_FOCAL_LOSS) < 1e-6
    torch.testing.assert_close(logits.grad, torch.tensor(AUTHORS_FOCAL_GRAD), rtol=0, atol=1e-6)


def test_radam_with_decoupled_weight_decay_matches_authors_radam():
    fixture = load("radam.pt")
    config = fixture["config"]
    model = torch.nn.Linear(8, 2)
    with torch.no_grad():
        model.weight.copy_(fixture["init"]["weight"])
        model.bias.copy_(fixture["init"]["bias"])
    optimizer = build_optimizer(model.parameters(), config["lr"], config["weight_decay"])
    assert optimizer.defaults["betas"] == tuple(config["betas"]) and optimizer.defaults["eps"] == config["eps"]
    for step in range(config["steps"]):
        optimizer.zero_grad()
        loss = F.mse_loss(model(fixture["X"]), fixture["y"])
        loss.backward()
        optimizer.step()
        torch.testing.assert_close(loss.double(), fixture["losses"][step], **RADAM_TOL["losses"])
        expected = fixture["params_per_step"][step]
        torch.testing.assert_close(model.weight.detach(), expected["weight"], **RADAM_TOL["params"])
        torch.testing.assert_close(model.bias.detach(), expected["bias"], **RADAM_TOL["params"])
    torch.testing.assert_close(model.weight.detach(), fixture["final"]["weight"], **RADAM_TOL["params"])


@pytest.mark.parametrize("fns, backbone, mpn", [
    ("lsgnn_lsce", "lsce", "lsgnn"), ("lsce", "lsce", None), ("ce_gnn", "ce", "gnn"),
    ("focalce_focalgnn", "focalce", "focalgnn"), ("lsce_lsgnn", "lsce", "lsgnn"),
])
def test_fns_selects_terms_in_any_order(fns, backbone, mpn):
    from utils.config import backbone_loss_term, mpn_loss_term
    assert (backbone_loss_term(fns), mpn_loss_term(fns)) == (backbone, mpn)


def test_the_optimiser_uses_the_multi_tensor_update_also_on_the_cpu():
    parameters = [torch.nn.Parameter(torch.ones(3))]
    assert build_optimizer(parameters, lr=0.1, weight_decay=0.0).defaults["foreach"] is True
