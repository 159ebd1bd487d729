"""Random per-step transforms at a fixed image size (Lucid's ``transform``: jitter, scale, rotate)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


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
