"""The CLI on a researcher's own network: ``--model package.module:factory --weights state_dict.pt
--data file.npz`` instead of a tag checkpoint.

* ``--model``: ``module:attribute`` where the attribute is an ``nn.Module`` class or a function returning
  a model, called without arguments (the module must be importable: on ``PYTHONPATH`` or the current
  folder).
* ``--weights``: a ``state_dict`` saved with ``torch.save(model.state_dict(), path)`` (read with
  ``weights_only=True``); optional (random weights otherwise).
* ``--data``: an ``.npz`` with arrays ``x`` and ``y`` (or ``x_test`` and ``y_test``): float images in
  the model's input range and integer labels.

Tag checkpoints (``python -m modularity importance CHECKPOINT``) keep working as before.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import ModularityError


def build_user_model(spec: str, weights: Path | None = None) -> nn.Module:
    """Import ``module:factory``, build the model, load ``weights``; eval mode."""
    if ":" not in spec:
        raise ModularityError(f"--model must be MODULE:FACTORY (e.g. mynets:make_net), got {spec!r}")
    mod_name, attr = spec.split(":", 1)
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModularityError(f"cannot import {mod_name!r} for --model: {exc}") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise ModularityError(f"module {mod_name!r} has no attribute {attr!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ModularityError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        if not weights.is_file():
            raise ModularityError(f"weights not found: {weights}")
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - unpickling raises many types
            raise ModularityError(f"cannot read {weights} as a state_dict: {type(exc).__name__}") from None
        if not isinstance(state, dict):
            raise ModularityError(f"{weights} holds a {type(state).__name__}, not a state_dict")
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModularityError(f"weights {weights} do not fit {spec}: {' '.join(str(exc).split())[:200]}") from None
    return model.eval()


def load_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` from an ``.npz`` with ``x``/``y`` or ``x_test``/``y_test``."""
    if not path.is_file():
        raise ModularityError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            for xk, yk in (("x", "y"), ("x_test", "y_test")):
                if {xk, yk} <= keys:
                    return torch.from_numpy(f[xk]), torch.from_numpy(f[yk])
    except (OSError, ValueError) as exc:
        raise ModularityError(f"cannot read {path} as .npz: {exc}") from None
    raise ModularityError(f"{path} needs arrays x and y (or x_test and y_test); it has {', '.join(sorted(keys))}")


def resolve_model(args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any], Path]:
    """``(model, metadata, path naming the outputs)`` from ``--model`` or the tag checkpoint."""
    if getattr(args, "model", None):
        model = build_user_model(args.model, args.weights)
        source = args.weights if args.weights is not None else Path(args.model.replace(":", "-").replace(".", "-"))
        return model, {"tag": None, "model": args.model, "seed": None, "pruned": None}, source
    if args.checkpoint is None:
        raise ModularityError("give a checkpoint, or --model MODULE:FACTORY [--weights W.pt]")
    from .models import load_checkpoint

    model, meta = load_checkpoint(args.checkpoint)
    return model, meta, args.checkpoint
