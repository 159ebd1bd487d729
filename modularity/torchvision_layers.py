"""Unit layouts of torchvision's VGG and ResNet families (ImageNet models), for :mod:`modularity.layers`.

Importing this module registers the layouts (``layers.register_layout``); :func:`modularity.graph.graph_of`
imports it on demand, so ``import modularity`` does not pay for importing torchvision.

Every ``nn.Conv2d`` is one layer of units (its output channels), named by its dotted module name
(``features.0``, ``layer1.0.conv1``, ``layer2.0.downsample.0``), in execution order; all are analysed.
``weight`` is the conv itself. ``activation`` is the ``nn.ReLU`` module that reads the conv (or its
batch norm) when that module is used once in the forward pass (torchvision VGG); it is ``None`` in
ResNets, whose ReLU modules are shared between several convs and whose last conv of a block feeds a
residual addition. ``batchnorm`` is ``None``: torchvision's batch norms sit *before* the activation and
:mod:`modularity.graph` folds them into the conv they follow.

Vertex counts (all convs' output channels; tested): vgg16 4224, vgg19 5504, resnet18 4800,
resnet34 8512, resnet50 26560.
"""

from __future__ import annotations

import weakref

from torch import nn
from torchvision.models import VGG, ResNet

from .graph import trace_convs
from .layers import LayerSpec, register_layout

_CACHE: weakref.WeakKeyDictionary[nn.Module, list[LayerSpec]] = weakref.WeakKeyDictionary()


def traced_conv_layout(model: nn.Module) -> list[LayerSpec]:
    """One conv layer of units per ``nn.Conv2d`` in execution order (structure cached per model)."""
    if model not in _CACHE:
        trace = trace_convs(model, fold_batchnorm=False)
        _CACHE[model] = [
            LayerSpec(name, "conv", model.get_submodule(name).out_channels, name, trace.activation.get(name))
            for name in trace.convs
        ]
    return list(_CACHE[model])


register_layout(VGG, traced_conv_layout)
register_layout(ResNet, traced_conv_layout)
