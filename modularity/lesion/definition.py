"""What a lesion is: the specification every faster path is tested against.

A *lesion* of units ``S`` of one layer sets their post-activation output to zero for the whole
forward pass (docs/methods.md §5.1: the reference zeroes the incoming weights and bias, which gives the same
ReLU output). The post-activation value is the one the architecture registry locates
(:func:`modularity.arch.hook_point`): the layer's activation module, or the fx node of a functional
activation / a shared ReLU module / a layer without activation (through a traced copy sharing the
model's parameters). Where a BatchNorm follows the activation (CIFAR VGG) the default zeroes the
output *after* the BN, so the channel is truly silent; ``before_batchnorm=True`` zeroes the ReLU
output and lets the BN map it to its constant, as the reference did (docs/methods.md §9.10).

The definition is a forward hook, removed in ``finally`` (as Captum's ablations do); many lesions run
in one batch by giving every image its own mask. :mod:`modularity.lesion.engine` is an optimisation of
exactly this, proven equal to it by the tests.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..arch import LayerSpec, hook_point, layer_by_name
from ..errors import ModularityError


def check_lesionable(spec: LayerSpec) -> None:
    """Raise if the layer has no post-activation value to zero (input layer, logits)."""
    if not spec.analysed or (spec.activation is None and spec.node is None):
        raise ModularityError(f"layer {spec.name!r} has no activation to lesion (input or output layer)")


def lesion_point(spec: LayerSpec, before_batchnorm: bool = False) -> str | None:
    """Dotted name of the module whose output a lesion zeroes (the activation, or the BN after it);
    ``None`` where only an fx node locates the value (then :func:`hook_point` taps it)."""
    check_lesionable(spec)
    if spec.batchnorm is not None and not before_batchnorm:
        return spec.batchnorm
    return spec.activation


def zeroing_hook(keep: torch.Tensor) -> Callable[[nn.Module, object, torch.Tensor], torch.Tensor]:
    """A forward hook replacing lesioned channels (``keep`` False) by 0.

    ``keep``: boolean ``(width,)`` (same lesion for every image) or ``(batch, width)`` (one per image);
    channels are dimension 1 of the hooked output.
    """

    def hook(_mod: nn.Module, _inp: object, out: torch.Tensor) -> torch.Tensor:
        k = keep if keep.ndim == 2 else keep.expand(out.shape[0], -1)
        k = k.view(*k.shape, *([1] * (out.ndim - 2)))
        return torch.where(k, out, torch.zeros((), dtype=out.dtype, device=out.device))

    return hook


def lesioned_logits(model: nn.Module, layer: str | LayerSpec, x: torch.Tensor, lesioned: torch.Tensor,
                    before_batchnorm: bool = False) -> torch.Tensor:
    """Logits of a plain forward pass with the lesioned units' post-activation values zeroed.

    ``lesioned`` is a boolean ``(width,)`` (same lesion for every image) or ``(len(x), width)`` (one
    lesion per image). Runs in the model's dtype and device; the caller chooses eval mode.
    """
    spec = layer if isinstance(layer, LayerSpec) else layer_by_name(model, layer)
    check_lesionable(spec)
    runner, module = hook_point(model, spec, before_batchnorm)
    p = next(model.parameters())
    keep = ~lesioned.to(device=p.device, dtype=torch.bool)
    handle = module.register_forward_hook(zeroing_hook(keep))
    try:
        return runner(x.to(device=p.device, dtype=p.dtype))
    finally:
        handle.remove()
