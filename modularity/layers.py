"""Where the units are: kept for compatibility; the registry lives in :mod:`modularity.arch`.

A *unit* is addressed everywhere as ``(layer name, index within layer)``. For the paper's models:

* MLP: ``input`` (pixels), ``hidden1``..``hidden4`` (analysed), ``output``. All are graph vertices.
* Small CNN / CIFAR VGG: ``conv1``..``convN`` (every conv's output channels; all analysed). Dense
  layers and inputs are not graph vertices (docs/methods.md §2.2).
"""

from __future__ import annotations

from .arch import LayerKind, LayerSpec, analysed_layers, declare_layout, layer_by_name, layer_specs, register_layout

__all__ = ["LayerKind", "LayerSpec", "analysed_layers", "declare_layout", "layer_by_name", "layer_specs",
           "register_layout"]
