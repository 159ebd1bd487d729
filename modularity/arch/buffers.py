"""Per-image buffers of one forward pass, to size the chunks of images that lesions and feature
visualisation process at once.

Both walk the same forward pass (a hook on every leaf module) and count the same two kinds of buffer:
a module's output and, for a convolution, its im2col column matrix. Without oneDNN (the pinned numerics,
``modularity/numerics.py``) a convolution runs as im2col + one matrix product over the whole chunk, and
the column matrix (input channels per group x kernel size x output positions per image) is 9x the
layer's input for a 3x3 kernel: the buffer that decides how many images fit. No library exposes this
count (``torch.profiler`` reports allocations after the fact, on one chunk size), hence this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ModularityError

__all__ = ["Buffer", "forward_buffers"]


@dataclass(frozen=True)
class Buffer:
    """One leaf module's buffers for one image: ``output`` and ``im2col`` in elements of ``itemsize`` bytes."""

    module: str
    output: int
    im2col: int
    itemsize: int


def _im2col_elements(module: nn.Module, out: torch.Tensor) -> int:
    """Column-matrix elements per image of a convolution (0 for other modules): C_in/groups x prod(kernel) x
    prod(output spatial shape)."""
    if not isinstance(module, nn.modules.conv._ConvNd) or out.ndim < 3:
        return 0
    return module.in_channels // module.groups * math.prod(module.kernel_size) * math.prod(out.shape[2:])


def forward_buffers(model: nn.Module, example: torch.Tensor) -> list[Buffer]:
    """The buffers of every leaf module that returns a tensor, in call order, for ``example`` of shape
    ``(1, *input shape)`` (one image, on the model's device and in its dtype)."""
    if example.ndim == 0 or example.shape[0] != 1:
        raise ModularityError(f"forward_buffers needs a batch of one image, got shape {tuple(example.shape)}")
    names = {m: name for name, m in model.named_modules()}
    found: list[Buffer] = []

    def hook(module: nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            found.append(Buffer(names.get(module, ""), out.numel(), _im2col_elements(module, out), out.element_size()))

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return found
