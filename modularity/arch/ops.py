"""The one list of operations the architecture registry understands, shared by graph, lesions and
feature visualisation.

Each traced fx node is classified by :func:`classify` into one role:

* ``weight``: ``nn.Linear`` / ``nn.Conv2d`` (grouped and depthwise included): its output channels are units.
* ``norm``: batch norm (``BatchNorm1d/2d``), ``LayerNorm`` over the feature dimension and ``GroupNorm``:
  unit i in, unit i out; their per-unit factor is folded into the graph's edges (``fold_batchnorm``).
* ``activation``: elementwise non-linearities (modules, ``torch``/``F`` functions or tensor methods);
  the post-activation value of a layer is the output of the activation that follows it.
* ``pass``: channel-preserving operations: pooling, dropout, identity, flatten / view / reshape (only
  towards a dense layer or the output), spatial means.
* ``add``: residual additions (channels aligned); ``cat``: concatenation along the channel dimension
  (each channel of the result maps to its source); ``dead``: shape queries (``size``, ``dim``, ``shape``).

Anything else raises :class:`~modularity.errors.UnsupportedModelError` naming the operation.
"""

from __future__ import annotations

import operator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import fx, nn

Role = Literal["weight", "norm", "activation", "pass", "reshape", "add", "cat", "dead", "output", "input",
               "unsupported"]

WEIGHT_MODULES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)
NORM_MODULES: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
BATCHNORM_MODULES: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d)
ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh,
    nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.PReLU,
)
PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity,
)
RESHAPE_MODULES: tuple[type[nn.Module], ...] = (nn.Flatten,)
ACTIVATION_FUNCTIONS = {
    torch.relu, torch.relu_, F.relu, F.relu_, F.relu6, F.gelu, F.silu, F.mish, F.elu, F.selu, F.celu,
    F.leaky_relu, F.hardtanh, F.hardswish, F.hardsigmoid, F.softplus, torch.tanh, F.tanh, torch.sigmoid,
    F.sigmoid,
}
ACTIVATION_METHODS = {"relu", "relu_", "tanh", "tanh_", "sigmoid", "sigmoid_"}
PASS_FUNCTIONS = {
    F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
    F.dropout, F.dropout1d, F.dropout2d,
}
RESHAPE_FUNCTIONS = {torch.flatten}
RESHAPE_METHODS = {"flatten", "view", "reshape"}
PASS_METHODS = {"contiguous", "clone", "detach"}
ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
ADD_METHODS = {"add", "add_"}
DEAD_METHODS = {"size", "dim"}
DEAD_FUNCTIONS = {getattr, len}

#: Elementwise modules (used by the lesion engine's fast path, which also needs them 1-Lipschitz).
ELEMENTWISE_1LIP: tuple[type[nn.Module], ...] = (nn.ReLU, nn.Dropout, nn.Identity)


def op_name(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """A readable name of what a node does (``Upsample ('up')``, ``torch.cat``, ``.permute``)."""
    if node.op == "call_module":
        return f"{type(modules[node.target]).__name__} ({node.target!r})"
    if node.op == "call_method":
        return f"tensor method .{node.target}"
    return f"function {getattr(node.target, '__name__', str(node.target))!r}"


def _mean_keeps_channels(node: fx.Node) -> bool:
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = (dims,) if isinstance(dims, int) else dims
    return isinstance(dims, (tuple, list)) and all(isinstance(d, int) and d >= 2 for d in dims)


def cat_dim_is_channels(node: fx.Node) -> bool:
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    return dim == 1


def classify(node: fx.Node, modules: dict[str, nn.Module]) -> Role:
    """The role of one fx node (module docstring)."""
    if node.op == "placeholder":
        return "input"
    if node.op == "output":
        return "output"
    if node.op == "get_attr":
        return "dead"
    if node.op == "call_module":
        mod = modules[node.target]
        if isinstance(mod, WEIGHT_MODULES):
            return "weight"
        if isinstance(mod, NORM_MODULES):
            return "norm"
        if isinstance(mod, ACTIVATION_MODULES):
            return "activation"
        if isinstance(mod, PASS_MODULES):
            return "pass"
        if isinstance(mod, RESHAPE_MODULES):
            return "reshape"
        return "unsupported"
    if node.op == "call_function":
        t = node.target
        if t in ACTIVATION_FUNCTIONS:
            return "activation"
        if t in PASS_FUNCTIONS:
            return "pass"
        if t in RESHAPE_FUNCTIONS:
            return "reshape"
        if t in ADD_FUNCTIONS:
            return "add"
        if t is torch.cat:
            return "cat" if cat_dim_is_channels(node) else "unsupported"
        if t is torch.mean:
            return "pass" if _mean_keeps_channels(node) else "unsupported"
        if t in DEAD_FUNCTIONS:
            return "dead"
        if t is operator.getitem and node.args and isinstance(node.args[0], fx.Node) and \
                classify(node.args[0], modules) == "dead":
            return "dead"
        return "unsupported"
    if node.op == "call_method":
        t = node.target
        if t in ACTIVATION_METHODS:
            return "activation"
        if t in PASS_METHODS:
            return "pass"
        if t in RESHAPE_METHODS:
            return "reshape"
        if t in ADD_METHODS:
            return "add"
        if t == "mean":
            return "pass" if _mean_keeps_channels(node) else "unsupported"
        if t in DEAD_METHODS:
            return "dead"
        return "unsupported"
    return "unsupported"


#: One row per supported operation kind, for docs/own-network.md (kept in sync by a test).
SUPPORTED_TABLE = (
    ("nn.Linear, nn.Conv2d (any groups, incl. depthwise)", "weight layer: its output channels are units"),
    ("BatchNorm1d, BatchNorm2d", "folded: scale gamma/sqrt(var+eps) multiplies the edges (fold_batchnorm=True)"),
    ("LayerNorm (over features), GroupNorm", "unit i -> unit i; |gamma| folded like batch norm; the per-example "
     "centring/scaling is not an edge"),
    ("ReLU, ReLU6, LeakyReLU, ELU, SELU, CELU, GELU, SiLU, Mish, Sigmoid, Tanh, Hardtanh, Hardswish, "
     "Hardsigmoid, Softplus, PReLU (module, torch.* / F.* function or tensor method)",
     "activation: its output is the layer's post-activation value"),
    ("Max/Avg pooling (1d/2d, adaptive), Dropout*, Identity, mean over spatial dims", "channel-preserving"),
    ("Flatten, torch.flatten, .view, .reshape", "channel-preserving towards a dense layer or the output"),
    ("+, torch.add, .add (residual)", "channels aligned: a producer reaches every reader of the sum"),
    ("torch.cat(dim=1)", "each channel of the result maps to its source"),
)
