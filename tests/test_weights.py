"""Loading weights files (net/weights.py): formats accepted and one-sentence errors."""
import pytest
import torch
from torch import nn

from net.weights import first_mismatch, load_state, load_weights
from utils.errors import UserInputError

CONFIG_KEY = "--gnn_path / models.gnn_params.pretrained_path"


def small_model():
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def trained_state():
    torch.manual_seed(1)
    return small_model().state_dict()


def assert_loaded(model, state):
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_plain_state_dict_loads(tmp_path):
    state = trained_state()
    torch.save(state, tmp_path / "w.pth")
    model = small_model()
    load_weights(model, tmp_path / "w.pth", CONFIG_KEY)
    assert_loaded(model, state)


@pytest.mark.parametrize("holder", ["state_dict", "model"])
def test_state_dict_held_under_a_key_loads(tmp_path, holder):
    state = trained_state()
    torch.save({holder: state, "epoch": 3}, tmp_path / "w.pth")
    model = small_model()
    load_weights(model, tmp_path / "w.pth", CONFIG_KEY)
    assert_loaded(model, state)


def test_data_parallel_prefix_is_stripped(tmp_path):
    state = trained_state()
    torch.save({f"module.{key}": value for key, value in state.items()}, tmp_path / "w.pth")
    model = small_model()
    load_weights(model, tmp_path / "w.pth", CONFIG_KEY)
    assert_loaded(model, state)


def test_checkpoint_without_batch_counter_loads(tmp_path):
    state = trained_state()
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")},
               tmp_path / "w.pth")
    model = small_model()
    load_weights(model, tmp_path / "w.pth", CONFIG_KEY)
    assert torch.equal(model[1].running_mean, state["1.running_mean"])


def test_missing_file_names_the_path_and_the_config_key(tmp_path):
    with pytest.raises(UserInputError) as error:
        load_weights(small_model(), tmp_path / "missing.pth", CONFIG_KEY)
    message = str(error.value)
    assert str(tmp_path / "missing.pth") in message and CONFIG_KEY in message
    assert "does not exist" in message and "\n" not in message


def test_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(UserInputError) as error:
        load_weights(small_model(), tmp_path / "notes.pth", CONFIG_KEY)
    message = str(error.value)
    assert str(tmp_path / "notes.pth") in message and CONFIG_KEY in message
    assert "not a PyTorch checkpoint" in message


def test_checkpoint_without_a_state_dict_is_refused(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "w.pth")
    with pytest.raises(UserInputError, match="holds no state dict"):
        load_weights(small_model(), tmp_path / "w.pth", CONFIG_KEY)


def test_shape_mismatch_names_the_first_mismatching_key(tmp_path):
    other = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 5))
    torch.save(other.state_dict(), tmp_path / "w.pth")
    with pytest.raises(UserInputError) as error:
        load_weights(small_model(), tmp_path / "w.pth", CONFIG_KEY)
    message = str(error.value)
    assert str(tmp_path / "w.pth") in message and CONFIG_KEY in message
    assert "key '2.weight' has shape [5, 3] in the file but [2, 3] in the model" in message


def test_failed_load_leaves_the_module_unchanged(tmp_path):
    state = trained_state()
    state["2.bias"] = torch.zeros(7)
    torch.save(state, tmp_path / "w.pth")
    model = small_model()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    with pytest.raises(UserInputError):
        load_weights(model, tmp_path / "w.pth", CONFIG_KEY)
    assert_loaded(model, before)


def test_first_mismatch_reports_missing_then_unexpected_keys():
    expected = {"a": torch.zeros(2), "b": torch.zeros(2)}
    assert first_mismatch(expected, {"a": torch.zeros(2), "b": torch.zeros(2)}) is None
    assert first_mismatch(expected, {"a": torch.zeros(2)}) == "key 'b' is missing"
    assert first_mismatch(expected, {"c": torch.zeros(1), "a": torch.zeros(2), "b": torch.zeros(2)}) \
        == "key 'c' is not part of the model"
    assert first_mismatch(expected, {"a": torch.zeros(2), "c": torch.zeros(1)}) == "key 'b' is missing"


def test_kept_prefixes_keep_the_module_values():
    state = trained_state()
    model = small_model()
    head = model[2].weight.detach().clone()
    trunk_only = {key: value for key, value in state.items() if not key.startswith("2.")}
    load_state(model, trunk_only, "trunk.pth", CONFIG_KEY, keep_prefixes=("2.",))
    assert torch.equal(model[0].weight, state["0.weight"])
    assert torch.equal(model[2].weight, head)
