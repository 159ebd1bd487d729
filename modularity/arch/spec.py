"""A layer of units: the address every tool (graph, lesions, feature visualisation) uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LayerKind = Literal["input", "dense", "conv", "output"]
LAYER_KINDS: tuple[str, ...] = ("input", "dense", "conv", "output")


@dataclass(frozen=True)
class LayerSpec:
    """One layer of units.

    Attributes:
        name: unit-address name (``hidden2``, ``conv5``, ``layer1.0.conv1``).
        kind: ``input``, ``dense``, ``conv`` or ``output``.
        width: number of units (features or channels).
        weight: dotted module name of the Linear/Conv2d whose output channels are these units
            (``None`` for the input layer).
        activation: dotted module name whose forward *output* is the units' post-activation value, when
            that module runs once per forward pass; ``None`` otherwise (input, logits, functional
            activations, a ReLU module shared by several layers: then ``node`` locates the value).
        batchnorm: dotted name of a BatchNorm applied to these units after the activation (CIFAR VGG),
            else ``None``. Graph folding and "after-BN" lesions use it.
        analysed: whether sub-clusters of this layer are tested (hidden / conv layers).
        node: name of the ``torch.fx`` node whose value is the post-activation output (traced models;
            ``None`` for declared layouts, which use ``activation``). For a layer without activation (a
            conv whose output enters a residual sum or a concatenation) it is the output of the layer's
            own batch norm, or of the layer itself.
    """

    name: str
    kind: LayerKind
    width: int
    weight: str | None
    activation: str | None
    batchnorm: str | None = None
    analysed: bool = True
    node: str | None = None
