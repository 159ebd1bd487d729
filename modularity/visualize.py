"""Input coherence: batched feature visualisation of sub-clusters (the paper's Lucid experiment).

For every sub-cluster (units of one layer that share a spectral cluster) an input image is optimised to
maximise the sub-cluster's activation, and so is an image for each of ``n_random`` random same-size unit
sets of the same layer. A sub-cluster is *coherent with respect to input features* when its image
reaches a higher activation than the random sets' images (right-sided rank test on the "loss", the
reference's name for the objective reached) and when the network classifies its image more confidently
(left-sided rank test on the entropy of the softmax). METHODS.md 6.1 and 6.2 describe the reference.

What is computed, per image (Lucid's ``render_vis`` rebuilt in PyTorch, METHODS.md 6.1):

* Objective = sum over the set's units of the mean post-ReLU activation (the mean over space for conv
  channels), read at the output of the layer's activation module (``LayerSpec.activation``).
* Image = sigmoid(decorrelate(irfft2(scale * spectrum) / 4)): Lucid's Fourier parameterisation with
  1/f scaling, its colour decorrelation for 3-channel images (a no-op for 1-channel images, which have
  no colour to decorrelate) and a sigmoid onto the datasets' [0, 1] pixel range. Init N(0, 0.01) per
  image, from a per-image seed. ``fft=False`` gives Lucid's pixel parameterisation.
* Adam(lr 0.05), 256 updates by default. The reference ran 257 updates but recorded the objective of
  the image after 256 (evaluated in the same session run as the 257th update); our default reports the
  objective of the image after 256 updates, i.e. the value the reference recorded.
* Lucid's ReLU gradient override (on by default, as in the reference): in the backward pass of every
  ReLU, where an image's ordinary ReLU gradient is zero for the whole layer, the gradient is passed
  through wherever it would push the pre-activation up.
* Transforms (jitter, scale, rotation) are off by default, as in the reference; :class:`Transforms`
  offers a fixed-size variant (MLPs need a fixed input size).

Batching: the images of a network (every sub-cluster and its random sets) are optimised together,
each with its own objective (a per-image unit mask dotted with the per-image unit activations). The
loss is the *sum* of the per-image objectives and Adam is per-parameter, so a batch of images is
exactly separable: batched equals one-at-a-time up to floating-point summation order.

We do not use ``torch-lucent``: its objectives and parameterisations assume one shared random stream
and 3-channel images, its ``render_vis`` upsamples and transforms by default, and a per-image seeded,
per-image objective batch (the point of this module) would need as much code around it as the ~60
lines of parameterisation below. See docs/coherence.md.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .arch import LayerSpec, input_shape, layer_by_name, layer_specs, tapped
from .errors import ModularityError
from .utils import default_device, rng_for

if TYPE_CHECKING:
    from .results import InputCoherenceResult

# Lucid's colour correlation (square root of the ImageNet colour covariance, SVD form), normalised so
# that its largest column has unit norm (lucid.optvis.param.color._linear_decorelate_color).
_COLOR_CORRELATION_SVD_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]],
                                       dtype=np.float32)
_COLOR_CORRELATION = _COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(_COLOR_CORRELATION_SVD_SQRT, axis=0))

# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class Transforms:
    """Random per-step transforms at a fixed image size (Lucid's jitter / scale / rotate, simplified).

    Lucid's standard transforms pad, crop and rescale, which changes the image size; an MLP needs a
    fixed size, so here each step applies one random affine map (integer translation in
    ``[-jitter, jitter]`` pixels, a scale from ``scales``, an angle in degrees from ``angles``) with
    bilinear resampling, filling uncovered pixels with ``fill``. Parameters are drawn per image from its
    own seed, so batched and one-at-a-time runs see the same transforms.
    """

    jitter: int = 1
    scales: tuple[float, ...] = (0.95, 0.975, 1.0, 1.025, 1.05)
    angles: tuple[float, ...] = (-5.0, -2.5, 0.0, 2.5, 5.0)
    fill: float = 0.5


@dataclass(frozen=True)
class VisConfig:
    """How each image is optimised (defaults = the reference's Lucid call, METHODS.md 6.1)."""

    steps: int = 256
    lr: float = 0.05
    fft: bool = True
    decorrelate: bool = True
    init_sd: float = 0.01
    decay_power: float = 1.0
    relu_gradient_override: bool = True
    transforms: Transforms | None = None

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ModularityError(f"steps must be >= 0, got {self.steps}")
        if not self.lr > 0:
            raise ModularityError(f"lr must be > 0, got {self.lr}")
        if not self.init_sd > 0:
            raise ModularityError(f"init_sd must be > 0, got {self.init_sd}")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["transforms"] = None if self.transforms is None else asdict(self.transforms)
        return d


ImageKey = tuple[int | str, ...]


@dataclass
class FeatureVisualisation:
    """Optimised images and what the network makes of them.

    Attributes:
        images: float32 array (B, C, H, W) in [0, 1].
        table: one row per image: ``layer``, ``size`` (units in the set), ``activation`` (the objective
            reached, sum over the set's units of their mean post-ReLU activation), ``entropy`` (natural-
            log entropy of the softmax of the logits), ``predicted_class``, ``confidence`` (its softmax
            probability).
        config: the :class:`VisConfig` used; ``seed``: the base seed of the per-image streams.
    """

    images: np.ndarray
    table: pd.DataFrame
    config: VisConfig
    seed: int


# --------------------------------------------------------------------------------------------------
# Image parameterisation


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """Frequency magnitudes of a real 2-D FFT's spectrum, shape (h, w//2 + 1 [+1 if w is odd])."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + (2 if w % 2 else 1)]
    return np.sqrt(fx * fx + fy * fy)


def inverse_rfft2_matrices(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Real matrices (cy, sy, cx, sx) with ``irfft2(R + iI)`` = ``(cy@R - sy@I) @ cx - (sy@R + cy@I) @ sx``.

    The inverse real 2-D DFT written as two small matrix products: an inverse complex DFT along the rows
    (cy + i sy, with 1/h), then the inverse real DFT along the columns (cx, sx, with the Hermitian weights
    1 for the DC and Nyquist bins, 2 otherwise, and 1/W). It equals ``numpy.fft.irfft2`` with Lucid's
    even width W = w + (w % 2), cropped to w columns. Matrix products are exact per image and avoid the
    per-call planning overhead of the CPU FFT, which dominated small images (~20 ms per call here).
    """
    width = w + (w % 2)
    ky = np.arange(h)
    ang_y = 2 * np.pi * np.outer(ky, ky) / h
    fw = width // 2 + 1
    kx = np.arange(fw)
    weights = np.full(fw, 2.0)
    weights[0] = weights[-1] = 1.0
    ang_x = 2 * np.pi * np.outer(kx, np.arange(w)) / width
    cx = weights[:, None] * np.cos(ang_x) / width
    sx = weights[:, None] * np.sin(ang_x) / width
    return np.cos(ang_y) / h, np.sin(ang_y) / h, cx, sx


class ImageBatch(nn.Module):
    """A batch of images parameterised as Lucid does, each image initialised from its own seed.

    ``raw`` holds the parameters (Fourier coefficients, or pixels with ``fft=False``); calling the module
    returns images (B, C, H, W) in [0, 1]. Every image depends only on its own slice of ``raw``.
    """

    def __init__(self, shape: tuple[int, int, int], seeds: Sequence[np.random.Generator], *, fft: bool = True,
                 decorrelate: bool = True, sd: float = 0.01, decay_power: float = 1.0) -> None:
        super().__init__()
        c, h, w = shape
        self.shape, self.fft = (c, h, w), fft
        self.decorrelate = decorrelate and c == 3  # one channel has no colour to decorrelate
        if fft:
            freqs = rfft2d_freqs(h, w)
            per_image = (2, c, *freqs.shape)  # Lucid's (real/imag, channel, fy, fx) layout
            init = np.stack([g.normal(scale=sd, size=per_image) for g in seeds]).astype(np.float32)
            self.raw = nn.Parameter(torch.from_numpy(init))  # (B, 2, C, fy, fx)
            scale = 1.0 / np.maximum(freqs, 1.0 / max(w, h)) ** decay_power * np.sqrt(w * h)
            self.register_buffer("scale", torch.from_numpy(scale.astype(np.float32)))
            for name, mat in zip(("cy", "sy", "cx", "sx"), inverse_rfft2_matrices(h, w), strict=True):
                self.register_buffer(name, torch.from_numpy(mat.astype(np.float32)))
        else:
            init = np.stack([g.normal(scale=sd, size=(c, h, w)) for g in seeds]).astype(np.float32)
            self.raw = nn.Parameter(torch.from_numpy(init))
        if self.decorrelate:
            self.register_buffer("color", torch.from_numpy(_COLOR_CORRELATION))

    def forward(self) -> torch.Tensor:
        if self.fft:
            re, im = self.raw[:, 0] * self.scale, self.raw[:, 1] * self.scale
            rows_re = self.cy @ re - self.sy @ im
            rows_im = self.sy @ re + self.cy @ im
            t = (rows_re @ self.cx - rows_im @ self.sx) / 4.0
        else:
            t = self.raw
        if self.decorrelate:
            t = torch.einsum("bchw,dc->bdhw", t, self.color)
        return torch.sigmoid(t)


def _transform(images: torch.Tensor, params: torch.Tensor, fill: float) -> torch.Tensor:
    """Apply one affine map per image; ``params`` (B, 4) = (dx px, dy px, scale, angle degrees)."""
    b, _, h, w = images.shape
    dx, dy, s, a = params.unbind(1)
    rad = torch.deg2rad(a)
    cos, sin = torch.cos(rad) / s, torch.sin(rad) / s
    theta = torch.stack([torch.stack([cos, -sin, -2 * dx / w], 1), torch.stack([sin, cos, -2 * dy / h], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def _transform_params(tr: Transforms, steps: int, rng: np.random.Generator) -> np.ndarray:
    shift = rng.integers(-tr.jitter, tr.jitter + 1, size=(steps, 2))
    scale = rng.choice(np.asarray(tr.scales, dtype=np.float64), size=steps)
    angle = rng.choice(np.asarray(tr.angles, dtype=np.float64), size=steps)
    return np.column_stack([shift, scale, angle]).astype(np.float32)  # (steps, 4)


# --------------------------------------------------------------------------------------------------
# The network side: ReLU gradient override, activation capture


class _RedirectedReLUFunction(torch.autograd.Function):
    """ReLU whose backward is Lucid's ``redirected_relu_grad`` (lucid.misc.redirected_relu_grad).

    The incoming gradient is that of the loss being *minimised* (minus the objective). Per image, if the
    ordinary ReLU gradient is zero over the whole tensor, pass the gradient through, except where the
    unit is dead (x < 0) and the gradient would push it lower (grad > 0).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        dead = x < 0
        relu_grad = torch.where(dead, torch.zeros_like(grad), grad)
        redirected = torch.where(dead & (grad > 0), torch.zeros_like(grad), grad)
        passes = relu_grad.reshape(grad.shape[0], -1).norm(dim=1) > 0
        return torch.where(passes.view(-1, *([1] * (grad.dim() - 1))), relu_grad, redirected)


class RedirectedReLU(nn.Module):
    """Drop-in replacement for ``nn.ReLU`` with Lucid's gradient override (same forward)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _RedirectedReLUFunction.apply(x)


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
        self.can_stop = isinstance(net, nn.Sequential) and len(set(map(id, self.modules))) == len(self.modules)

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


# --------------------------------------------------------------------------------------------------
# Validation


def image_shape_of(model: nn.Module) -> tuple[int, int, int]:
    """The (C, H, W) input image a model takes (:func:`modularity.arch.input_shape`); raises if unknown.

    Small CNN: its ``in_channels`` x ``image_size``; CIFAR VGG: C x 32 x 32; torchvision models:
    3 x 224 x 224; dense nets: a square 1-channel image if the input width is a square (784 -> 1x28x28),
    else a square 3-channel one (the reference's LUCID MLPs), else it is not image-shaped.
    """
    return input_shape(model)


def _check_image_shape(model: nn.Module, shape: Sequence[int] | None) -> tuple[int, int, int]:
    if shape is None:
        return image_shape_of(model)
    if len(shape) != 3 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape):
        raise ModularityError(f"image_shape must be three positive integers (C, H, W), got {tuple(shape)}")
    c, h, w = (int(s) for s in shape)
    first = layer_specs(model)[0]
    if first.kind == "input" and c * h * w != first.width:
        raise ModularityError(f"image_shape {(c, h, w)} has {c * h * w} pixels but {type(model).__name__} takes "
                              f"{first.width}")
    return (c, h, w)


def _check_unit_set(spec: LayerSpec, units: Any) -> np.ndarray:
    arr = np.asarray(units)
    if arr.ndim != 1:
        raise ModularityError(f"a unit set must be one-dimensional, got shape {arr.shape} in layer {spec.name}")
    if arr.size == 0:
        raise ModularityError(f"empty unit set in layer {spec.name}: a set needs at least one unit")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ModularityError(f"unit indices must be integers, got {arr.dtype} in layer {spec.name}")
    if arr.min() < 0 or arr.max() >= spec.width:
        raise ModularityError(f"unit index out of range for layer {spec.name} of width {spec.width}: "
                              f"{int(arr.min())}..{int(arr.max())}")
    if np.unique(arr).size != arr.size:
        raise ModularityError(f"repeated unit indices in a set of layer {spec.name}")
    return arr.astype(np.int64)


def _visualisable_layer(model: nn.Module, name: str) -> LayerSpec:
    spec = layer_by_name(model, name)
    if not spec.analysed or (spec.activation is None and spec.node is None):
        raise ModularityError(f"layer {name!r} has no activation to maximise (kind {spec.kind}); "
                              "choose a hidden or conv layer")
    return spec


# --------------------------------------------------------------------------------------------------
# Optimisation


def visualize_sets(model: nn.Module, targets: Sequence[tuple[str, Any]], keys: Sequence[ImageKey], seed: int = 0,
                   config: VisConfig | None = None, *, image_shape: Sequence[int] | None = None,
                   batch_size: int | None = 256, device: str | torch.device | None = None,
                   input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> FeatureVisualisation:
    """Optimise one image per target ``(layer name, unit indices)``, in batches, each with its own objective.

    ``keys[i]`` names image i's random stream: its initialisation (and transforms) come from
    ``rng_for(seed, "feature-vis", *keys[i])``, so an image is the same whichever batch it is in.
    ``batch_size`` bounds the images optimised at once (``None``: all); it changes speed and memory, not
    results. ``input_transform`` maps [0, 1] images to what the network expects (e.g. ImageNet
    normalisation); the default feeds them as they are, like the datasets here.
    """
    config = config or VisConfig()
    if len(targets) != len(keys):
        raise ModularityError(f"{len(targets)} targets but {len(keys)} image keys")
    if len(targets) == 0:
        raise ModularityError("nothing to visualise: no targets")
    if batch_size is not None and batch_size < 1:
        raise ModularityError(f"batch_size must be >= 1, got {batch_size}")
    shape = _check_image_shape(model, image_shape)
    specs_by_name: dict[str, LayerSpec] = {}
    checked: list[tuple[str, np.ndarray]] = []
    for layer, units in targets:
        if layer not in specs_by_name:
            specs_by_name[layer] = _visualisable_layer(model, layer)
        checked.append((layer, _check_unit_set(specs_by_name[layer], units)))
    device = torch.device(device) if device is not None else default_device()
    all_specs = list(specs_by_name.values())
    net, points = _working_copy(model, config.relu_gradient_override, device, all_specs)
    point_of = {spec.name: point for spec, point in zip(all_specs, points, strict=True)}
    _check_forward(net, shape, device, input_transform)

    n = len(checked)
    chunk = n if batch_size is None else batch_size
    images, rows = [], []
    for start in range(0, n, chunk):
        idx = list(range(start, min(n, start + chunk)))
        imgs, acts, logits = _optimise_chunk(net, [checked[i] for i in idx], [keys[i] for i in idx], seed,
                                             config, shape, device, specs_by_name, point_of,
                                             input_transform)
        images.append(imgs)
        rows.append(_image_rows([checked[i] for i in idx], acts, logits))
    table = pd.concat(rows, ignore_index=True)
    return FeatureVisualisation(np.concatenate(images), table, config, seed)


def _check_forward(net: nn.Module, shape: tuple[int, int, int], device: torch.device,
                   input_transform: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
    x = torch.zeros(1, *shape, device=device)
    try:
        with torch.no_grad():
            out = net(input_transform(x) if input_transform is not None else x)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:200]
        raise ModularityError(f"{type(net).__name__} does not take images of shape {shape}: {first}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ModularityError(f"{type(net).__name__} must return logits of shape (batch, classes)")


def _optimise_chunk(net: nn.Module, targets: list[tuple[str, np.ndarray]], keys: list[ImageKey], seed: int,
                    config: VisConfig, shape: tuple[int, int, int], device: torch.device,
                    specs_by_name: dict[str, LayerSpec], point_of: dict[str, nn.Module],
                    input_transform: Callable[[torch.Tensor], torch.Tensor] | None,
                    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Optimise one batch of images; returns (images, activations reached, logits)."""
    b = len(targets)
    layers = list(dict.fromkeys(layer for layer, _ in targets))  # in order of first appearance
    specs = [specs_by_name[name] for name in layers]
    masks = torch.zeros(len(layers), b, max(s.width for s in specs))
    for i, (layer, units) in enumerate(targets):
        masks[layers.index(layer), i, torch.from_numpy(units)] = 1.0
    masks = masks.to(device)
    capture = _Activations(net, [point_of[name] for name in layers], input_transform)

    def objective(acts: list[torch.Tensor]) -> torch.Tensor:  # (B,): each image's own objective
        return sum((a * masks[j, :, : a.shape[1]]).sum(1) for j, a in enumerate(acts))  # type: ignore[return-value]

    gens = [rng_for(seed, "feature-vis", *k) for k in keys]
    param = ImageBatch(shape, gens, fft=config.fft, decorrelate=config.decorrelate, sd=config.init_sd,
                       decay_power=config.decay_power).to(device)
    tparams = None
    if config.transforms is not None:
        tgens = [rng_for(seed, "feature-vis-transforms", *k) for k in keys]
        tparams = torch.from_numpy(np.stack([_transform_params(config.transforms, config.steps, g) for g in tgens],
                                            axis=1)).to(device)  # (steps, B, 4)
    opt = torch.optim.Adam(param.parameters(), lr=config.lr)
    for step in range(config.steps):
        opt.zero_grad(set_to_none=True)
        img = param()
        if tparams is not None:
            img = _transform(img, tparams[step], config.transforms.fill)  # type: ignore[union-attr]
        acts, _ = capture(img, need_logits=False)
        (-objective(acts).sum()).backward()  # summed, not averaged: images stay independent
        opt.step()
    with torch.no_grad():
        img = param()
        acts, logits = capture(img, need_logits=True)
        reached = objective(acts)
    assert logits is not None
    return img.cpu().numpy(), reached.cpu().numpy().astype(np.float64), logits.cpu()


def entropy_of_logits(logits: torch.Tensor | np.ndarray) -> np.ndarray:
    """Natural-log entropy of softmax(logits) per row (scipy.stats.entropy), computed in float64.

    Computing the softmax in float64 keeps small entropies accurate: the reference's float32 softmax
    underflowed confident predictions to entropies of ~1e-30 (METHODS.md 9.13).
    """
    from scipy.stats import entropy

    probs = torch.softmax(torch.as_tensor(np.asarray(logits), dtype=torch.float64), dim=-1).numpy()
    return entropy(probs, axis=-1)


def _image_rows(targets: list[tuple[str, np.ndarray]], reached: np.ndarray, logits: torch.Tensor) -> pd.DataFrame:
    probs = torch.softmax(logits.double(), dim=-1)
    conf, pred = probs.max(dim=-1)
    return pd.DataFrame({
        "layer": [layer for layer, _ in targets],
        "size": [units.size for _, units in targets],
        "activation": reached,
        "entropy": entropy_of_logits(logits),
        "predicted_class": pred.numpy().astype(np.int64),
        "confidence": conf.numpy(),
    })


# --------------------------------------------------------------------------------------------------
# Sub-clusters and their random sets


@dataclass
class SubclusterVisualisation:
    """Images of every sub-cluster (draw 0) and its random sets (draws 1..n_random).

    Attributes:
        images: float32 array (S, 1 + n_random, C, H, W).
        table: one row per image, the :class:`FeatureVisualisation` columns plus ``cluster``,
            ``layer_width``, ``subcluster`` (position in ``subclusters``), ``role`` (``true`` or
            ``random``) and ``draw``.
        subclusters: the sub-clusters visualised (after the size filter).
        random_units: for each sub-cluster, its random sets (n_random, size).
        params: the parameters that made it (seed, n_random, size filter, VisConfig fields).
    """

    images: np.ndarray
    table: pd.DataFrame
    subclusters: list[Any]
    random_units: list[np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)


def size_filter(subclusters: Sequence[Any], min_size: int = 4, max_prop: float = 0.8) -> list[Any]:
    """Keep sub-clusters with ``min_size <= size < max_prop * layer_width`` (the reference's Lucid filter).

    The reference kept ``3 < size < 0.8 * width``: its function default was 5 but its stored images
    include size 4 (METHODS.md 4). ``min_size`` is inclusive as in :func:`modularity.subclusters.subclusters`.
    Empty sub-clusters raise instead of being filtered.
    """
    kept = []
    for sc in subclusters:
        size = len(sc.units)
        if size == 0:
            raise ModularityError(f"sub-cluster {sc.layer}/{sc.cluster} is empty")
        if min_size <= size < max_prop * sc.layer_width:
            kept.append(sc)
    return kept


def _draw_random_sets(sc: Any, n_random: int, seed: int, include_isolated: bool) -> np.ndarray:
    """Random same-size sets of the sub-cluster's layer from :func:`modularity.subclusters.random_sets`."""
    from .subclusters import random_sets

    return np.asarray(random_sets(sc, n_random, seed, exclude_isolated=not include_isolated))


def visualize_subclusters(model: nn.Module, subclusters: Sequence[Any], n_random: int = 9, seed: int = 0,
                          config: VisConfig | None = None, *, min_size: int = 4, max_prop: float = 0.8,
                          random_units: Sequence[np.ndarray] | None = None, include_isolated: bool = True,
                          image_shape: Sequence[int] | None = None, batch_size: int | None = 256,
                          device: str | torch.device | None = None,
                          input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                          ) -> SubclusterVisualisation:
    """Images for every sub-cluster passing the size filter and for its ``n_random`` random sets, batched.

    Sub-clusters are objects with ``layer``, ``cluster``, ``units`` and ``layer_width``
    (:class:`modularity.subclusters.SubCluster`). Random sets come from ``random_units`` (one
    (n_random, size) array per sub-cluster *before* filtering) or are drawn with
    :func:`modularity.subclusters.random_sets` (``include_isolated=True``: from all units of the layer,
    as the reference's Lucid draws). Image (sub-cluster s, draw d) is seeded by
    ``(seed, layer, cluster, d)``.
    """
    config = config or VisConfig()
    if n_random < 1:
        raise ModularityError(f"n_random must be >= 1, got {n_random}")
    subclusters = list(subclusters)
    for sc in subclusters:
        spec = _visualisable_layer(model, sc.layer)
        _check_unit_set(spec, sc.units)
        if sc.layer_width != spec.width:
            raise ModularityError(f"sub-cluster {sc.layer}/{sc.cluster} says layer width {sc.layer_width}, "
                                  f"the model's layer has {spec.width}")
    if random_units is not None and len(random_units) != len(subclusters):
        raise ModularityError(f"{len(random_units)} random-set arrays for {len(subclusters)} sub-clusters")
    kept = size_filter(subclusters, min_size, max_prop)
    if not kept:
        raise ModularityError(f"no sub-cluster passes the size filter {min_size} <= size < {max_prop} * width "
                              f"(sizes: {sorted(len(sc.units) for sc in subclusters)})")
    positions = [i for i, sc in enumerate(subclusters) if any(sc is k for k in kept)]
    randoms = []
    for i in positions:
        sc = subclusters[i]
        r = (np.asarray(random_units[i]) if random_units is not None
             else _draw_random_sets(sc, n_random, seed, include_isolated))
        if r.shape != (n_random, len(sc.units)):
            raise ModularityError(f"random sets of {sc.layer}/{sc.cluster} have shape {r.shape}, "
                                  f"expected {(n_random, len(sc.units))}")
        randoms.append(r)

    targets, keys, meta = [], [], []
    for s, (sc, r) in enumerate(zip(kept, randoms, strict=True)):
        for d in range(n_random + 1):
            targets.append((sc.layer, np.asarray(sc.units) if d == 0 else r[d - 1]))
            keys.append((sc.layer, int(sc.cluster), d))
            meta.append((s, int(sc.cluster), sc.layer_width, "true" if d == 0 else "random", d))
    vis = visualize_sets(model, targets, keys, seed, config, image_shape=image_shape, batch_size=batch_size,
                         device=device, input_transform=input_transform)
    table = vis.table
    for col, values in zip(("subcluster", "cluster", "layer_width", "role", "draw"), zip(*meta, strict=True),
                           strict=True):
        table[col] = list(values)
    table = table[["subcluster", "layer", "cluster", "layer_width", "size", "role", "draw", "activation",
                   "entropy", "predicted_class", "confidence"]]
    images = vis.images.reshape(len(kept), n_random + 1, *vis.images.shape[1:])
    params = {"seed": seed, "n_random": n_random, "min_size": min_size, "max_prop": max_prop,
              "include_isolated": include_isolated, "image_shape": list(images.shape[2:]), **config.as_dict()}
    return SubclusterVisualisation(images, table, kept, randoms, params)


# --------------------------------------------------------------------------------------------------
# Statistics


SUBCLUSTER_COLUMNS = ("layer", "cluster", "size", "layer_width", "loss_true", "loss_random_mean",
                      "loss_random_median", "p_loss", "entropy_true", "entropy_random_mean",
                      "entropy_random_median", "p_entropy", "predicted_class")


def coherence_statistics(vis: SubclusterVisualisation, correction: str = "holm", alpha: float = 0.05,
                         ties: str = "strict") -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-sub-cluster rank percentiles and the network summary, via :mod:`modularity.stats`.

    ``loss`` (activation reached, higher = more coherent) is tested right-sided, ``entropy`` (lower =
    more confident) left-sided, each against the sub-cluster's own random sets. The per-sub-cluster
    table has :data:`SUBCLUSTER_COLUMNS` plus ``p_loss_<correction>`` / ``p_entropy_<correction>``
    (corrected across the network's sub-clusters) and the parameters. The summary holds
    ``chi2_p_<stat>``, ``combined_p_<stat>`` (Fisher), ``effect_<stat>`` (the reference's factor,
    METHODS.md 6.2) and the robust effect sizes of :func:`modularity.stats.coherence_summary` for
    ``stat`` in ``loss`` and ``entropy``.
    """
    from . import stats

    t = vis.table
    n_sub, n_random = len(vis.subclusters), vis.params["n_random"]
    df = pd.DataFrame({
        "layer": [sc.layer for sc in vis.subclusters],
        "cluster": [int(sc.cluster) for sc in vis.subclusters],
        "size": [len(sc.units) for sc in vis.subclusters],
        "layer_width": [int(sc.layer_width) for sc in vis.subclusters],
    })
    summary: dict[str, Any] = {"n_subclusters": n_sub, "n_random": n_random, "correction": correction}
    for stat, column, side in (("loss", "activation", "right"), ("entropy", "entropy", "left")):
        values = t.pivot(index="subcluster", columns="draw", values=column).sort_index().to_numpy()
        true, random = values[:, 0], values[:, 1:].T  # random: (n_random, S), draws first
        res = stats.coherence_summary(true, random, side, ties=ties, correction=correction, alpha=alpha,
                                      seed=vis.params["seed"])
        df[f"{stat}_true"] = true
        df[f"{stat}_random_mean"] = random.mean(axis=0)
        df[f"{stat}_random_median"] = np.median(random, axis=0)
        df[f"p_{stat}"] = res["percentiles"]
        df[f"p_{stat}_{correction}"] = res["percentiles_corrected"]
        summary[f"n_significant_{stat}_{correction}"] = int(np.sum(res["percentiles_corrected"] < alpha))
        for key in ("chi2_p", "combined_p", "log_effect", "log_effect_ci", "side"):
            summary[f"{key}_{stat}"] = res[key]
        summary[f"effect_{stat}"] = res["effect_factor"]
    summary.update(ties=ties, alpha=alpha)
    df["predicted_class"] = t[t.draw == 0].sort_values("subcluster")["predicted_class"].to_numpy()
    for key, value in vis.params.items():
        df[key] = json.dumps(value) if isinstance(value, (list, dict)) else value
    summary["params"] = dict(vis.params)
    return df, summary


def input_coherence(model: nn.Module, subclusters: Sequence[Any], n_random: int = 9, steps: int = 256,
                    seed: int = 0, *, lr: float = 0.05, relu_gradient_override: bool = True, fft: bool = True,
                    decorrelate: bool = True, transforms: Transforms | None = None, min_size: int = 4,
                    max_prop: float = 0.8, random_units: Sequence[np.ndarray] | None = None,
                    include_isolated: bool = True, correction: str = "holm", ties: str = "strict",
                    image_shape: Sequence[int] | None = None, batch_size: int | None = 256,
                    device: str | torch.device | None = None,
                    input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    ) -> InputCoherenceResult:
    """Input coherence of a network's sub-clusters (an :class:`~modularity.results.InputCoherenceResult`,
    which unpacks as ``(per-sub-cluster table, network summary)``).

    Optimises an image for each sub-cluster passing ``min_size <= size < max_prop * width`` and for
    ``n_random`` random same-size sets of its layer (all in batches), then tests the activation reached
    (right-sided) and the softmax entropy (left-sided) against the random sets. See
    :func:`visualize_subclusters` and :func:`coherence_statistics`; the images are available from
    :func:`visualize_subclusters` directly.
    """
    config = VisConfig(steps=steps, lr=lr, fft=fft, decorrelate=decorrelate,
                       relu_gradient_override=relu_gradient_override, transforms=transforms)
    vis = visualize_subclusters(model, subclusters, n_random, seed, config, min_size=min_size, max_prop=max_prop,
                                random_units=random_units, include_isolated=include_isolated,
                                image_shape=image_shape, batch_size=batch_size, device=device,
                                input_transform=input_transform)
    from .results import InputCoherenceResult

    return InputCoherenceResult.from_summary(*coherence_statistics(vis, correction=correction, ties=ties), vis)


# --------------------------------------------------------------------------------------------------
# Pictures


def plot_grid(vis: SubclusterVisualisation, path: str | Path, title: str = "",
              class_names: Sequence[str] | None = None, table: pd.DataFrame | None = None) -> Path:
    """A PNG grid: one row per sub-cluster, its image (red frame) then its random sets' images.

    Each image is labelled with the activation reached and the predicted class (with its probability);
    each row with layer, cluster, size / layer width and, if ``table`` (from
    :func:`coherence_statistics`) is given, the two percentiles. Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .utils import atomic_path

    n_sub, n_img = vis.images.shape[:2]
    cell = 1.15
    height = 0.8 + n_sub * (cell + 0.3)
    fig, axes = plt.subplots(n_sub, n_img, figsize=(1.9 + n_img * cell, height), squeeze=False)
    t = vis.table.set_index(["subcluster", "draw"])
    for s in range(n_sub):
        sc = vis.subclusters[s]
        for d in range(n_img):
            ax = axes[s, d]
            img = vis.images[s, d]
            if img.shape[0] == 1:
                ax.imshow(img[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.imshow(np.clip(np.moveaxis(img, 0, -1), 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            row = t.loc[(s, d)]
            cls = int(row["predicted_class"])
            name = class_names[cls] if class_names is not None else str(cls)
            ax.set_title(f"act {row['activation']:.3g}\nclass {name} ({row['confidence']:.0%})", fontsize=6.5, pad=2)
            color, width = ("red", 2.0) if d == 0 else ("0.7", 0.6)
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(width)
        label = f"{sc.layer} c{sc.cluster}\nsize {len(sc.units)}/{sc.layer_width}"
        if table is not None:
            r = table.iloc[s]
            label += f"\np_act {r['p_loss']:.2f}\np_ent {r['p_entropy']:.2f}"
        axes[s, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7.5, labelpad=6)
    for d in range(n_img):
        axes[0, d].annotate("true set" if d == 0 else f"random {d}", (0.5, 1.0), xycoords="axes fraction",
                            xytext=(0, 22), textcoords="offset points", ha="center", fontsize=7.5,
                            fontweight="bold" if d == 0 else "normal")
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.12 / height)
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.35 if title else 0.1) / height))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------
# CLI


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("coherence", help="input coherence of a checkpoint's sub-clusters (feature visualisation)",
                       description="Partition a checkpoint's network, optimise an image for every sub-cluster and "
                                   "its random sets, and write the per-sub-cluster CSV, the per-image CSV, a JSON "
                                   "summary and a PNG grid.")
    p.add_argument("checkpoint", type=Path, nargs="?", help="checkpoint .pt written by `modularity train`")
    from .user_model import add_model_options

    add_model_options(p, data=False)
    p.add_argument("--image-shape", type=int, nargs=3, default=None, metavar=("C", "H", "W"),
                   help="input image shape for --model (default: told from the model)")
    p.add_argument("--k", type=int, default=12, help="number of spectral clusters (default 12)")
    p.add_argument("--seed", type=int, default=0, help="seed of the partition, the random sets and the images")
    p.add_argument("--n-random", type=int, default=9, help="random sets per sub-cluster (default 9)")
    p.add_argument("--steps", type=int, default=256, help="Adam updates per image (default 256)")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default 0.05)")
    p.add_argument("--min-size", type=int, default=4, help="keep sub-clusters with size >= MIN_SIZE (default 4)")
    p.add_argument("--max-prop", type=float, default=0.8, help="... and size < MAX_PROP * layer width (default 0.8)")
    p.add_argument("--no-relu-override", action="store_true", help="plain ReLU gradients (no Lucid override)")
    p.add_argument("--pixels", action="store_true", help="pixel parameterisation instead of Fourier")
    p.add_argument("--transforms", action="store_true", help="random jitter/scale/rotation each step")
    p.add_argument("--correction", default="holm", help="statsmodels multipletests method (default holm)")
    p.add_argument("--ties", default="strict", choices=("strict", "mid", "conservative"),
                   help="how a random image with exactly the true value counts (modularity.stats; default strict)")
    p.add_argument("--batch-size", type=int, default=256, help="images optimised at once (memory, not results)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: <checkpoint folder>/coherence-<pruned|unpruned>-k<K>)")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    from .graph import graph_of
    from .partition import partition
    from .subclusters import subclusters
    from .user_model import resolve_model
    from .utils import atomic_path, write_json_atomic, write_text_atomic

    model, meta, source = resolve_model(args)
    out = args.out or source.parent / f"coherence-{source.stem}-k{args.k}"
    part = partition(graph_of(model), k=args.k, seed=args.seed)
    config = VisConfig(steps=args.steps, lr=args.lr, fft=not args.pixels,
                       relu_gradient_override=not args.no_relu_override,
                       transforms=Transforms() if args.transforms else None)
    vis = visualize_subclusters(model, subclusters(part), args.n_random, args.seed, config, min_size=args.min_size,
                                max_prop=args.max_prop, batch_size=args.batch_size,
                                image_shape=getattr(args, "image_shape", None))
    table, summary = coherence_statistics(vis, correction=args.correction, ties=args.ties)
    context = {"tag": meta.get("tag"), "seed": meta.get("seed"), "pruned": meta.get("pruned"), "k": args.k,
               "checkpoint": str(source), "ncut": float(part.ncut)}
    ids = {"tag": context["tag"], "network_seed": context["seed"], "pruned": context["pruned"], "k": args.k}
    table = pd.concat([pd.DataFrame(ids, index=table.index), table], axis=1)
    images_table = pd.concat([pd.DataFrame(ids, index=vis.table.index), vis.table], axis=1)
    write_text_atomic(out / "subclusters.csv", table.to_csv(index=False))
    write_text_atomic(out / "images.csv", images_table.to_csv(index=False))
    write_json_atomic(out / "summary.json", {**context, **summary})
    with atomic_path(out / "images.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, vis.images)  # through a file object: np.save would append ".npy" to the temporary name
    title = (f"{meta.get('tag')} seed {meta.get('seed')} {'pruned' if meta.get('pruned') else 'unpruned'}, "
             f"k={args.k}: Fisher p (activation) {summary.get('combined_p_loss', float('nan')):.3g}, "
             f"Fisher p (entropy) {summary.get('combined_p_entropy', float('nan')):.3g}")
    plot_grid(vis, out / "grid.png", title=title, table=table)
    print(f"{len(table)} sub-clusters, {args.n_random} random sets each -> {out}")
    print(f"  activation: chi2 p {summary.get('chi2_p_loss', float('nan')):.3g}, "
          f"Fisher p {summary.get('combined_p_loss', float('nan')):.3g}, effect {summary.get('effect_loss')}")
    print(f"  entropy:    chi2 p {summary.get('chi2_p_entropy', float('nan')):.3g}, "
          f"Fisher p {summary.get('combined_p_entropy', float('nan')):.3g}, effect {summary.get('effect_entropy')}")
    return 0


__all__ = [
    "FeatureVisualisation", "ImageBatch", "RedirectedReLU", "SubclusterVisualisation", "Transforms", "VisConfig",
    "coherence_statistics", "entropy_of_logits", "image_shape_of", "input_coherence", "plot_grid", "rfft2d_freqs",
    "size_filter", "visualize_sets", "visualize_subclusters",
]
