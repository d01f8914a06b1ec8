"""SPEC 6: the two-term label-smoothed loss and RAdam, against the authors' values."""
import copy

import pytest
import torch
import torch.nn.functional as F

from tests.reference import LOSS_TOL, RADAM_TOL, load
from losses.intra_batch import IntraBatchLoss, focal_loss, label_smoothed_cross_entropy
from optim.param_groups import build_optimizer


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
    from schema.options import backbone_loss_term, mpn_loss_term
    assert (backbone_loss_term(fns), mpn_loss_term(fns)) == (backbone, mpn)


def _random_parameters(seed, shapes=((1000,), (30, 7), (5,))):
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]


def _torch_radam(groups):
    return torch.optim.RAdam(groups, lr=0.01, weight_decay=0.01, decoupled_weight_decay=True, foreach=True)


def _step_both(first, second, first_params, second_params, generator, skip=()):
    """The same random gradients into both optimisers; parameters in ``skip`` get none."""
    for index, (a, b) in enumerate(zip(first_params, second_params)):
        gradient = None if index in skip else torch.randn(a.shape, generator=generator)
        a.grad = None if gradient is None else gradient.clone()
        b.grad = None if gradient is None else gradient.clone()
    first.step()
    second.step()


def test_radam_equals_torchs_rectified_radam_over_many_steps_groups_and_skipped_parameters():
    ours_params, torch_params = _random_parameters(0), _random_parameters(0)
    ours = build_optimizer([{"params": ours_params[:2]}, {"params": ours_params[2:], "lr": 0.003}], 0.01, 0.01)
    reference = _torch_radam([{"params": torch_params[:2]}, {"params": torch_params[2:], "lr": 0.003}])
    generator = torch.Generator().manual_seed(1)
    for step in range(60):
        # The 1000-vector misses steps 2-4: afterwards it lags the others by three steps.
        _step_both(reference, ours, torch_params, ours_params, generator, skip=(0,) if 1 <= step <= 3 else ())
        for a, b in zip(torch_params, ours_params):
            torch.testing.assert_close(b.detach(), a.detach(), atol=1e-6, rtol=1e-5)
    assert int(ours.state[ours_params[0]]["step"]) == 57 and int(ours.state[ours_params[1]]["step"]) == 60


def test_radam_continues_from_a_torch_radam_state_and_back():
    """last.pth of runs made with torch.optim.RAdam resume here, and the state keys are the same."""
    ours_params, torch_params = _random_parameters(2), _random_parameters(2)
    reference = _torch_radam(torch_params)
    generator = torch.Generator().manual_seed(3)
    for _ in range(8):
        for parameter in torch_params:
            parameter.grad = torch.randn(parameter.shape, generator=generator)
        reference.step()
    with torch.no_grad():
        for a, b in zip(torch_params, ours_params):
            b.copy_(a)
    ours = build_optimizer(ours_params, 0.01, 0.01)
    # Deep copies, as from last.pth: a live state_dict shares its step counters.
    ours.load_state_dict(copy.deepcopy(reference.state_dict()))
    for _ in range(10):
        _step_both(reference, ours, torch_params, ours_params, generator)
    for a, b in zip(torch_params, ours_params):
        torch.testing.assert_close(b.detach(), a.detach(), atol=1e-6, rtol=1e-5)
    assert set(ours.state_dict()["state"][0]) == set(reference.state_dict()["state"][0])
    back = _torch_radam(torch_params)
    back.load_state_dict(copy.deepcopy(ours.state_dict()))
    back.step()


def test_rectified_steps_go_through_the_fused_adamw_kernel_on_the_cpu(monkeypatch):
    import optim.radam
    calls = []
    real_adam = optim.radam.adam
    monkeypatch.setattr(optim.radam, "adam", lambda *args, **kwargs: calls.append(kwargs) or real_adam(*args, **kwargs))
    parameters = _random_parameters(4)
    optimizer = build_optimizer(parameters, 0.01, 0.0)
    for _ in range(7):
        for parameter in parameters:
            parameter.grad = torch.ones_like(parameter)
        optimizer.step()
    # Steps 1-5 are unrectified (rho_t <= 5); 6 and 7 are Adam steps with lr * r_t.
    assert [call["fused"] for call in calls] == [True, True]
    rect = optim.radam.rectification(6, 0.999)
    assert calls[0]["lr"] == pytest.approx(0.01 * rect) and 0 < rect < 0.05
