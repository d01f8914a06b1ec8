"""utils.precision: the loss-scaling path that float16 uses on CUDA, run here on the CPU
(torch's GradScaler works on both), and the back end each setting picks."""
import pytest
import torch

from utils.errors import UserInputError
from utils.precision import Precision, build_precision, initialize_apex, resolve_is_apex

INITIAL_SCALE = 2.0 ** 10


def float16_with_scaler():
    return Precision("autocast-float16", torch.device("cpu"), dtype=torch.float16,
                     scaler=torch.amp.GradScaler("cpu", init_scale=INITIAL_SCALE))


def linear_and_sgd():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def scaled_step(precision, model, optimizer, inputs):
    optimizer.zero_grad()
    with precision.autocast():
        loss = model(inputs).float().sum()
    precision.backward(loss, optimizer)
    precision.step(optimizer)


def test_a_scaled_step_updates_like_the_plain_float32_step():
    # Inputs of ones: every gradient is 2, exact in float16 also when scaled by 2^10,
    # so the unscaled update must equal float32 SGD's exactly.
    model, optimizer = linear_and_sgd()
    reference, reference_optimizer = linear_and_sgd()
    inputs = torch.ones(2, 4)
    scaled_step(float16_with_scaler(), model, optimizer, inputs)
    reference(inputs).sum().backward()
    reference_optimizer.step()
    assert torch.equal(model.weight, reference.weight) and torch.equal(model.bias, reference.bias)


def test_a_non_finite_gradient_skips_the_step_and_lowers_the_scale():
    model, optimizer = linear_and_sgd()
    before = [parameter.detach().clone() for parameter in model.parameters()]
    precision = float16_with_scaler()
    scaled_step(precision, model, optimizer, torch.full((2, 4), float("inf")))
    assert all(torch.equal(parameter, old) for parameter, old in zip(model.parameters(), before))
    assert precision.scaler.get_scale() == INITIAL_SCALE / 2


def test_the_scale_survives_a_checkpoint():
    model, optimizer = linear_and_sgd()
    precision = float16_with_scaler()
    scaled_step(precision, model, optimizer, torch.full((2, 4), float("inf")))
    restored = float16_with_scaler()
    restored.load_state_dict(precision.state_dict())
    assert restored.scaler.get_scale() == precision.scaler.get_scale() == INITIAL_SCALE / 2


@pytest.mark.parametrize("is_apex, device, requested, expected", [
    (0, "cpu", False, "float32"),
    (1, "cpu", True, "autocast-bfloat16"),
    ("authors", "cpu", False, "float32"),
    ("authors", "cpu", True, "float32"),
])
def test_the_back_end_each_setting_picks(is_apex, device, requested, expected):
    assert build_precision(is_apex, torch.device(device), requested).name == expected


def test_mixed_precision_on_a_cpu_nobody_asked_for_is_refused():
    with pytest.raises(UserInputError, match="--device cpu"):
        build_precision(1, torch.device("cpu"), device_was_requested=False)


@pytest.mark.parametrize("device, resolved, said", [
    ("cuda", 1, "mixed precision, as the authors' code always ran"),
    ("cpu", 0, "float32 on cpu; the authors' Apex amp O1 mixed precision needs a CUDA GPU"),
])
def test_is_apex_authors_resolves_to_what_the_authors_ran_on_the_device(device, resolved, said):
    config = {"train_params": {"is_apex": "authors"}}
    resolved_config, note = resolve_is_apex(config, torch.device(device))
    assert resolved_config["train_params"]["is_apex"] == resolved and said in note
    assert config["train_params"]["is_apex"] == "authors"


@pytest.mark.parametrize("is_apex", [0, 1])
def test_explicit_is_apex_is_kept(is_apex):
    config = {"train_params": {"is_apex": is_apex}}
    assert resolve_is_apex(config, torch.device("cuda")) == (config, None)


class RecordingAmp:
    """Stands in for apex.amp: records how ``initialize`` was called."""

    def __init__(self):
        self.calls = []

    def initialize(self, models, optimizers=None, opt_level=None):
        self.calls.append((models, optimizers, opt_level))
        return models if optimizers is None else (models, optimizers)


def test_apex_is_initialised_o1_for_evaluation_without_an_optimizer():
    amp = RecordingAmp()
    model = torch.nn.Linear(2, 2)
    precision = Precision("apex-amp-O1", torch.device("cpu"), amp=amp)
    assert initialize_apex(precision, model) == (model, None)
    assert amp.calls == [(model, None, "O1")]
