"""Graphification: a trained network's weights as a weighted, undirected graph of its units.

The paper (section 2) partitions a network from its weights alone. This module turns a model into a
:class:`WeightGraph`: a symmetric sparse adjacency over the units that :mod:`modularity.layers` lists,
plus a unit table that addresses every vertex as ``(layer, index)``.

* **MLP** (METHODS.md 2.1): every unit, inputs and outputs included, is a vertex; the edge between unit
  i of one layer and unit j of the next is ``|W[j, i]|``; biases are ignored.
* **CNN** (METHODS.md 2.2, 2.3): every output channel of every conv layer is a vertex; inputs, dense
  layers and outputs are not. The edge between channel i of a producer conv and channel j of the conv
  that reads it is a norm of the kernel slice ``K[j, i]``: the entry-wise L1 norm (the paper's text,
  default) or the induced matrix 1-norm ``np.linalg.norm(K[j, i], 1)`` that the reference code computed
  (``conv_norm="matrix1"``, METHODS.md 9.1). Max-pooling, ReLU, dropout and other channel-wise
  operations keep channel identity and are passed through.
* **Batch norm** (``fold_batchnorm=True``, the paper's text): the per-channel factor
  ``s = gamma / sqrt(running_var + eps)`` multiplies the weights of the linear map it sits on, so an
  edge is the magnitude of the effective weight between two units' activations. A BN reading a conv's
  output directly (torchvision ``conv -> bn -> relu``) scales that conv's output channels (its incoming
  edges, standard BN folding); a BN elsewhere between two convs (the CIFAR VGG's
  ``conv -> relu -> [pool] -> bn -> conv``) scales the channels it carries on their way to the next conv
  (their outgoing edges). The absolute value is taken after scaling. ``fold_batchnorm=False`` ignores
  batch norm, as the reference's VGG graphs did (METHODS.md 9.2).
* **Residual connections** (torchvision ResNet, METHODS.md 2.3): the dataflow is traced with
  ``torch.fx`` and followed through additions, so a conv whose output enters a residual sum is connected
  to every conv that reads that sum (directly or along later identity shortcuts), with the consumer's
  kernel as the edge weight. The shortcut's 1x1 ``downsample`` conv is a conv like any other: its
  channels are vertices, connected from the producers of the block input and onward to the readers of
  the block output. Unlike the reference, a residual-stream channel is not copied once per consumer:
  vertices are conv output channels, each exactly once (METHODS.md 9.21).

Anything that mixes channels in a way this graph cannot express (concatenation, grouped/depthwise
convs, an unknown module or function between two convs) raises :class:`UnsupportedModelError` naming it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from torch import fx, nn

from . import validate
from .errors import UnsupportedModelError
from .layers import LayerSpec, layer_specs

ConvNorm = Literal["entrywise", "matrix1"]
CONV_NORMS: tuple[str, ...] = ("entrywise", "matrix1")


@dataclass(frozen=True, eq=False)
class Block:
    """The non-negative weights from every unit of layer ``src`` to every unit of layer ``dst``.

    ``weights`` has shape ``(width(src), width(dst))``. The shuffle null (:mod:`modularity.partition`)
    permutes each block independently.
    """

    src: str
    dst: str
    weights: np.ndarray


@dataclass(eq=False)
class WeightGraph:
    """A network as an undirected weighted graph.

    Attributes:
        adjacency: symmetric ``scipy.sparse`` CSR matrix (float64, non-negative, zero diagonal) over all
            vertices; zero (e.g. pruned) weights are absent edges.
        units: one row per vertex, in vertex order, with columns ``layer`` (str) and ``index`` (int, the
            unit's index within its layer).
        layers: the :class:`LayerSpec` of every layer of vertices, in vertex order.
        blocks: the weight blocks between layers that make up ``adjacency``.
        params: how the graph was made (``conv_norm``, ``fold_batchnorm``, ``model``).
    """

    adjacency: sparse.csr_matrix
    units: pd.DataFrame
    layers: list[LayerSpec]
    blocks: list[Block] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_vertices(self) -> int:
        return self.adjacency.shape[0]

    @property
    def offsets(self) -> dict[str, int]:
        """First vertex of every layer."""
        starts = np.cumsum([0] + [s.width for s in self.layers])
        return {s.name: int(o) for s, o in zip(self.layers, starts, strict=False)}

    def layer_slice(self, layer: str) -> slice:
        """The vertices of one layer, as a slice into the vertex order."""
        spec = self.layer(layer)
        start = self.offsets[layer]
        return slice(start, start + spec.width)

    def layer(self, name: str) -> LayerSpec:
        for spec in self.layers:
            if spec.name == name:
                return spec
        raise UnsupportedModelError(f"no layer {name!r} in the graph; layers: {', '.join(s.name for s in self.layers)}")

    def degrees(self) -> np.ndarray:
        return np.asarray(self.adjacency.sum(axis=1)).ravel()

    def isolated(self) -> np.ndarray:
        """Boolean mask of vertices without any edge (removed before clustering, label -1)."""
        return self.degrees() == 0

    @classmethod
    def from_blocks(cls, layers: list[LayerSpec], blocks: list[Block], params: dict[str, Any] | None = None
                    ) -> WeightGraph:
        """Assemble the symmetric adjacency ``U + U^T`` from blocks between layers."""
        return cls(adjacency_from_blocks(layers, blocks), unit_table(layers), list(layers), list(blocks),
                   dict(params or {}))


def unit_table(layers: list[LayerSpec]) -> pd.DataFrame:
    """The ``(layer, index)`` address of every vertex, in vertex order."""
    return pd.DataFrame({
        "layer": np.repeat([s.name for s in layers], [s.width for s in layers]).astype(object),
        "index": np.concatenate([np.arange(s.width, dtype=np.int64) for s in layers]) if layers
        else np.zeros(0, np.int64),
    })


def adjacency_from_blocks(layers: list[LayerSpec], blocks: list[Block]) -> sparse.csr_matrix:
    """Symmetric CSR adjacency with each block placed at (src rows, dst columns) and mirrored."""
    starts = np.cumsum([0] + [s.width for s in layers])
    offset = {s.name: int(o) for s, o in zip(layers, starts, strict=False)}
    n = int(starts[-1])
    rows, cols, vals = [], [], []
    for b in blocks:
        r, c = np.nonzero(b.weights)
        rows.append(r + offset[b.src])
        cols.append(c + offset[b.dst])
        vals.append(np.asarray(b.weights[r, c], dtype=np.float64))
    if rows:
        r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    else:
        r = c = np.zeros(0, np.int64)
        v = np.zeros(0)
    upper = sparse.coo_matrix((v, (r, c)), shape=(n, n))
    adj = (upper + upper.T).tocsr()
    adj.sum_duplicates()
    adj.eliminate_zeros()
    return adj.astype(np.float64)


# --------------------------------------------------------------------------------------------------
# Public entry point


def graph_of(model: nn.Module, *, conv_norm: ConvNorm = "entrywise", fold_batchnorm: bool = True) -> WeightGraph:
    """The weight graph of a supported model (MLP, small CNN, CIFAR VGG, torchvision VGG/ResNet).

    Args:
        model: the network (its current weights are read; nothing is modified).
        conv_norm: ``"entrywise"`` (sum of |k| over the kernel slice; the paper's text) or ``"matrix1"``
            (the reference's induced matrix 1-norm, max column sum; METHODS.md 9.1).
        fold_batchnorm: fold batch-norm scales into the edges (the paper's text); ``False`` reproduces
            the reference's VGG graphs (METHODS.md 9.2).
    """
    if conv_norm not in CONV_NORMS:
        raise UnsupportedModelError(f"unknown conv_norm {conv_norm!r}; choose from {', '.join(CONV_NORMS)}")
    validate.finite_model(model)
    if type(model).__module__.startswith("torchvision"):
        from . import torchvision_layers  # noqa: F401  (registers the torchvision layouts)
    specs = layer_specs(model)
    kinds = {s.kind for s in specs}
    params = {"conv_norm": conv_norm, "fold_batchnorm": bool(fold_batchnorm), "model": type(model).__name__}
    if "conv" in kinds:
        if kinds != {"conv"}:
            raise UnsupportedModelError(f"{type(model).__name__} mixes conv and dense unit layers; only one kind "
                                        "per graph is supported")
        blocks = _conv_blocks(model, specs, conv_norm, fold_batchnorm)
    else:
        blocks = _dense_blocks(model, specs)
    return WeightGraph.from_blocks(specs, blocks, params)


# --------------------------------------------------------------------------------------------------
# MLPs


def _dense_blocks(model: nn.Module, specs: list[LayerSpec]) -> list[Block]:
    """|W|^T between consecutive layers of units (biases ignored)."""
    blocks = []
    for prev, spec in zip(specs, specs[1:], strict=False):
        module = model.get_submodule(spec.weight) if spec.weight else None
        if not isinstance(module, nn.Linear):
            raise UnsupportedModelError(f"layer {spec.name!r} of {type(model).__name__} is not fed by an nn.Linear "
                                        f"(got {type(module).__name__})")
        w = module.weight.detach().to("cpu", torch.float64).numpy()
        if w.shape != (spec.width, prev.width):
            raise UnsupportedModelError(f"weight of {spec.weight!r} has shape {tuple(w.shape)}, expected "
                                        f"({spec.width}, {prev.width})")
        blocks.append(Block(prev.name, spec.name, np.abs(w).T.copy()))
    return blocks


# --------------------------------------------------------------------------------------------------
# Conv nets: kernel norms, batch norm, dataflow


def kernel_norms(weight: torch.Tensor | np.ndarray, conv_norm: ConvNorm = "entrywise") -> np.ndarray:
    """Per-(input, output) channel norm of a conv kernel ``(out, in, kh, kw)``, as an ``(in, out)`` array.

    ``entrywise`` = sum of |k| over the slice; ``matrix1`` = ``np.linalg.norm(|K[o, i]|, 1)``, the
    largest column sum of the (kh, kw) slice (rows = kernel height, as in both Keras and PyTorch).
    """
    w = np.abs(weight.detach().to("cpu", torch.float64).numpy() if isinstance(weight, torch.Tensor)
               else np.asarray(weight, dtype=np.float64))
    if w.ndim != 4:
        raise UnsupportedModelError(f"expected a 4-d conv kernel, got shape {w.shape}")
    if conv_norm == "entrywise":
        out = w.sum(axis=(2, 3))
    elif conv_norm == "matrix1":
        out = w.sum(axis=2).max(axis=2)
    else:
        raise UnsupportedModelError(f"unknown conv_norm {conv_norm!r}; choose from {', '.join(CONV_NORMS)}")
    return out.T.copy()


def batchnorm_scale(bn: nn.modules.batchnorm._BatchNorm) -> np.ndarray:
    """The per-channel factor ``gamma / sqrt(running_var + eps)`` of an (eval-mode) batch norm."""
    if bn.running_var is None:
        raise UnsupportedModelError("batch norm without running statistics cannot be folded; "
                                    "use fold_batchnorm=False")
    var = bn.running_var.detach().to("cpu", torch.float64).numpy()
    gamma = bn.weight.detach().to("cpu", torch.float64).numpy() if bn.weight is not None else np.ones_like(var)
    return gamma / np.sqrt(var + bn.eps)


# Modules and functions that act on each channel separately (or only reshape), so a channel keeps its
# identity through them.
_PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten,
)
_PASS_FUNCTIONS = {
    operator.add, operator.iadd, torch.add, torch.relu, torch.flatten, nn.functional.relu,
    nn.functional.max_pool2d, nn.functional.avg_pool2d, nn.functional.adaptive_avg_pool2d,
    nn.functional.dropout,
}
_PASS_METHODS = {"relu", "relu_", "flatten", "view", "reshape", "add", "add_", "contiguous"}
_DEAD_METHODS = {"size", "dim"}  # shape queries: no channel flows on


@dataclass(frozen=True)
class ConvEdge:
    """``producer``'s output channels feed ``consumer``; ``scale`` multiplies producer channels on the way."""

    producer: str
    consumer: str
    scale: np.ndarray | None  # per producer channel, from batch norms on the path; None = ones


@dataclass(frozen=True)
class ConvTrace:
    """The conv dataflow of a model traced with ``torch.fx``."""

    convs: list[str]  # conv module names in execution order
    edges: list[ConvEdge]
    own_bn: dict[str, str]  # conv name -> the BatchNorm2d that reads its output directly
    activation: dict[str, str]  # conv name -> the ReLU module (used once) that gives its post-activation


def trace_convs(model: nn.Module, fold_batchnorm: bool = True) -> ConvTrace:
    """Trace a conv net's dataflow: which conv's channels reach which conv, through what.

    Unsupported modules or functions between two convs raise :class:`UnsupportedModelError` naming them.
    """
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types for untraceable control flow
        raise UnsupportedModelError(f"cannot trace {type(model).__name__} with torch.fx: "
                                    f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    modules = dict(gm.named_modules())
    module_uses: dict[str, int] = {}
    convs: list[str] = []
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module_uses[node.target] = module_uses.get(node.target, 0) + 1
            mod = modules[node.target]
            if isinstance(mod, nn.Conv2d):
                if mod.groups != 1:
                    raise UnsupportedModelError(f"grouped/depthwise convolution {node.target!r} "
                                                f"(groups={mod.groups}) is not supported")
                convs.append(node.target)
            elif isinstance(mod, nn.Conv1d | nn.Conv3d | nn.ConvTranspose2d):
                raise UnsupportedModelError(f"unsupported layer type {type(mod).__name__} ({node.target!r})")

    def is_module(node: fx.Node, cls: type | tuple[type, ...]) -> bool:
        return node.op == "call_module" and isinstance(modules[node.target], cls)

    own_bn: dict[str, str] = {}
    activation: dict[str, str] = {}
    conv_nodes = [n for n in gm.graph.nodes if is_module(n, nn.Conv2d)]
    for node in conv_nodes:
        users = list(node.users)
        last = node
        if len(users) == 1 and is_module(users[0], nn.BatchNorm2d):
            own_bn[node.target] = users[0].target
            last = users[0]
        nxt = list(last.users)
        if len(nxt) == 1 and is_module(nxt[0], nn.ReLU) and module_uses[nxt[0].target] == 1:
            activation[node.target] = nxt[0].target

    edges: dict[tuple[str, str], np.ndarray | None] = {}
    order: list[tuple[str, str]] = []
    for node in conv_nodes:
        producer = node.target
        width = modules[producer].out_channels
        stack: list[tuple[fx.Node, np.ndarray | None]] = [(u, None) for u in node.users]
        while stack:
            cur, scale = stack.pop()
            if cur.op == "output":
                continue
            if cur.op == "call_module":
                mod = modules[cur.target]
                if isinstance(mod, nn.Conv2d):
                    key = (producer, cur.target)
                    if key not in edges:
                        order.append(key)
                        edges[key] = scale
                    else:  # several paths: their contributions add up
                        prev = edges[key]
                        edges[key] = (np.ones(width) if prev is None else prev) + \
                            (np.ones(width) if scale is None else scale)
                    continue
                if isinstance(mod, nn.Linear):
                    continue  # dense layers are not vertices (METHODS.md 2.2)
                if isinstance(mod, nn.BatchNorm2d):
                    if fold_batchnorm and own_bn.get(producer) != cur.target:
                        s = batchnorm_scale(mod)
                        scale = s if scale is None else scale * s
                elif not isinstance(mod, _PASS_MODULES):
                    raise UnsupportedModelError(f"unsupported layer type {type(mod).__name__} ({cur.target!r}) "
                                                f"after conv {producer!r}")
            elif cur.op == "call_function":
                if cur.target not in _PASS_FUNCTIONS:
                    name = getattr(cur.target, "__name__", str(cur.target))
                    raise UnsupportedModelError(f"unsupported operation {name!r} after conv {producer!r} "
                                                "(only channel-wise operations and residual additions are supported)")
            elif cur.op == "call_method":
                if cur.target in _DEAD_METHODS:
                    continue
                if cur.target not in _PASS_METHODS:
                    raise UnsupportedModelError(f"unsupported tensor method {cur.target!r} after conv {producer!r}")
            stack.extend((u, scale) for u in cur.users)
    return ConvTrace(convs, [ConvEdge(p, c, edges[(p, c)]) for p, c in order], own_bn, activation)


def _conv_blocks(model: nn.Module, specs: list[LayerSpec], conv_norm: ConvNorm, fold_batchnorm: bool) -> list[Block]:
    trace = trace_convs(model, fold_batchnorm=fold_batchnorm)
    layer_of = {s.weight: s for s in specs}
    for name in trace.convs:
        if name not in layer_of:
            raise UnsupportedModelError(f"conv {name!r} of {type(model).__name__} is not in its layer layout")
    blocks = []
    for edge in trace.edges:
        consumer = model.get_submodule(edge.consumer)
        w = kernel_norms(consumer.weight, conv_norm)  # (in, out)
        if fold_batchnorm and edge.consumer in trace.own_bn:
            w = w * batchnorm_scale(model.get_submodule(trace.own_bn[edge.consumer]))[None, :]
        if edge.scale is not None:
            w = w * edge.scale[:, None]
        src, dst = layer_of[edge.producer], layer_of[edge.consumer]
        if w.shape != (src.width, dst.width):
            raise UnsupportedModelError(f"conv {edge.consumer!r} reads {w.shape[0]} channels but {edge.producer!r} "
                                        f"gives {src.width}")
        blocks.append(Block(src.name, dst.name, np.abs(w)))
    return blocks
