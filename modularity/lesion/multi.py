"""Lesions spanning several layers at once (double lesions, docs/methods.md §5.6), by the definition itself.

Every lesion is a mapping ``layer -> unit indices``; all its layers' post-activation values are zeroed
in the same forward pass (one hook per layer, removed in ``finally``), many lesions per batch. Near-tie
predictions are decided again in float64, as the single-layer engine does, so counts agree with it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..arch import hook_point, layer_by_name
from .definition import check_lesionable, zeroing_hook
from .engine import _device_of, _eval_mode, _near_tie, check_data

Lesion = Mapping[str, Sequence[int] | np.ndarray]


def _logits(model: nn.Module, layers: list[str], masks: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Plain forward pass with ``masks[layer]`` (per-image booleans, True = lesioned) zeroed at every layer."""
    handles, runner = [], model
    try:
        for name in layers:
            spec = layer_by_name(model, name)
            r, module = hook_point(model, spec)
            if r is not model:
                runner = r
            handles.append(module.register_forward_hook(zeroing_hook(~masks[name])))
        p = next(model.parameters())
        return runner(x.to(p.device, p.dtype))
    finally:
        for h in handles:
            h.remove()


def multi_lesion_counts(model: nn.Module, lesions: Sequence[Lesion], x: torch.Tensor, y: torch.Tensor,
                        batch_lesions: int = 16) -> np.ndarray:
    """Per-class correct counts with each multi-layer lesion applied, int64 ``(M, n_classes)``."""
    x, y, n_classes = check_data(model, x, y)
    layers = list(dict.fromkeys(name for les in lesions for name in les))
    widths = {}
    for name in layers:
        spec = layer_by_name(model, name)
        check_lesionable(spec)
        widths[name] = spec.width
    full = {name: torch.zeros(len(lesions), widths[name], dtype=torch.bool) for name in layers}
    for m, les in enumerate(lesions):
        for name, units in les.items():
            idx = torch.as_tensor(np.array(units, dtype=np.int64))
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= widths[name]):
                from ..errors import ModularityError

                raise ModularityError(f"lesion {m}: unit indices of layer {name!r} must lie in 0..{widths[name] - 1}")
            full[name][m, idx] = True
    device = _device_of(model)
    counts = torch.zeros(len(lesions), n_classes, dtype=torch.int64)
    m64: nn.Module | None = None
    b = len(x)
    with _eval_mode(model), torch.inference_mode():
        xd, yd = x.to(device), y.to(device)
        for m0 in range(0, len(lesions), batch_lesions):
            k = min(batch_lesions, len(lesions) - m0)
            masks = {n: full[n][m0:m0 + k].to(device).repeat_interleave(b, dim=0) for n in layers}
            xs = xd.repeat(k, *([1] * (xd.ndim - 1)))
            logits = _logits(model, layers, masks, xs)
            preds = logits.argmax(1)
            near = _near_tie(logits, preds)
            if near.any():
                if m64 is None:
                    m64 = copy.deepcopy(model).double().eval()
                idx = torch.nonzero(near).squeeze(1)
                preds[idx] = _logits(m64, layers, {n: v[idx] for n, v in masks.items()}, xs[idx].double()).argmax(1)
            yk = yd.repeat(k)
            ids = torch.arange(m0, m0 + k).repeat_interleave(b)
            counts.view(-1).index_add_(0, ids * n_classes + yk.cpu(), (preds == yk).long().cpu())
    return counts.numpy()
