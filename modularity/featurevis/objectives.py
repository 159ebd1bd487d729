"""What an image is optimised for (Lucid's ``objectives``), and the network side that reads it: the
post-activation values the architecture registry locates, Lucid's ReLU gradient override.

:class:`UnitSetObjective` is the paper's objective as an object: per image, the sum over its unit set
of the mean post-activation value (mean over space for conv channels), one set per image.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..arch import LayerSpec, is_flat_sequential, tapped


class _RedirectedReLUFunction(torch.autograd.Function):
    """ReLU whose backward is Lucid's ``redirected_relu_grad`` (lucid.misc.redirected_relu_grad).

    The incoming gradient is that of the loss being *minimised* (minus the objective). Per image, if the
    ordinary ReLU gradient is zero over the whole tensor, pass the gradient through, except where the
    unit is dead (x < 0) and the gradient would push it lower (grad > 0).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, active: bool = True) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.active = active
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        dead = x < 0
        relu_grad = grad.masked_fill(dead, 0.0)
        if not ctx.active:  # outside the override window: the ordinary ReLU gradient
            return relu_grad, None
        passes = relu_grad.reshape(grad.shape[0], -1).norm(dim=1) > 0
        if bool(passes.all()):  # the usual case after the first steps: nothing to redirect
            return relu_grad, None
        stuck = ~passes  # only these images take the redirected gradient (Lucid's tf.where on the norm)
        g = grad[stuck]
        relu_grad[stuck] = g.masked_fill(dead[stuck] & (g > 0), 0.0)
        return relu_grad, None


class RedirectedReLU(nn.Module):
    """Drop-in replacement for ``nn.ReLU`` with Lucid's gradient override (same forward).

    ``active`` switches the override off (ordinary ReLU gradient) without rebuilding the network: the
    renderer uses it for an override window (``VisConfig.relu_override_steps``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.active = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _RedirectedReLUFunction.apply(x, self.active)


def set_override_active(net: nn.Module, active: bool) -> None:
    """Switch every :class:`RedirectedReLU` of ``net`` on or off."""
    for module in net.modules():
        if isinstance(module, RedirectedReLU):
            module.active = active


def _replace_relus(root: nn.Module) -> None:
    """Every ``nn.ReLU`` child of ``root``'s module tree replaced by :class:`RedirectedReLU`."""
    for module in list(root.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, child_name, RedirectedReLU())


def _override_functional_relus(gm: torch.fx.GraphModule) -> None:
    """In a traced copy, route functional ``torch.relu`` / ``F.relu`` / ``.relu()`` through a RedirectedReLU."""
    relus = {torch.relu, torch.relu_, F.relu, F.relu_}
    changed = False
    for node in list(gm.graph.nodes):
        if (node.op == "call_function" and node.target in relus) or (node.op == "call_method" and node.target in
                                                                      ("relu", "relu_")):
            if not hasattr(gm, "modularity_redirected_relu"):
                gm.add_submodule("modularity_redirected_relu", RedirectedReLU())
            with gm.graph.inserting_after(node):
                new = gm.graph.call_module("modularity_redirected_relu", (node.args[0],))
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            changed = True
    if changed:
        gm.recompile()


def _working_copy(model: nn.Module, relu_gradient_override: bool, device: torch.device,
                  specs: Sequence[LayerSpec] = ()) -> tuple[nn.Module, list[nn.Module]]:
    """A frozen eval-mode copy of the model on ``device`` and the modules whose outputs are the given
    layers' post-activation values (:func:`modularity.arch.hook_point`, before any following BN).

    Layers located only by an fx node (functional activations, shared ReLUs) run through a traced copy
    with taps. With the override, every ``nn.ReLU`` (and, in a traced copy, every functional relu) is
    replaced by :class:`RedirectedReLU`.
    """
    net = copy.deepcopy(model).to(device).eval()
    net.requires_grad_(False)
    runner: nn.Module = net
    if any(s.activation is None for s in specs):
        runner, _ = tapped(net)
        if relu_gradient_override:
            _override_functional_relus(runner)  # type: ignore[arg-type]
    if relu_gradient_override:
        _replace_relus(runner)
    points = [runner.get_submodule(s.activation) if s.activation is not None else runner.get_submodule(tapped(net)[1][s.name])
              for s in specs]
    return runner, points


class _StopForward(Exception):
    pass


class _Activations:
    """Forward the network, capturing the per-unit mean activation of some layers (B, width) each.

    For ``nn.Sequential`` models the forward pass stops after the deepest captured layer when the
    logits are not needed. A module that runs more than once per forward (shared ReLUs) is read at its
    last call.
    """

    def __init__(self, net: nn.Module, modules: Sequence[nn.Module],
                 input_transform: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        self.net, self.input_transform = net, input_transform
        self.modules = list(modules)
        self.can_stop = is_flat_sequential(net) and len(set(map(id, self.modules))) == len(self.modules)

    def __call__(self, images: torch.Tensor, need_logits: bool) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        captured: dict[int, torch.Tensor] = {}
        stop = self.can_stop and not need_logits

        def hook_for(i: int) -> Callable[..., None]:
            def hook(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
                captured[i] = out.mean(dim=tuple(range(2, out.dim()))) if out.dim() > 2 else out
                if stop and len(captured) == len(self.modules):
                    raise _StopForward

            return hook

        handles = [m.register_forward_hook(hook_for(i)) for i, m in enumerate(self.modules)]
        logits = None
        try:
            x = self.input_transform(images) if self.input_transform is not None else images
            logits = self.net(x)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        return [captured[i] for i in range(len(self.modules))], logits


class UnitSetObjective:
    """Per-image objective: image i maximises the summed mean activation of its own unit set.

    ``targets[i] = (layer name, unit indices)``; ``layers`` are the distinct layers in order of first
    appearance, and ``__call__`` takes their captured activations ``(B, width)`` in that order.
    """

    def __init__(self, targets: Sequence[tuple[str, np.ndarray]], widths: dict[str, int], device: torch.device) -> None:
        self.layers = list(dict.fromkeys(layer for layer, _ in targets))
        masks = torch.zeros(len(self.layers), len(targets), max(widths[name] for name in self.layers))
        for i, (layer, units) in enumerate(targets):
            masks[self.layers.index(layer), i, torch.from_numpy(units)] = 1.0
        self.masks = masks.to(device)

    def __call__(self, acts: list[torch.Tensor]) -> torch.Tensor:
        """(B,): each image's own objective."""
        return sum((a * self.masks[j, :, : a.shape[1]]).sum(1) for j, a in enumerate(acts))  # type: ignore[return-value]
