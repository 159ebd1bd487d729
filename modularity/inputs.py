"""Data in the forms researchers have, turned into one ``(images, labels)`` tensor pair and checked
before any expensive work.

Accepted by :func:`as_xy`: a pair ``(x, y)`` of tensors or numpy arrays, a :class:`modularity.data.Dataset`
(its test split), a ``torch.utils.data.TensorDataset``, any map-style ``Dataset`` whose items are
``(image, label)``, and a ``DataLoader`` yielding ``(images, labels)`` batches.

:func:`check_images` rejects what would silently give wrong numbers: ``uint8`` images or float images
that still hold 0-255 pixel values (convert to float in [0, 1] and apply the model's own
normalisation first), NaN / infinite pixels, non-integer or one-hot labels. Labels are checked against
the model's outputs by :func:`modularity.lesion.check_data`. A subset of the classes is fine:
class-balanced statistics (``modularity.importance``) average over the classes that have test images
and leave the others out (summary field ``classes_present``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .errors import ModularityError


def _tensor(a: Any, what: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach()
    if isinstance(a, np.ndarray):
        if a.dtype == object:
            raise ModularityError(f"{what} is a numpy array of Python objects; give a numeric array")
        return torch.from_numpy(np.ascontiguousarray(a))
    if isinstance(a, (list, tuple)):
        try:
            return torch.as_tensor(np.asarray(a))
        except (TypeError, ValueError):
            raise ModularityError(f"{what} cannot be turned into a tensor") from None
    raise ModularityError(f"{what} must be a tensor or numpy array, got {type(a).__name__}")


def as_xy(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` tensors from any accepted form (module docstring); not yet checked."""
    from torch.utils.data import DataLoader, Dataset, TensorDataset

    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (tuple, list)):
        return _tensor(data[0], "images"), _tensor(data[1], "labels")
    if hasattr(data, "x_test") and hasattr(data, "y_test"):
        return _tensor(data.x_test, "images"), _tensor(data.y_test, "labels")
    if isinstance(data, TensorDataset):
        if len(data.tensors) != 2:
            raise ModularityError(f"a TensorDataset must hold (images, labels); this one holds {len(data.tensors)} tensors")
        return data.tensors[0].detach(), data.tensors[1].detach()
    if isinstance(data, DataLoader):
        xs, ys = [], []
        for i, batch in enumerate(data):
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise ModularityError(f"DataLoader batch {i} is not an (images, labels) pair")
            xs.append(_tensor(batch[0], "images"))
            ys.append(_tensor(batch[1], "labels"))
        if not xs:
            raise ModularityError("the DataLoader yielded no batches")
        return torch.cat(xs), torch.cat(ys)
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        n = len(data)  # type: ignore[arg-type]
        if n == 0:
            raise ModularityError("the dataset is empty")
        items = [data[i] for i in range(n)]
        if not all(isinstance(it, (tuple, list)) and len(it) >= 2 for it in items[:1]):
            raise ModularityError("dataset items must be (image, label) pairs")
        x = torch.stack([_tensor(it[0], "image") for it in items])
        y = torch.as_tensor([int(it[1]) for it in items], dtype=torch.int64)
        return x, y
    raise ModularityError(f"data must be (images, labels) tensors or arrays, a modularity.data.Dataset, a TensorDataset, "
                          f"a map-style Dataset or a DataLoader; got {type(data).__name__}")


def check_images(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reject unscaled pixels, NaNs and label forms that are not class indices; float32 / int64 out."""
    if x.dtype == torch.uint8:
        raise ModularityError("images are uint8 (0-255 pixels); convert them to float in [0, 1] (x.float() / 255) "
                              "and apply the model's own normalisation first")
    if x.dtype == torch.bool or not (x.dtype.is_floating_point or x.dtype in (torch.int16, torch.int32, torch.int64)):
        raise ModularityError(f"images must be floating point, got {x.dtype}")
    if not x.dtype.is_floating_point:
        raise ModularityError(f"images are integers ({x.dtype}); convert them to float in [0, 1] first")
    from .validate import finite_images

    finite_images(x)  # names the count of NaN / inf values and of the images they are in
    if x.numel() and float(x.min()) >= 0 and float(x.max()) > 2 and bool((x == x.round()).all()):
        raise ModularityError(f"images look like unscaled 0-{int(x.max())} pixels (integer values above 2); divide by "
                              "255 and apply the model's own normalisation first")
    if y.ndim == 2 and y.shape[1] > 1 and bool(((y == 0) | (y == 1)).all()):
        raise ModularityError("labels look one-hot (N, classes); give class indices (y.argmax(1))")
    return x.to(torch.float32), y
