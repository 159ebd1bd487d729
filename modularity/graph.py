"""Graphification: a trained network's weights as a weighted, undirected graph of its units.

The paper (section 2) partitions a network from its weights alone. This module turns a model into a
:class:`WeightGraph`: a symmetric sparse adjacency over the units that :mod:`modularity.arch` lists,
plus a unit table that addresses every vertex as ``(layer, index)``.

* **MLP** (docs/methods.md §2.1): every unit, inputs and outputs included, is a vertex; the edge between unit
  i of one layer and unit j of the next is ``|W[j, i]|``; biases are ignored.
* **CNN** (docs/methods.md §2.2, 2.3): every output channel of every conv layer is a vertex; inputs, dense
  layers and outputs are not. The edge between channel i of a producer conv and channel j of the conv
  that reads it is a norm of the kernel slice ``K[j, i]``: the entry-wise L1 norm (the paper's text,
  default) or the induced matrix 1-norm ``np.linalg.norm(K[j, i], 1)`` that the reference code computed
  (``conv_norm="matrix1"``, docs/methods.md §9.1). Max-pooling, ReLU, dropout and other channel-wise
  operations keep channel identity and are passed through.
* **Batch norm** (``fold_batchnorm=True``, the paper's text): the per-channel factor
  ``s = gamma / sqrt(running_var + eps)`` multiplies the weights of the linear map it sits on, so an
  edge is the magnitude of the effective weight between two units' activations. A BN reading a conv's
  output directly (torchvision ``conv -> bn -> relu``) scales that conv's output channels (its incoming
  edges, standard BN folding); a BN elsewhere between two convs (the CIFAR VGG's
  ``conv -> relu -> [pool] -> bn -> conv``) scales the channels it carries on their way to the next conv
  (their outgoing edges). The absolute value is taken after scaling. ``fold_batchnorm=False`` ignores
  batch norm, as the reference's VGG graphs did (docs/methods.md §9.2).
* **Residual connections** (torchvision ResNet, docs/methods.md §2.3): the dataflow is traced with
  ``torch.fx`` and followed through additions, so a conv whose output enters a residual sum is connected
  to every conv that reads that sum (directly or along later identity shortcuts), with the consumer's
  kernel as the edge weight. The shortcut's 1x1 ``downsample`` conv is a conv like any other: its
  channels are vertices, connected from the producers of the block input and onward to the readers of
  the block output. Unlike the reference, a residual-stream channel is not copied once per consumer:
  vertices are conv output channels, each exactly once (docs/methods.md §9.21).

* **Concatenation** (DenseNet): each channel of ``torch.cat(..., dim=1)`` maps to its source, so a
  producer's channel i reaches a reader of the concatenation through the reader's input channel
  ``offset + i`` (a batch norm on the concatenation scales it by its factor at that position).
* **Grouped / depthwise convolutions** (MobileNet): edges only within groups.
* **Layer norm / group norm**: treated as unit i -> unit i; with ``fold_batchnorm=True`` their gain
  ``|gamma|`` is folded like a batch norm's factor. Their per-example centring and scaling couples all
  units of a layer through two statistics but is not a weight between two units, so it adds no edge.

Which layers exist and which operations connect them is the registry's business
(:mod:`modularity.arch`); anything it cannot express raises :class:`UnsupportedModelError` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from torch import nn

from . import validate
from .arch import LayerSpec, layout_of
from .arch.trace import Flow, Layout
from .choices import CONV_NORMS
from .errors import UnsupportedModelError

ConvNorm = Literal["entrywise", "matrix1"]


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
    """The weight graph of any model the registry (:mod:`modularity.arch`) can lay out.

    Args:
        model: the network (its current weights are read; nothing is modified).
        conv_norm: ``"entrywise"`` (sum of |k| over the kernel slice; the paper's text) or ``"matrix1"``
            (the reference's induced matrix 1-norm, max column sum; docs/methods.md §9.1).
        fold_batchnorm: fold batch-norm (and layer/group-norm gain) scales into the edges (the paper's
            text); ``False`` reproduces the reference's VGG graphs (docs/methods.md §9.2).
    """
    if conv_norm not in CONV_NORMS:
        raise UnsupportedModelError(f"unknown conv_norm {conv_norm!r}; choose from {', '.join(CONV_NORMS)}")
    validate.finite_model(model)
    layout = layout_of(model)
    if layout.flow_error is not None:
        raise UnsupportedModelError(layout.flow_error)
    specs = layout.specs
    params = {"conv_norm": conv_norm, "fold_batchnorm": bool(fold_batchnorm), "model": type(model).__name__}
    flows = layout.flows if layout.mode != "declared" else _declared_flows(specs)
    blocks = _blocks(model, layout, flows, conv_norm, fold_batchnorm)
    return WeightGraph.from_blocks(specs, blocks, params)


def _declared_flows(specs: list[LayerSpec]) -> list[Flow]:
    """A declared layout is a chain: each layer feeds the next (through its after-activation BN)."""
    return [Flow(prev.name, spec.name, 0, ((prev.batchnorm, 0),) if prev.batchnorm else ())
            for prev, spec in zip(specs, specs[1:], strict=False)]


# --------------------------------------------------------------------------------------------------
# Edge weights: |W| (dense), kernel norms (conv), norm scales


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


def conv_kernel_norms(conv: nn.Conv2d, conv_norm: ConvNorm = "entrywise") -> np.ndarray:
    """``(in_channels, out_channels)`` kernel norms; a grouped conv has edges only within its groups."""
    if conv.groups == 1:
        return kernel_norms(conv.weight, conv_norm)
    per_group = kernel_norms(conv.weight, conv_norm)  # (in / groups, out)
    g, cin, cout = conv.groups, conv.in_channels // conv.groups, conv.out_channels // conv.groups
    full = np.zeros((conv.in_channels, conv.out_channels))
    for k in range(g):
        full[k * cin:(k + 1) * cin, k * cout:(k + 1) * cout] = per_group[:, k * cout:(k + 1) * cout]
    return full


def batchnorm_scale(bn: nn.Module) -> np.ndarray:
    """The per-channel factor of a norm: ``gamma / sqrt(running_var + eps)`` for an (eval-mode) batch
    norm; ``gamma`` for layer / group norm (their per-example scaling is not a fixed weight)."""
    if isinstance(bn, (nn.LayerNorm, nn.GroupNorm)):
        n = bn.normalized_shape[0] if isinstance(bn, nn.LayerNorm) else bn.num_channels
        return bn.weight.detach().to("cpu", torch.float64).numpy().ravel() if bn.weight is not None else np.ones(n)
    if bn.running_var is None:
        raise UnsupportedModelError("batch norm without running statistics cannot be folded; "
                                    "use fold_batchnorm=False")
    var = bn.running_var.detach().to("cpu", torch.float64).numpy()
    gamma = bn.weight.detach().to("cpu", torch.float64).numpy() if bn.weight is not None else np.ones_like(var)
    return gamma / np.sqrt(var + bn.eps)


def _incoming(module: nn.Module, conv_norm: ConvNorm) -> np.ndarray:
    """``(inputs, outputs)`` magnitudes of a weight layer (biases ignored)."""
    if isinstance(module, nn.Conv2d):
        return conv_kernel_norms(module, conv_norm)
    w = module.weight.detach().to("cpu", torch.float64).numpy()
    return np.abs(w).T.copy()


def _blocks(model: nn.Module, layout: Layout, flows: list[Flow], conv_norm: ConvNorm, fold: bool) -> list[Block]:
    """One block per (producer, consumer), paths summed; BN folded as the module docstring says."""
    width = {s.name: s.width for s in layout.specs}
    weight_of = {s.name: s.weight for s in layout.specs}
    # (src, dst) -> {offset: summed path scale (None = ones, single path without norms)}
    paths: dict[tuple[str, str], dict[int, np.ndarray | None]] = {}
    for f in flows:
        scale: np.ndarray | None = None
        if fold:
            for name, off in f.norms:
                s = batchnorm_scale(model.get_submodule(name))[off:off + width[f.src]]
                scale = s if scale is None else scale * s
        per = paths.setdefault((f.src, f.dst), {})
        if f.offset not in per:
            per[f.offset] = scale
        else:  # several paths: their contributions add up
            prev = per[f.offset]
            per[f.offset] = (np.ones(width[f.src]) if prev is None else prev) + \
                (np.ones(width[f.src]) if scale is None else scale)
    blocks = []
    for (src, dst), per in paths.items():
        consumer = model.get_submodule(weight_of[dst])
        full = _incoming(consumer, conv_norm)  # (in, out)
        own = layout.own_norm.get(dst)
        if fold and own is not None:
            full = full * batchnorm_scale(model.get_submodule(own))[None, :]
        total = None
        for off, scale in per.items():
            if off + width[src] > full.shape[0]:
                raise UnsupportedModelError(f"{weight_of[dst]!r} reads {full.shape[0]} channels but {src!r} gives "
                                            f"{width[src]} at offset {off}")
            w = full[off:off + width[src]] if (off, width[src]) != (0, full.shape[0]) else full
            if scale is not None:
                w = w * scale[:, None]
            w = np.abs(w)
            total = w if total is None else total + w
        if total.shape != (width[src], width[dst]):
            raise UnsupportedModelError(f"weight of {weight_of[dst]!r} has {total.shape[1]} outputs, expected {width[dst]}")
        blocks.append(Block(src, dst, total))
    return blocks
