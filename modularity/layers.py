"""Where the units are: the one place that knows each architecture's layout.

A *unit* is addressed everywhere as ``(layer name, index within layer)``. :func:`layer_specs` lists a
model's layers in graph order; graph construction, lesions and feature visualisation all use it, so a
new architecture is supported by teaching this module about it.

For the paper's own models (``modularity.models``):

* MLP: ``input`` (pixels), ``hidden1``..``hidden4`` (analysed), ``output``. All are graph vertices.
* Small CNN / CIFAR VGG: ``conv1``..``convN`` (every conv's output channels; all analysed). Dense
  layers and inputs are not graph vertices (METHODS.md 2.2).

torchvision VGG / ResNet layouts are added by :mod:`modularity.graph` through :func:`register_layout`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from .errors import UnsupportedModelError
from .models import MLP, CifarVGG, SmallCNN

LayerKind = Literal["input", "dense", "conv", "output"]


@dataclass(frozen=True)
class LayerSpec:
    """One layer of units.

    Attributes:
        name: unit-address name (``hidden2``, ``conv5``).
        kind: ``input``, ``dense``, ``conv`` or ``output``.
        width: number of units (features or channels).
        weight: dotted module name of the Linear/Conv2d whose output channels are these units
            (``None`` for the input layer).
        activation: dotted module name whose forward *output* is the units' post-activation value
            (the ReLU); ``None`` where there is none (input, output logits).
        batchnorm: dotted name of a BatchNorm applied to these units after the activation (CIFAR VGG),
            else ``None``. Graph folding and "after-BN" lesions use it.
        analysed: whether sub-clusters of this layer are tested (hidden / conv layers).
    """

    name: str
    kind: LayerKind
    width: int
    weight: str | None
    activation: str | None
    batchnorm: str | None = None
    analysed: bool = True


LayoutFn = Callable[[nn.Module], list[LayerSpec]]
_LAYOUTS: list[tuple[type[nn.Module], LayoutFn]] = []


def register_layout(cls: type[nn.Module], fn: LayoutFn) -> None:
    """Teach :func:`layer_specs` the layout of another model class (checked before built-ins)."""
    _LAYOUTS.insert(0, (cls, fn))


def layer_specs(model: nn.Module) -> list[LayerSpec]:
    """The model's layers of units, in graph order. Unsupported models raise a clear error."""
    if type(model).__module__.startswith("torchvision"):
        import modularity.torchvision_layers  # noqa: F401  (registers the VGG / ResNet layouts)
    for cls, fn in _LAYOUTS:
        if isinstance(model, cls):
            return fn(model)
    raise UnsupportedModelError(
        f"unsupported model type {type(model).__name__}; supported: "
        + ", ".join(sorted({c.__name__ for c, _ in _LAYOUTS}))
    )


def analysed_layers(model: nn.Module) -> list[LayerSpec]:
    """The layers whose sub-clusters are tested (MLP hidden layers, CNN conv layers)."""
    return [s for s in layer_specs(model) if s.analysed]


def layer_by_name(model: nn.Module, name: str) -> LayerSpec:
    """One layer spec by name; unknown names raise with the list of known ones."""
    specs = layer_specs(model)
    for s in specs:
        if s.name == name:
            return s
    raise UnsupportedModelError(f"no layer {name!r} in {type(model).__name__}; layers: {', '.join(s.name for s in specs)}")


def _mlp_layout(model: nn.Module) -> list[LayerSpec]:
    assert isinstance(model, MLP)
    specs = [LayerSpec("input", "input", model.in_features, None, None, analysed=False)]
    for i, h in enumerate(model.hidden, start=1):
        specs.append(LayerSpec(f"hidden{i}", "dense", h, f"fc{i}", f"relu{i}"))
    specs.append(LayerSpec("output", "output", model.n_classes, f"fc{len(model.hidden) + 1}", None, analysed=False))
    return specs


def _sequential_conv_layout(model: nn.Module) -> list[LayerSpec]:
    names = dict(model.named_children())
    specs = []
    i = 1
    while f"conv{i}" in names:
        conv = names[f"conv{i}"]
        assert isinstance(conv, nn.Conv2d)
        bn = f"bn{i}" if f"bn{i}" in names else None
        specs.append(LayerSpec(f"conv{i}", "conv", conv.out_channels, f"conv{i}", f"relu{i}", batchnorm=bn))
        i += 1
    return specs


register_layout(CifarVGG, _sequential_conv_layout)
register_layout(SmallCNN, _sequential_conv_layout)
register_layout(MLP, _mlp_layout)
