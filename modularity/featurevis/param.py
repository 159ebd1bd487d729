"""Image parameterisation (Lucid's ``param``): Fourier coefficients with 1/f scaling, colour decorrelation,
a sigmoid onto [0, 1]; one seed per image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

# Lucid's colour correlation (square root of the ImageNet colour covariance, SVD form), normalised so
# that its largest column has unit norm (lucid.optvis.param.color._linear_decorelate_color).
_COLOR_CORRELATION_SVD_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]],
                                       dtype=np.float32)
_COLOR_CORRELATION = _COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(_COLOR_CORRELATION_SVD_SQRT, axis=0))

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
