"""The architecture registry (DESIGN "Three homes", 1): where every model's units are.

* :func:`layer_specs` / :func:`layer_by_name` / :func:`analysed_layers`: a model's layers of units,
  derived from its ``torch.fx`` trace (:mod:`.trace`) or declared (:func:`declare_layout`).
* :mod:`.ops`: the one list of operations understood (channel-preserving, norms, activations,
  residual additions, concatenation), shared by graph, lesions and feature visualisation.
* :func:`hook_point`: where a forward hook sees a layer's post-activation value.
* :func:`input_shape`: the image a model takes.

The paper's MLP, small CNN and CIFAR VGG and torchvision's models are ordinary traced cases.
"""

from __future__ import annotations

from .registry import (
    Tap,
    analysed_layers,
    declare_layout,
    describe,
    hook_point,
    input_shape,
    is_flat_sequential,
    layer_by_name,
    layer_specs,
    layout_of,
    register_layout,
    tapped,
    validate_declared,
)
from .spec import LayerKind, LayerSpec
from .trace import Flow, Layout, derive_layout, trace_model

__all__ = [
    "Flow", "LayerKind", "LayerSpec", "Layout", "Tap", "analysed_layers", "declare_layout", "derive_layout",
    "describe", "hook_point", "input_shape", "is_flat_sequential", "layer_by_name", "layer_specs", "layout_of", "register_layout",
    "tapped", "trace_model", "validate_declared",
]
