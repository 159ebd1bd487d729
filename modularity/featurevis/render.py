"""Render: optimise a batch of images, each for its own objective (Lucid's ``render_vis``, batched)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..arch import LayerSpec, input_shape, layer_by_name, layer_specs
from ..arch.buffers import forward_buffers
from ..errors import ModularityError
from ..utils import default_device, rng_for
from .objectives import UnitSetObjective, _Activations, _working_copy, set_override_active
from .param import ImageBatch
from .transform import Transforms, _transform, _transform_params


@dataclass(frozen=True)
class VisConfig:
    """How each image is optimised (defaults = the reference's Lucid call, docs/methods.md §6.1)."""

    steps: int = 256
    lr: float = 0.05
    fft: bool = True
    decorrelate: bool = True
    init_sd: float = 0.01
    decay_power: float = 1.0
    relu_gradient_override: bool = True
    #: Updates that use the override (the first N, 0-based step < N); None: every update (the default).
    #: Lucid applies it while its global step is <= 16, i.e. to the first 17 updates: ``17`` is Lucid's.
    relu_override_steps: int | None = None
    transforms: Transforms | None = None
    #: Arithmetic of the optimisation: "float32" (the reference's) or "float64". In float64 a last-bit
    #: difference between two CPUs' kernels stays ~1e-16 through the steps, so the images' statistics
    #: agree to every stored digit across machines (the smoke regression check uses it).
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ModularityError(f"steps must be >= 0, got {self.steps}")
        if not self.lr > 0:
            raise ModularityError(f"lr must be > 0, got {self.lr}")
        if not self.init_sd > 0:
            raise ModularityError(f"init_sd must be > 0, got {self.init_sd}")
        if self.relu_override_steps is not None and self.relu_override_steps < 0:
            raise ModularityError(f"relu_override_steps must be >= 0 or None, got {self.relu_override_steps}")
        if self.dtype not in ("float32", "float64"):
            raise ModularityError(f"dtype must be float32 or float64, got {self.dtype!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["transforms"] = None if self.transforms is None else asdict(self.transforms)
        if d["relu_override_steps"] is None:  # every update: recorded only when windowed (older tables unchanged)
            del d["relu_override_steps"]
        if d["dtype"] == "float32":  # recorded only when not the default (older tables unchanged)
            del d["dtype"]
        return d


ImageKey = tuple[int | str, ...]

#: Working memory per chunk that ``batch_size="auto"`` aims at, by device type. On a CPU a chunk whose
#: largest buffer outgrows the caches runs far slower per image: the small CNN's im2col buffer is 1.8 MB
#: per image (conv2: 64 x 3 x 3 inputs x 28 x 28 positions, float32); measured here, 1 thread, 16 steps,
#: 8-24 images at once gave 93-98 images/s, 64 gave 63 and 300 gave 6.4, one at a time 35-40. The MLP's
#: largest buffer is 3 KB per image, so all its images fit in one chunk (the more, the faster there).
#: A GPU wants large batches: its budget is 1 GiB.
AUTO_CHUNK_BYTES = {"cpu": 32 * 2**20, "cuda": 2**30}


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
                   batch_size: int | None | Literal["auto"] = "auto", device: str | torch.device | None = None,
                   input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> FeatureVisualisation:
    """Optimise one image per target ``(layer name, unit indices)``, in batches, each with its own objective.

    ``keys[i]`` names image i's random stream: its initialisation (and transforms) come from
    ``rng_for(seed, "feature-vis", *keys[i])``, so an image is the same whichever batch it is in.
    ``batch_size`` bounds the images optimised at once (``None``: all; ``"auto"``: as many as keep the
    largest per-image buffer of the forward pass within :data:`AUTO_CHUNK_BYTES`, see
    :func:`auto_batch_size`); it changes speed and memory, not results. ``input_transform`` maps [0, 1]
    images to what the network expects (e.g. ImageNet normalisation); the default feeds them as they
    are, like the datasets here.
    """
    config = config or VisConfig()
    if len(targets) != len(keys):
        raise ModularityError(f"{len(targets)} targets but {len(keys)} image keys")
    if len(targets) == 0:
        raise ModularityError("nothing to visualise: no targets")
    if batch_size != "auto" and batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ModularityError(f"batch_size must be an integer >= 1, 'auto' or None, got {batch_size!r}")
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
    net.to(config.torch_dtype)
    point_of = {spec.name: point for spec, point in zip(all_specs, points, strict=True)}
    _check_forward(net, shape, device, input_transform, config.torch_dtype)

    n = len(checked)
    if batch_size == "auto":
        batch_size = auto_batch_size(net, shape, device, input_transform, config.torch_dtype)
    chunk = n if batch_size is None else min(n, batch_size)
    images, rows = [], []
    from ..progress import bar

    steps = bar(desc=f"feature visualisation ({n} images)", total=config.steps * math.ceil(n / chunk), unit="step")
    for start in range(0, n, chunk):
        idx = list(range(start, min(n, start + chunk)))
        imgs, acts, logits = _optimise_chunk(net, [checked[i] for i in idx], [keys[i] for i in idx], seed,
                                             config, shape, device, specs_by_name, point_of,
                                             input_transform, steps.update)
        images.append(imgs)
        rows.append(_image_rows([checked[i] for i in idx], acts, logits))
    steps.close()
    table = pd.concat(rows, ignore_index=True)
    return FeatureVisualisation(np.concatenate(images), table, config, seed)


def _check_forward(net: nn.Module, shape: tuple[int, int, int], device: torch.device,
                   input_transform: Callable[[torch.Tensor], torch.Tensor] | None,
                   dtype: torch.dtype = torch.float32) -> None:
    x = torch.zeros(1, *shape, device=device, dtype=dtype)
    try:
        with torch.no_grad():
            out = net(input_transform(x) if input_transform is not None else x)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:200]
        raise ModularityError(f"{type(net).__name__} does not take images of shape {shape}: {first}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ModularityError(f"{type(net).__name__} must return logits of shape (batch, classes)")


def auto_batch_size(net: nn.Module, shape: tuple[int, int, int], device: torch.device,
                    input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    dtype: torch.dtype = torch.float32) -> int:
    """Images per chunk for ``batch_size="auto"``: the device's :data:`AUTO_CHUNK_BYTES` over the largest
    per-image buffer of one forward pass (a module's output, or a convolution's im2col matrix: input
    channels per group x kernel size x output positions), at least 1.

    Why: a convolution without oneDNN (the pinned numerics) unfolds the whole batch at once, so an
    oversized chunk is limited by memory traffic, not arithmetic (see :data:`AUTO_CHUNK_BYTES`).
    """
    x = torch.zeros(1, *shape, device=device, dtype=dtype)
    buffers = forward_buffers(net, input_transform(x) if input_transform is not None else x)
    largest = max([1] + [max(b.output, b.im2col) for b in buffers])
    budget = AUTO_CHUNK_BYTES.get(device.type, AUTO_CHUNK_BYTES["cpu"])
    return max(1, budget // (largest * torch.empty((), dtype=dtype).element_size()))


def _optimise_chunk(net: nn.Module, targets: list[tuple[str, np.ndarray]], keys: list[ImageKey], seed: int,
                    config: VisConfig, shape: tuple[int, int, int], device: torch.device,
                    specs_by_name: dict[str, LayerSpec], point_of: dict[str, nn.Module],
                    input_transform: Callable[[torch.Tensor], torch.Tensor] | None,
                    on_step: Callable[[], Any] | None = None,
                    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Optimise one batch of images; returns (images, activations reached, logits). ``on_step``: progress."""
    objective = UnitSetObjective(targets, {name: spec.width for name, spec in specs_by_name.items()}, device)
    capture = _Activations(net, [point_of[name] for name in objective.layers], input_transform)

    gens = [rng_for(seed, "feature-vis", *k) for k in keys]
    param = ImageBatch(shape, gens, fft=config.fft, decorrelate=config.decorrelate, sd=config.init_sd,
                       decay_power=config.decay_power).to(device, config.torch_dtype)
    tparams = None
    if config.transforms is not None:
        tgens = [rng_for(seed, "feature-vis-transforms", *k) for k in keys]
        tparams = torch.from_numpy(np.stack([_transform_params(config.transforms, config.steps, g) for g in tgens],
                                            axis=1)).to(device, config.torch_dtype)  # (steps, B, 4)
    opt = torch.optim.Adam(param.parameters(), lr=config.lr)
    window = config.relu_override_steps if config.relu_gradient_override else None
    for step in range(config.steps):
        if window is not None and step in (0, window):
            set_override_active(net, step < window)
        opt.zero_grad(set_to_none=True)
        img = param()
        if tparams is not None:
            img = _transform(img, tparams[step], config.transforms.fill)  # type: ignore[union-attr]
        acts, _ = capture(img, need_logits=False)
        (-objective(acts).sum()).backward()  # summed, not averaged: images stay independent
        opt.step()
        if on_step is not None:
            on_step()
    with torch.no_grad():
        img = param()
        acts, logits = capture(img, need_logits=True)
        reached = objective(acts)
    assert logits is not None
    return img.float().cpu().numpy(), reached.cpu().numpy().astype(np.float64), logits.cpu()


def entropy_of_logits(logits: torch.Tensor | np.ndarray) -> np.ndarray:
    """Natural-log entropy of softmax(logits) per row (scipy.stats.entropy), computed in float64.

    Computing the softmax in float64 keeps small entropies accurate: the reference's float32 softmax
    underflowed confident predictions to entropies of ~1e-30 (docs/methods.md §9.13).
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
