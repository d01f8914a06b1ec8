"""The message passing network (SPEC 5) against the authors' golden fixtures
and the properties the dense formulation must keep."""
import copy
import math

import pytest
import torch

import net.attention as attention
from net.attention import aggregate_add, aggregate_max, aggregate_mean, null_logit_softmax
from net.graph import correlation_edge_weights
from net.mpn import build_mpn
from tests.reference import GNN_TOL, load, load_layouts, materialize
from utils.errors import UserInputError

FIXTURES = ("gnn_cub", "gnn_cars", "gnn_inshop", "gnn_cub_mult_attr")
# The issue asks 1e-5; never looser than the fixture's own tolerance.
ISSUE_ATOL = 1e-5


def strict(kind):
    return dict(atol=min(GNN_TOL[kind]["atol"], ISSUE_ATOL), rtol=0.0)


@pytest.fixture(scope="module", params=FIXTURES)
def reference(request):
    """(fixture name, fixture, model with the fixture's weights in eval mode)."""
    fixture = load(request.param + ".pt")
    model = build_mpn(fixture["config"]["gnn_params"], fixture["config"]["embed_dim"])
    model.load_state_dict(materialize(fixture["state_dict"]), strict=True)
    return request.param, fixture, model.eval()


def small_params(**overrides):
    """A CUB-like gnn_params section; overrides go to the sub-dict holding the key."""
    params = copy.deepcopy(load_layouts()["gnn_cub"]["gnn_params"])
    for key, value in overrides.items():
        section = next((s for s in (params["gnn"], params["classifier"]) if key in s), params)
        section[key] = value
    return params


def run_with_hooks(model, feats):
    """Forward in eval mode, recording the fixture's intermediate outputs."""
    recorded = {}

    def record(name):
        return lambda module, inputs, output: recorded.__setitem__(name, output)

    hooks = [model.dim_red.register_forward_hook(record("dim_red_out"))]
    for i, layer in enumerate(model.gnn_model["node_model"].layers):
        hooks.append(layer.att.register_forward_hook(record(f"layer{i}_att_out")))
        hooks.append(layer.norm1.register_forward_hook(record(f"layer{i}_norm1_out")))
        hooks.append(layer.register_forward_hook(record(f"layer{i}_out")))
    with torch.no_grad():
        logits, feats = model(feats, output_option="plain")
    for hook in hooks:
        hook.remove()
    return logits, feats, recorded


# --- golden fixtures ---------------------------------------------------------

@pytest.mark.parametrize("name", FIXTURES)
def test_state_dict_matches_authors_layout(name):
    layout = load_layouts()[name]
    model = build_mpn(layout["gnn_params"], layout["embed_dim"])
    ours = [(key, list(value.shape), str(value.dtype).removeprefix("torch."))
            for key, value in model.state_dict().items()]
    assert ours == [tuple(entry) for entry in layout["state_dict"]]
    assert sum(p.numel() for p in model.parameters()) == layout["num_params"]
    frozen = [key for key, p in model.named_parameters() if not p.requires_grad]
    assert frozen == layout["frozen_params"]


def test_logits_and_plain_features_match_reference(reference):
    _, fixture, model = reference
    logits, feats, _ = run_with_hooks(model, fixture["feats"])
    assert len(logits) == len(fixture["logits"]) == len(feats) == len(fixture["out_feats"])
    for ours, theirs in zip(logits, fixture["logits"]):
        torch.testing.assert_close(ours, theirs, **strict("logits"))
    for ours, theirs in zip(feats, fixture["out_feats"]):
        torch.testing.assert_close(ours, theirs, **strict("out_feats"))


def test_layer0_attention_output_matches_reference(reference):
    _, fixture, model = reference
    _, _, recorded = run_with_hooks(model, fixture["feats"])
    torch.testing.assert_close(recorded["layer0_att_out"], fixture["layer0_att_out"],
                               **strict("intermediate"))


def test_intermediate_outputs_match_reference(reference):
    _, fixture, model = reference
    _, _, recorded = run_with_hooks(model, fixture["feats"])
    for key, theirs in fixture["intermediate"].items():
        torch.testing.assert_close(recorded[key], theirs, **strict("intermediate"), msg=key)


def test_correlation_edge_weights_match_reference_edge_attr(reference):
    _, fixture, _ = reference
    num_nodes = fixture["feats"].shape[0]
    # Edge k of the authors' complete graph joins (k // n, k % n).
    rows, cols = torch.meshgrid(torch.arange(num_nodes), torch.arange(num_nodes), indexing="ij")
    assert torch.equal(fixture["edge_index"], torch.stack([rows.reshape(-1), cols.reshape(-1)], 1))
    weights = correlation_edge_weights(fixture["feats"])
    torch.testing.assert_close(weights.reshape(-1), fixture["edge_attr"], **strict("edge_attr"))


def test_plain_softmax_would_fail_the_reference(reference, monkeypatch):
    _, fixture, model = reference
    monkeypatch.setattr(attention, "null_logit_softmax", lambda scores: scores.softmax(dim=-1))
    with torch.no_grad():
        logits, _ = model(fixture["feats"])
    assert not torch.allclose(logits[0], fixture["logits"][0], **GNN_TOL["logits"])


# --- null-logit attention ----------------------------------------------------

def test_null_logit_softmax_is_softmax_with_an_extra_zero_score_dropped():
    scores = torch.randn(2, 5, 7, dtype=torch.float64) * 4
    with_null = torch.cat([scores, torch.zeros(2, 5, 1, dtype=torch.float64)], dim=-1)
    expected = with_null.softmax(dim=-1)[..., :-1]
    torch.testing.assert_close(null_logit_softmax(scores), expected)


def test_null_logit_weights_of_a_node_sum_to_z_over_one_plus_z():
    scores = torch.randn(3, 6, 6, dtype=torch.float64)
    total = scores.exp().sum(dim=-1)
    torch.testing.assert_close(null_logit_softmax(scores).sum(dim=-1), total / (1 + total))


def test_null_logit_softmax_stays_finite_for_extreme_scores():
    scores = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
    weights = null_logit_softmax(scores)
    assert torch.isfinite(weights).all()
    torch.testing.assert_close(weights[0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(weights[1], torch.zeros(3))


def test_attention_dropout_is_fixed_at_0_1():
    model = build_mpn(small_params(dropout_1=0.5, dropout_2=0.5, dropout_mlp=0.5), 32)
    assert model.gnn_model["node_model"].layers[0].att.dropout.p == 0.1


def test_attention_linears_are_xavier_uniform_with_zero_bias():
    att = build_mpn(small_params(), 64).gnn_model["node_model"].layers[0].att
    bound = math.sqrt(6.0 / (64 + 64))
    for linear in (att.q_linear, att.k_linear, att.v_linear, att.out):
        assert linear.weight.abs().max() <= bound
        assert linear.weight.abs().max() > 0.9 * bound
        assert torch.equal(linear.bias, torch.zeros(64))


# --- aggregators -------------------------------------------------------------

def brute_force_messages(weights, values):
    """(H, n, n, d): the weighted message a_ij v_j of every edge j -> i."""
    return weights.unsqueeze(-1) * values.unsqueeze(-3)


def test_add_aggregator_sums_weighted_messages():
    weights, values = torch.rand(2, 5, 5), torch.randn(2, 5, 3)
    torch.testing.assert_close(aggregate_add(weights, values),
                               brute_force_messages(weights, values).sum(dim=-2))


def test_mean_aggregator_averages_over_the_n_incoming_edges():
    weights, values = torch.rand(2, 5, 5), torch.randn(2, 5, 3)
    torch.testing.assert_close(aggregate_mean(weights, values),
                               brute_force_messages(weights, values).mean(dim=-2))


def test_max_aggregator_takes_channelwise_max_of_weighted_messages(monkeypatch):
    weights, values = torch.rand(2, 9, 9), torch.randn(2, 9, 3)
    expected = brute_force_messages(weights, values).amax(dim=-2)
    torch.testing.assert_close(aggregate_max(weights, values), expected)
    monkeypatch.setattr(attention, "MAX_AGGREGATION_ELEMENTS", 2 * 9 * 3 * 2)
    torch.testing.assert_close(aggregate_max(weights, values), expected)


# --- graph -------------------------------------------------------------------

def test_correlation_edge_weights_are_pearson_with_negatives_zeroed():
    feats = torch.randn(6, 10, dtype=torch.float64)
    pearson = torch.corrcoef(feats)
    torch.testing.assert_close(correlation_edge_weights(feats), pearson.clamp_min(0).float())


def test_edge_weights_multiply_attention_only_with_mult_attr(monkeypatch):
    seen = []
    original = attention.MultiHeadDotProduct.attend

    def spy(self, queries, keys, values, edge_weights):
        seen.append(edge_weights)
        return original(self, queries, keys, values, edge_weights)

    monkeypatch.setattr(attention.MultiHeadDotProduct, "attend", spy)
    feats = torch.randn(6, 32)
    build_mpn(small_params(mult_attr=0), 32).eval()(feats)
    build_mpn(small_params(mult_attr=1), 32).eval()(feats)
    assert seen[0] is None
    torch.testing.assert_close(seen[1], correlation_edge_weights(feats))


# --- properties --------------------------------------------------------------

def test_permuting_the_batch_permutes_the_output():
    torch.manual_seed(0)
    model = build_mpn(load_layouts()["gnn_cars"]["gnn_params"], 512).eval()
    feats = torch.nn.functional.normalize(torch.randn(54, 512), dim=1)
    permutation = torch.randperm(54)
    with torch.no_grad():
        logits, out = model(feats)
        logits_permuted, out_permuted = model(feats[permutation])
    torch.testing.assert_close(logits_permuted[0], logits[0][permutation], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_permuted[0], out[0][permutation], atol=1e-6, rtol=1e-5)


def test_a_batch_of_one_sample_works():
    model = build_mpn(small_params(mult_attr=1), 32).eval()
    logits, feats = model(torch.randn(1, 32))
    assert logits[0].shape == (1, 100) and feats[0].shape == (1, 32)
    assert torch.isfinite(logits[0]).all()


def test_a_batch_of_1000_samples_works():
    torch.manual_seed(0)
    model = build_mpn(load_layouts()["gnn_cub"]["gnn_params"], 512)
    logits, feats = model(torch.randn(1000, 512))
    (logits[0].sum() + feats[0].sum()).backward()
    assert logits[0].shape == (1000, 100) and torch.isfinite(logits[0]).all()


SWITCHES = [
    {}, {"aggregator": "mean"}, {"aggregator": "max"}, {"mult_attr": 1},
    {"attention": 0}, {"mlp": 0}, {"norm1": 0}, {"norm2": 0}, {"res1": 0}, {"res2": 0},
    {"cat": 1, "num_layers": 3}, {"every": 1, "num_layers": 3}, {"neck": 0},
    {"red": 4}, {"num_layers": 2, "num_heads": 4, "aggregator": "max", "mult_attr": 1},
]


def switches_id(switches):
    return "-".join(f"{key}={value}" for key, value in switches.items()) or "default"


@pytest.mark.parametrize("switches", SWITCHES, ids=switches_id)
def test_every_aggregator_and_ablation_runs_forward_and_backward(switches):
    torch.manual_seed(0)
    model = build_mpn(small_params(**switches), 64).train()
    logits, feats = model(torch.randn(12, 64, requires_grad=True))
    loss = sum(l.logsumexp(dim=1).mean() for l in logits) + sum(f.sum() for f in feats)
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)


@pytest.mark.parametrize("switch, removed", [
    ("attention", "att."), ("mlp", "linear1."), ("mlp", "linear2."),
    ("norm1", "norm1."), ("norm2", "norm2."),
])
def test_switching_a_part_off_removes_its_parameters(switch, removed):
    keys = build_mpn(small_params(**{switch: 0}), 32).state_dict().keys()
    assert not any(f".{removed}" in key for key in keys)


def test_switching_residuals_off_feeds_only_the_branch():
    torch.manual_seed(0)
    model = build_mpn(small_params(res1=0, res2=0, norm1=0, norm2=0), 32).eval()
    layer = model.gnn_model["node_model"].layers[0]
    feats = torch.randn(5, 32)
    expected = layer.linear2(torch.relu(layer.linear1(layer.att(feats))))
    torch.testing.assert_close(layer(feats), expected)


def test_switched_off_branch_is_the_identity_as_in_the_authors_mlp_0():
    torch.manual_seed(0)
    model = build_mpn(small_params(attention=0, mlp=0, norm1=0, norm2=0), 32).eval()
    feats = torch.randn(5, 32)
    torch.testing.assert_close(model.gnn_model["node_model"].layers[0](feats), 4 * feats)


def test_cat_concatenates_the_outputs_of_all_layers():
    torch.manual_seed(0)
    model = build_mpn(small_params(cat=1, num_layers=3), 32).eval()
    outputs = []
    for layer in model.gnn_model["node_model"].layers:
        layer.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    logits, feats = model(torch.randn(6, 32), output_option="norm")
    assert len(logits) == len(feats) == 1 and logits[0].shape == (6, 100)
    torch.testing.assert_close(feats[0], torch.cat(outputs, dim=1))


def test_every_gives_one_classifier_and_output_per_layer():
    torch.manual_seed(0)
    model = build_mpn(small_params(every=1, num_layers=3), 32).eval()
    outputs = []
    for layer in model.gnn_model["node_model"].layers:
        layer.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    logits, feats = model(torch.randn(6, 32), output_option="norm")
    assert len(model.fc) == len(model.bottleneck) == len(logits) == len(feats) == 3
    for ours, layer_output in zip(feats, outputs):
        torch.testing.assert_close(ours, layer_output)


def test_cat_and_every_together_are_rejected():
    with pytest.raises(UserInputError, match="every"):
        build_mpn(small_params(cat=1, every=1, num_layers=2), 32)


def test_dim_red_exists_even_when_red_is_1():
    assert build_mpn(small_params(red=1), 64).dim_red.weight.shape == (64, 64)
    assert build_mpn(small_params(red=4), 64).dim_red.weight.shape == (16, 64)


def test_neck_classifier_is_frozen_zero_bias_batchnorm_and_biasless_linear():
    torch.manual_seed(0)
    model = build_mpn(small_params(neck=1), 512)
    neck, fc = model.bottleneck[0], model.fc[0]
    assert torch.equal(neck.weight, torch.ones(512)) and torch.equal(neck.bias, torch.zeros(512))
    assert not neck.bias.requires_grad and fc.bias is None
    assert abs(fc.weight.std().item() - 0.001) < 1e-4


def test_classifier_without_neck_is_a_linear_with_bias():
    model = build_mpn(small_params(neck=0), 32)
    assert model.bottleneck is None and model.fc[0].bias is not None


def test_plain_features_are_normalised_before_the_neck_batchnorm():
    torch.manual_seed(0)
    model = build_mpn(small_params(), 32).eval()
    model.bottleneck[0].running_mean.normal_()
    feats = torch.randn(6, 32)
    _, plain = model(feats, output_option="plain")
    _, raw = model(feats, output_option="norm")
    _, necked = model(feats, output_option="neck")
    torch.testing.assert_close(plain[0], torch.nn.functional.normalize(raw[0], dim=1))
    torch.testing.assert_close(necked[0], model.bottleneck[0](raw[0]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_stays_finite_with_large_norm_inputs(dtype):
    torch.manual_seed(0)
    model = build_mpn(load_layouts()["gnn_cars"]["gnn_params"], 512).train()
    feats = torch.randn(54, 512) * 1e3
    att = model.gnn_model["node_model"].layers[0].att
    with torch.no_grad():
        queries = att.q_linear(model.dim_red(feats))
    # The scores of these inputs are far beyond float16's range (65504).
    assert (queries @ queries.t()).abs().max() / math.sqrt(att.head_dim) > 1e6
    with torch.autocast("cpu", dtype=dtype):
        logits, out = model(feats)
    assert logits[0].dtype == dtype
    assert torch.isfinite(logits[0]).all() and torch.isfinite(out[0]).all()
    (logits[0].float().logsumexp(dim=1).mean() + out[0].float().sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
