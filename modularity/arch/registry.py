"""The architecture registry: one place that knows where a model's units are.

:func:`layout_of` derives the layout of any ``torch.fx``-traceable model from its trace
(:mod:`modularity.arch.trace`); a model class that cannot be traced gets a declared layout
(:func:`declare_layout`), validated against the model when first used. Graph construction, lesions and
feature visualisation all ask this module (through :func:`layer_specs` and :func:`hook_point`).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import fx, nn

from ..errors import ModularityError, UnsupportedModelError
from .spec import LAYER_KINDS, LayerSpec
from .trace import Layout, derive_layout, trace_model

LayoutFn = Callable[[nn.Module], list[LayerSpec]]
_DECLARED: list[tuple[type[nn.Module], LayoutFn]] = []
_CACHE: weakref.WeakKeyDictionary[nn.Module, Layout] = weakref.WeakKeyDictionary()
_TAPPED: weakref.WeakKeyDictionary[nn.Module, tuple[fx.GraphModule, dict[str, str]]] = weakref.WeakKeyDictionary()


def declare_layout(cls: type[nn.Module], layers: Sequence[LayerSpec] | LayoutFn) -> None:
    """Declare the layers of a model class that ``torch.fx`` cannot trace (checked before tracing).

    ``layers`` is a list of :class:`LayerSpec` in forward order, or a function ``model -> list``. Layers
    feed each other in that order (a chain): the graph links each layer to the next through the next
    layer's weight. Validation happens on first use with a model: module names must exist, ``weight``
    must be an ``nn.Linear``/``nn.Conv2d`` with ``width`` outputs reading the previous layer's width,
    ``activation``/``batchnorm`` must exist; each mistake is a one-line :class:`ModularityError`.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ModularityError(f"declare_layout needs an nn.Module subclass, got {cls!r}")
    if cls in (nn.Sequential, nn.Module):
        raise ModularityError(f"declaring a layout for {cls.__name__} would apply to every such model; "
                              "declare it for your own subclass")
    if not callable(layers):
        fixed = list(layers)
        for s in fixed:
            if not isinstance(s, LayerSpec):
                raise ModularityError(f"declare_layout: layers must be LayerSpec objects, got {type(s).__name__}")
        fn: LayoutFn = lambda _m, fixed=fixed: list(fixed)  # noqa: E731
    else:
        fn = layers
    _DECLARED.insert(0, (cls, fn))
    _CACHE.clear()
    _TAPPED.clear()


register_layout = declare_layout  # the former name (modularity.layers.register_layout)


def layout_of(model: nn.Module) -> Layout:
    """The model's :class:`~modularity.arch.trace.Layout` (declared, else traced; cached per model)."""
    if not isinstance(model, nn.Module):
        raise ModularityError(f"expected a torch.nn.Module, got {type(model).__name__}")
    cached = _CACHE.get(model)
    if cached is not None:
        return cached
    for cls, fn in _DECLARED:
        if isinstance(model, cls):
            layout = Layout(validate_declared(model, fn(model)), "declared")
            break
    else:
        layout = derive_layout(model)
    _CACHE[model] = layout
    return layout


def layer_specs(model: nn.Module) -> list[LayerSpec]:
    """The model's layers of units, in graph order. Unsupported models raise a one-line error."""
    return list(layout_of(model).specs)


def analysed_layers(model: nn.Module) -> list[LayerSpec]:
    """The layers whose sub-clusters are tested (hidden layers of dense nets, conv layers)."""
    return [s for s in layer_specs(model) if s.analysed]


def layer_by_name(model: nn.Module, name: str) -> LayerSpec:
    """One layer by its name (or its weight module's dotted name); unknown names list the known ones."""
    specs = layer_specs(model)
    for s in specs:
        if s.name == name:
            return s
    for s in specs:
        if s.weight == name:
            return s
    raise UnsupportedModelError(f"no layer {name!r} in {type(model).__name__}; layers: {', '.join(s.name for s in specs)}")


def _module(model: nn.Module, name: str, what: str, layer: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ModularityError(f"declared layer {layer!r}: {what} module {name!r} not found in "
                              f"{type(model).__name__}") from None


def validate_declared(model: nn.Module, specs: Sequence[LayerSpec]) -> list[LayerSpec]:
    """Check a declared layout against the model (module docstring of :func:`declare_layout`)."""
    specs = list(specs)
    if not specs:
        raise ModularityError(f"declared layout of {type(model).__name__} has no layers")
    seen: set[str] = set()
    prev: LayerSpec | None = None
    for s in specs:
        if not isinstance(s, LayerSpec):
            raise ModularityError(f"declared layout of {type(model).__name__}: expected LayerSpec, got {type(s).__name__}")
        if s.name in seen:
            raise ModularityError(f"declared layer name {s.name!r} is used twice")
        seen.add(s.name)
        if s.kind not in LAYER_KINDS:
            raise ModularityError(f"declared layer {s.name!r}: kind {s.kind!r} is not one of {', '.join(LAYER_KINDS)}")
        if not isinstance(s.width, int) or s.width < 1:
            raise ModularityError(f"declared layer {s.name!r}: width must be a positive integer, got {s.width!r}")
        if s.weight is None:
            if s.kind != "input":
                raise ModularityError(f"declared layer {s.name!r}: only an input layer may have no weight module")
        else:
            mod = _module(model, s.weight, "weight", s.name)
            if isinstance(mod, nn.Linear):
                out, inp = mod.out_features, mod.in_features
            elif isinstance(mod, nn.Conv2d):
                out, inp = mod.out_channels, mod.in_channels
            else:
                raise ModularityError(f"declared layer {s.name!r}: weight {s.weight!r} is a {type(mod).__name__}, "
                                      "not nn.Linear or nn.Conv2d")
            if out != s.width:
                raise ModularityError(f"declared layer {s.name!r} has width {s.width} but {s.weight!r} has {out} outputs")
            if prev is not None and inp != prev.width:
                raise ModularityError(f"declared layer {s.name!r}: {s.weight!r} reads {inp} channels but the previous "
                                      f"layer {prev.name!r} has {prev.width}")
        for attr in ("activation", "batchnorm"):
            name = getattr(s, attr)
            if name is not None:
                mod = _module(model, name, attr, s.name)
                if attr == "batchnorm" and getattr(mod, "num_features", s.width) != s.width:
                    raise ModularityError(f"declared layer {s.name!r}: batch norm {name!r} has {mod.num_features} "
                                          f"channels, not {s.width}")
        if s.analysed and s.activation is None:
            raise ModularityError(f"declared layer {s.name!r} is analysed but names no activation module to "
                                  "lesion or visualise")
        prev = s
    kinds = {s.kind for s in specs}
    if "conv" in kinds and kinds & {"dense"}:
        raise ModularityError("a declared layout mixes conv and dense unit layers; declare one kind")
    return specs


# --------------------------------------------------------------------------------------------------
# Where hooks go: the post-activation value of each layer


class Tap(nn.Identity):
    """Marks a layer's post-activation value in a traced copy of the model; hooks attach here."""


def tapped(model: nn.Module) -> tuple[fx.GraphModule, dict[str, str]]:
    """A ``GraphModule`` sharing the model's parameters, with a :class:`Tap` after every layer's node.

    Returns it and ``layer name -> tap module name``. Cached per model.
    """
    hit = _TAPPED.get(model)
    if hit is not None:
        return hit
    layout = layout_of(model)
    gm = trace_model(model)
    by_name = {n.name: n for n in gm.graph.nodes}
    taps: dict[str, str] = {}
    for i, s in enumerate(layout.specs):
        if s.node is None or s.node not in by_name or not s.analysed:
            continue
        node = by_name[s.node]
        tap_name = f"modularity_tap_{i}"
        gm.add_submodule(tap_name, Tap())
        with gm.graph.inserting_after(node):
            tap = gm.graph.call_module(tap_name, (node,))
        node.replace_all_uses_with(tap, delete_user_cb=lambda user, tap=tap: user is not tap)
        taps[s.name] = tap_name
    gm.recompile()
    _TAPPED[model] = (gm, taps)
    return gm, taps


def hook_point(model: nn.Module, spec: LayerSpec, before_batchnorm: bool = False) -> tuple[nn.Module, nn.Module]:
    """``(module to call, module to hook)``: a forward hook on the second sees the layer's post-activation
    value (after the BN that follows it, unless ``before_batchnorm``) when the first is called.

    Modules that run once are hooked on the model itself; functional activations, shared ReLU modules
    and layers without an activation are reached through :func:`tapped`.
    """
    if not spec.analysed or (spec.activation is None and spec.node is None):
        raise ModularityError(f"layer {spec.name!r} has no activation to lesion or visualise (input or output layer)")
    if spec.batchnorm is not None and not before_batchnorm:
        return model, model.get_submodule(spec.batchnorm)
    if spec.activation is not None:
        return model, model.get_submodule(spec.activation)
    gm, taps = tapped(model)
    return gm, gm.get_submodule(taps[spec.name])


def is_flat_sequential(model: nn.Module) -> bool:
    """A plain ``nn.Sequential`` (its own ``forward``): modules run in child order, each once.

    The lesion engine's fast path and feature visualisation's early stop rely on it."""
    return isinstance(model, nn.Sequential) and type(model).forward is nn.Sequential.forward


# --------------------------------------------------------------------------------------------------
# Input shape

_TRY_SIDES = (28, 32, 8, 16, 64, 96, 128, 224)


def input_shape(model: nn.Module) -> tuple[int, int, int]:
    """The (C, H, W) image a model takes; raises if it cannot be told.

    Dense nets: a square 1-channel image if the input width is a square (784 -> 1x28x28), else a square
    3-channel one, else not image-shaped. Conv nets: ``C`` = the first conv's ``in_channels``; ``H = W``
    from an ``image_size`` attribute, 224 for torchvision models, else the first of 28, 32, 8, 16, 64,
    96, 128, 224 that the model accepts.
    """
    specs = layer_specs(model)
    if specs[0].kind == "input":
        n = specs[0].width
        for c in (1, 3):
            side = math.isqrt(n // c)
            if n % c == 0 and side * side * c == n:
                return (c, side, side)
        raise ModularityError(f"{type(model).__name__} with {n} inputs is not image-shaped (not C*S*S for C in 1, 3); "
                              "pass image_shape=(C, H, W)")
    first = model.get_submodule(specs[0].weight) if specs[0].weight else None
    if not isinstance(first, nn.Conv2d):
        raise ModularityError(f"cannot tell the input image shape of {type(model).__name__}; pass image_shape=(C, H, W)")
    c = first.in_channels
    size = getattr(model, "image_size", None)
    if isinstance(size, int):
        return (c, size, size)
    if type(model).__module__.startswith("torchvision"):
        return (c, 224, 224)
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    was = model.training
    model.eval()
    try:
        for side in _TRY_SIDES:
            try:
                with torch.no_grad():
                    model(torch.zeros(1, c, side, side, device=device))
                return (c, side, side)
            except Exception:  # noqa: BLE001 - any failure means: not this size
                continue
    finally:
        model.train(was)
    raise ModularityError(f"cannot tell the input image shape of {type(model).__name__}; pass image_shape=(C, H, W)")


def describe(model: nn.Module) -> list[dict[str, Any]]:
    """One dict per layer (name, kind, width, weight, activation, batchnorm, analysed, node): for printing."""
    return [dict(s.__dict__) for s in layer_specs(model)]
