"""The message passing network (MPN) of SPEC 5.

Module and parameter names follow the authors' ``GNNReID`` so that their MPN
weights load with ``strict=True``:
``dim_red``, ``gnn_model.node_model.layers.{i}.{att,linear1,linear2,norm1,norm2}``,
``bottleneck.{i}`` (BatchNorm1d neck) and ``fc.{i}`` (classifier).
"""
import torch
from torch import nn
import torch.nn.functional as F

from net.attention import MultiHeadDotProduct
from net.graph import correlation_edge_weights
from net.heads import make_classifier, make_neck
from utils.errors import UserInputError

FEED_FORWARD_EXPANSION = 4


class MessagePassingLayer(nn.Module):
    """One post-norm transformer layer over the batch graph (SPEC 5.3).

    h = norm1(h + dropout_1(attention(h)))
    h = norm2(h + dropout_2(linear2(dropout_mlp(relu(linear1(h))))))

    Ablations: ``norm1``/``norm2`` = 0 drop the LayerNorm, ``res1``/``res2``
    = 0 drop the residual ``h +``, ``attention``/``mlp`` = 0 drop the branch's
    module. Quirk of the authors' code for ``mlp: 0``: the missing branch is
    the identity, so with the residual on the sublayer computes
    h + dropout(h). ``attention: 0`` (no such switch in their layer) follows
    the same rule.
    """

    def __init__(self, embed_dim, gnn):
        super().__init__()
        self.res1 = bool(gnn["res1"])
        self.res2 = bool(gnn["res2"])
        self.att = (MultiHeadDotProduct(embed_dim, gnn["num_heads"], gnn["aggregator"])
                    if gnn["attention"] else None)
        hidden_dim = FEED_FORWARD_EXPANSION * embed_dim
        self.linear1 = nn.Linear(embed_dim, hidden_dim) if gnn["mlp"] else None
        self.dropout = nn.Dropout(gnn["dropout_mlp"])
        self.linear2 = nn.Linear(hidden_dim, embed_dim) if gnn["mlp"] else None
        self.norm1 = nn.LayerNorm(embed_dim) if gnn["norm1"] else None
        self.norm2 = nn.LayerNorm(embed_dim) if gnn["norm2"] else None
        self.dropout1 = nn.Dropout(gnn["dropout_1"])
        self.dropout2 = nn.Dropout(gnn["dropout_2"])

    def forward(self, feats, edge_weights=None):
        attended = self.att(feats, edge_weights) if self.att is not None else feats
        return self._after_attention(feats, attended)

    def forward_projected(self, targets, projections, edge_weights=None):
        """The output rows of the nodes ``targets`` (..., t, d), given the
        attention's ``projections`` (``MultiHeadDotProduct.project``: the
        targets' queries, every node's keys and values, split into heads;
        None without attention) and the targets' rows of ``edge_weights`` (..., t, n).

        Everything after the attention is row-wise, so only the rows asked
        for are computed (``MPN.first_node_features``).
        """
        attended = (self.att.attend_heads(*projections, edge_weights, targets.dtype)
                    if self.att is not None else targets)
        return self._after_attention(targets, attended)

    def _after_attention(self, feats, attended):
        """The residual sublayers around the attention output and the feed-forward, row-wise."""
        feats = _residual_sublayer(feats, self.dropout1(attended), self.res1, self.norm1)
        transformed = self._feed_forward(feats) if self.linear1 is not None else feats
        return _residual_sublayer(feats, self.dropout2(transformed), self.res2, self.norm2)

    def _feed_forward(self, feats):
        return self.linear2(self.dropout(F.relu(self.linear1(feats))))


def _residual_sublayer(feats, branch, residual, norm):
    """norm(feats + branch), each part optional."""
    feats = feats + branch if residual else branch
    return norm(feats) if norm is not None else feats


class MessagePassing(nn.Module):
    """The stack of layers; returns the output of every layer."""

    def __init__(self, embed_dim, gnn):
        super().__init__()
        self.layers = nn.ModuleList(
            MessagePassingLayer(embed_dim, gnn) for _ in range(gnn["num_layers"]))

    def forward(self, feats, edge_weights=None):
        outputs = []
        for layer in self.layers:
            feats = layer(feats, edge_weights)
            outputs.append(feats)
        return outputs


class MPN(nn.Module):
    """Message passing network on top of the backbone embeddings of a batch.

    ``forward(feats, output_option)`` returns ``(logits, features)``, two
    lists with one entry per classifier: one entry, or one per layer with
    ``every: 1``. ``features`` is, per ``output_option``:
    ``plain`` the L2-normalised features taken BEFORE the neck BatchNorm
    (the authors' choice), ``norm`` the raw features, ``neck`` the features
    after the neck BatchNorm (raw features when there is no neck).
    """

    def __init__(self, gnn_params, embed_dim):
        super().__init__()
        gnn = gnn_params["gnn"]
        classifier = gnn_params["classifier"]
        self.concatenate_layers = bool(gnn_params["cat"])
        self.classifier_per_layer = bool(gnn_params["every"])
        self.mult_attr = bool(gnn["mult_attr"])

        # The authors' dim_red Linear exists (and is trained) even for red: 1.
        reduced_dim = int(embed_dim / gnn_params["red"])
        self.dim_red = nn.Linear(embed_dim, reduced_dim)
        # Keys "gnn_model.node_model.*" of the authors' MetaLayer wrapper.
        self.gnn_model = nn.ModuleDict({"node_model": MessagePassing(reduced_dim, gnn)})

        num_layers = gnn["num_layers"]
        feature_dim = num_layers * reduced_dim if self.concatenate_layers else reduced_dim
        num_classifiers = num_layers if self.classifier_per_layer else 1
        num_classes = classifier["num_classes"]
        self.bottleneck = None
        if classifier["neck"]:
            self.bottleneck = nn.ModuleList(make_neck(feature_dim) for _ in range(num_classifiers))
        self.fc = nn.ModuleList(
            make_classifier(feature_dim, num_classes, bool(classifier["neck"]))
            for _ in range(num_classifiers))

    def forward(self, feats, output_option="plain"):
        # The graph weights come from the backbone embeddings (MPN input).
        edge_weights = correlation_edge_weights(feats) if self.mult_attr else None
        layer_outputs = self.gnn_model["node_model"](self.dim_red(feats), edge_weights)
        features = self._select_features(layer_outputs)
        necked = self._necked(features)
        logits = [fc(f) for fc, f in zip(self.fc, necked)]
        return logits, _output_features(features, necked, output_option)

    def item_projections(self, items):
        """``(reduced, projections)`` of every item, (n, d) each: its ``dim_red`` map
        and the first layer's attention projections of it (None without
        attention), for ``first_node_features``.

        These maps see one node at a time, so computing them once per item
        instead of once per graph node does the same work for a graph size
        times fewer rows.
        """
        reduced = self.dim_red(items)
        first_attention = self.gnn_model["node_model"].layers[0].att
        return reduced, first_attention.project_items(reduced) if first_attention is not None else None

    def first_node_features(self, items, item_projections, graphs, output_option="plain"):
        """``features`` of ``forward(items[graphs], output_option)``, first row of every graph only.

        ``graphs`` (graphs, n) indexes ``items``; ``item_projections`` is
        ``item_projections(items)``. Returns one (graphs, d') tensor per entry of
        the forward's ``features`` (no logits). The first layer gathers its
        per-item maps; layers before the last run on every row (row 0 of their
        output depends on all rows); the last layer computes row 0 alone.
        """
        edge_weights = correlation_edge_weights(_gather_rows(items, graphs)) if self.mult_attr else None
        layers = self.gnn_model["node_model"].layers
        reduced, projections = item_projections
        feats, first_rows = None, []
        for index, layer in enumerate(layers):
            targets = slice(0, 1) if index == len(layers) - 1 else slice(None)
            if index == 0:
                target_items = graphs[:, targets]
                inputs = _gather_rows(reduced, target_items)
                layer_projections = (None if projections is None else
                                     layer.att.gather_heads(projections, target_items, graphs))
            else:
                inputs = feats[:, targets]
                layer_projections = layer.att.project(inputs, feats) if layer.att is not None else None
            target_weights = edge_weights[:, targets] if edge_weights is not None else None
            feats = layer.forward_projected(inputs, layer_projections, target_weights)
            first_rows.append(feats[:, 0])
        features = self._select_features(first_rows)
        necked = self._necked(features) if output_option == "neck" else features
        return _output_features(features, necked, output_option)

    def _necked(self, features):
        if self.bottleneck is None:
            return features
        return [_over_nodes(bn, f) for bn, f in zip(self.bottleneck, features)]

    def _select_features(self, layer_outputs):
        if self.concatenate_layers:
            return [torch.cat(layer_outputs, dim=-1)]
        if self.classifier_per_layer:
            return layer_outputs
        return layer_outputs[-1:]


def _gather_rows(rows, index):
    """``rows[index]``, (*index.shape, d), by one ``index_select`` (faster than indexing)."""
    return rows.index_select(0, index.reshape(-1)).view(*index.shape, rows.shape[-1])


def _output_features(features, necked, output_option):
    """The features ``forward`` returns for ``output_option`` (see ``MPN``)."""
    if output_option == "plain":
        return [F.normalize(f, p=2, dim=-1) for f in features]
    if output_option == "norm":
        return features
    if output_option == "neck":
        return necked
    raise ValueError(f"unknown output_option {output_option!r}")


def _over_nodes(batch_norm, feats):
    """BatchNorm1d over the nodes of one graph (n, d) or of a batch of graphs (graphs, n, d)."""
    if feats.dim() == 2:
        return batch_norm(feats)
    return batch_norm(feats.reshape(-1, feats.shape[-1])).view(feats.shape)


def build_mpn(gnn_params, embed_dim):
    """The MPN of the validated ``models.gnn_params`` section on ``embed_dim`` inputs.

    ``pretrained_path`` is not read here: the trainer loads the weights.
    ``classifier.dropout_p`` and ``classifier.use_batchnorm`` are unused, as
    in the authors' model.
    """
    if gnn_params["cat"] and gnn_params["every"]:
        raise UserInputError(
            "models.gnn_params sets both cat: 1 and every: 1, which the authors' "
            "model cannot combine; set one of them to 0.")
    reduced_dim, num_heads = int(embed_dim / gnn_params["red"]), gnn_params["gnn"]["num_heads"]
    if reduced_dim < 1:
        raise UserInputError(f"models.gnn_params.red {gnn_params['red']} leaves the MPN no channel of the "
                             f"{embed_dim}-d embedding; use a red of at most {embed_dim} (the paper: 1).")
    if reduced_dim % num_heads:
        divisors = ", ".join(str(heads) for heads in (1, 2, 4, 8) if reduced_dim % heads == 0)
        raise UserInputError(
            f"models.gnn_params.gnn.num_heads is {num_heads}, which does not divide the {reduced_dim} "
            f"channels the MPN works on ({embed_dim}-d embedding / models.gnn_params.red "
            f"{gnn_params['red']}); choose a divisor of {reduced_dim} such as {divisors}.")
    return MPN(gnn_params, embed_dim)
