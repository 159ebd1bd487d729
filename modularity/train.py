"""Training with magnitude pruning, as the reference does it (docs/methods.md §1.3, 1.4).

Phase 1 trains the network with Adam (Keras defaults: lr 1e-3, eps 1e-7) for ``epochs`` epochs and
saves the *unpruned* checkpoint. Phase 2 continues from the same weights with a fresh Adam for
``pruning_epochs`` epochs under magnitude pruning with TF-MOT's polynomial schedule
``s(t) = 0.9 + (0.5 - 0.9) * (1 - t/end)^3`` (``end`` = steps per epoch x pruning epochs), the mask
recomputed every 10 steps per layer from the kernel magnitudes, applied to every Linear and Conv2d
weight (biases and batch norm unpruned), and saves the *pruned* checkpoint with every kernel at
exactly 90% sparsity.

Regression tags (POLY, :func:`modularity.models.is_regression`) train with the mean squared error
instead of cross-entropy (Keras ``mse``: mean over examples and outputs); their metadata records
``train_mse`` / ``test_mse`` and ``train_loss`` / ``test_loss`` (the MSE plus the regulariser's value,
what Keras reports as ``loss`` / ``val_loss`` and the reference stored) instead of accuracies.

Everything is seeded: the same tag, seed and options give identical weights on the same machine.
Accuracies in the metadata are measured in eval mode (no dropout), unlike the reference's Keras
running training accuracy, which includes dropout noise (docs/methods.md §9.29).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import validate
from .choices import DEFAULT_CHECKPOINT_ROOT
from .cluster_gradient import ClusterGradient
from .data import Dataset, load_dataset
from .errors import ModularityError
from .models import (
    TagSpec,
    apply_mod_init,
    build_model,
    checkpoint_path,
    is_regression,
    save_checkpoint,
    spec_dict,
    tag_spec,
)
from .progress import bar as progress_bar
from .utils import default_device, rng_for, seed_everything, staged_path

INITIAL_SPARSITY, FINAL_SPARSITY, PRUNE_FREQUENCY, PRUNE_POWER = 0.5, 0.9, 10, 3
DEFAULT_ROOT = DEFAULT_CHECKPOINT_ROOT


def polynomial_sparsity(step: int, end_step: int, initial: float = INITIAL_SPARSITY,
                        final: float = FINAL_SPARSITY, power: int = PRUNE_POWER) -> float:
    """TF-MOT ``PolynomialDecay`` sparsity at ``step`` (begin step 0)."""
    frac = min(max(step, 0), end_step) / end_step
    return final + (initial - final) * (1 - frac) ** power


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every Linear and Conv2d kernel, by module name: what the reference prunes."""
    return {name: m.weight for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A 0/1 mask zeroing the ``round(sparsity * n)`` smallest-magnitude entries (stable for ties)."""
    return stacked_magnitude_mask(weight.unsqueeze(0), sparsity)[0]


def stacked_magnitude_mask(weights: torch.Tensor, sparsity: float) -> torch.Tensor:
    """:func:`magnitude_mask` of every network of a stack (N, ...) at once (one network: N = 1).

    The mask is that of a stable ``argsort`` of ``|w|`` cut after ``k`` entries: every entry below the
    k-th smallest magnitude ``t``, then the entries equal to ``t`` in index order until ``k`` are zeroed.
    A selection (``kthvalue``, linear time) and a running count of ties give the same set as the sort
    (n log n), 3-4x faster on the 256x784 and 256x2352 kernels, where pruning epochs spent a fifth of
    their time sorting. With a NaN in the weights (the sort places NaN last) it uses the sort itself;
    ``tests/test_train_batched.py`` checks it against the argsort itself, ties included, and
    ``tests/test_train.py`` a hand-computed case with ties and a NaN.
    """
    n_nets = weights.shape[0]
    mags = weights.detach().abs().reshape(n_nets, -1)
    k = int(round(sparsity * mags.shape[1]))
    if k == 0:
        return torch.ones_like(weights)
    if bool(torch.isnan(mags).any()):
        zero = torch.zeros_like(mags, dtype=torch.bool)
        zero.scatter_(1, torch.argsort(mags, dim=1, stable=True)[:, :k], True)
    else:
        t = mags.kthvalue(k, dim=1, keepdim=True).values
        below, tie = mags < t, mags == t
        zero = below | (tie & (tie.cumsum(1) <= k - below.sum(1, keepdim=True)))
    return (~zero).to(weights.dtype).view_as(weights)


def sparsity_of(model: nn.Module) -> dict[str, float]:
    """Fraction of exactly-zero entries of every prunable kernel."""
    return {name: float((w == 0).float().mean()) for name, w in prunable_weights(model).items()}


def regularisation(model: nn.Module, spec: TagSpec) -> torch.Tensor | float:
    """Keras-style kernel regulariser: l1 * sum|W| or l2 * sum W^2 over every kernel (docs/methods.md §1.3)."""
    if not spec.l1 and not spec.l2:
        return 0.0
    kernels = prunable_weights(model).values()
    if spec.l2:  # if both are set, L2 wins, as in the reference
        return spec.l2 * sum(w.pow(2).sum() for w in kernels)
    return spec.l1 * sum(w.abs().sum() for w in kernels)


@torch.inference_mode()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:
    """Top-1 accuracy in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size].to(device))
        correct += int((logits.argmax(1).cpu() == y[i:i + batch_size]).sum())
    model.train(was_training)
    return correct / len(x)


@torch.inference_mode()
def mean_squared_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:
    """Mean over examples and outputs of the squared error, in eval mode (regression tags)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for i in range(0, len(x), batch_size):
        total += float(((model(x[i:i + batch_size].to(device)).double().cpu() - y[i:i + batch_size].double()) ** 2).sum())
    model.train(was_training)
    return total / (len(x) * y.shape[1])


def _augment(x: torch.Tensor) -> torch.Tensor:
    """The VGG augmentation (Keras ImageDataGenerator): rotation +-15 deg, shifts 0.1, horizontal flip."""
    from torchvision.transforms import v2

    tf = v2.Compose([v2.RandomAffine(degrees=15, translate=(0.1, 0.1)), v2.RandomHorizontalFlip()])
    return torch.stack([tf(img) for img in x])


def _run_phase(model: nn.Module, spec: TagSpec, data: Dataset, epochs: int, gen: torch.Generator,
               device: torch.device, desc: str, progress: bool, prune: bool) -> None:
    """One training phase; with ``prune``, the polynomial magnitude-pruning schedule runs along."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = nn.MSELoss() if is_regression(spec) else nn.CrossEntropyLoss()
    n = len(data.x_train)
    steps_per_epoch = math.ceil(n / spec.batch_size)
    end_step = steps_per_epoch * epochs
    weights = prunable_weights(model)
    masks: dict[str, torch.Tensor] = {}
    # SMALL-MNIST+CLUSTERABILITY-GRADIENT only: NormalizeWeights before each batch, the eigengap term in the loss
    cluster = ClusterGradient(model, spec.cluster_gradient) if spec.cluster_gradient is not None else None
    model.train()
    bar = progress_bar(total=end_step, desc=desc, progress=progress, unit="step")
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for b in range(steps_per_epoch):
            idx = order[b * spec.batch_size:(b + 1) * spec.batch_size]
            xb, yb = data.x_train[idx], data.y_train[idx]
            if spec.augment:
                xb = _augment(xb)
            xb, yb = xb.to(device), yb.to(device)
            if cluster is not None:
                cluster.before_batch()
            if prune and step % PRUNE_FREQUENCY == 0:
                masks = _update_masks(weights, polynomial_sparsity(step, end_step))
            loss = loss_fn(model(xb), yb) + regularisation(model, spec)
            if cluster is not None:
                loss = loss + cluster.loss()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if prune:
                _apply_masks(weights, masks)
            step += 1
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update(1)
    bar.close()
    if prune:  # the schedule ends at the final sparsity
        _apply_masks(weights, _update_masks(weights, FINAL_SPARSITY))


@torch.no_grad()
def _update_masks(weights: dict[str, nn.Parameter], sparsity: float) -> dict[str, torch.Tensor]:
    masks = {name: magnitude_mask(w, sparsity) for name, w in weights.items()}
    _apply_masks(weights, masks)
    return masks


@torch.no_grad()
def _apply_masks(weights: dict[str, nn.Parameter], masks: dict[str, torch.Tensor]) -> None:
    for name, w in weights.items():
        w.mul_(masks[name])


def subsample(data: Dataset, n: int | None, seed: int) -> Dataset:
    """A seeded random subset of ``n`` training images (the test set is kept whole)."""
    if n is None or n >= len(data.x_train):
        return data
    if n <= 0:
        raise ModularityError(f"train_subsample must be positive, got {n}")
    idx = torch.from_numpy(np.sort(rng_for(seed, "train_subsample").permutation(len(data.x_train))[:n]))
    return Dataset(data.name, data.x_train[idx], data.y_train[idx], data.x_test, data.y_test, data.n_classes)


def train(tag: str, seed: int = 0, out: str | Path | None = None, epochs: int | None = None,
          pruning_epochs: int | None = None, train_subsample: int | None = None,
          device: str | torch.device | None = None, progress: bool = True,
          data: Dataset | None = None) -> dict[str, Path]:
    """Train a tag's network, then prune it; return the paths of the unpruned and pruned checkpoints.

    ``epochs`` / ``pruning_epochs`` default to the tag's (the reference's) values; ``train_subsample``
    trains on a seeded random subset of the training set (for quick profiles).
    """
    spec = tag_spec(tag)
    validate.seed(seed)
    if spec.family == "imagenet":
        raise ModularityError(f"{tag} is an ImageNet model: it is pretrained (torchvision), not trained here")
    epochs = spec.epochs if epochs is None else epochs
    pruning_epochs = spec.pruning_epochs if pruning_epochs is None else pruning_epochs
    if epochs < 0 or pruning_epochs < 1:
        raise ModularityError(f"need epochs >= 0 and pruning_epochs >= 1, got {epochs} and {pruning_epochs}")
    root = Path(out) if out is not None else DEFAULT_ROOT
    device = torch.device(device) if device is not None else default_device()
    data = subsample(data if data is not None else load_dataset(spec.dataset), train_subsample, seed)

    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        gen = seed_everything(seed)
        model = build_model(spec)
        if spec.mod_init:
            apply_mod_init(model, gen)
        model.to(device)
        meta: dict[str, Any] = {"tag": tag, "seed": seed, "epochs": epochs, "pruning_epochs": pruning_epochs,
                                "train_subsample": train_subsample, "dataset": spec.dataset, "spec": spec_dict(spec)}
        paths = {}
        t0 = time.perf_counter()
        _run_phase(model, spec, data, epochs, gen, device, f"{tag} s{seed} train", progress, prune=False)
        paths["unpruned"] = _save(model, root, tag, seed, False, data, meta, time.perf_counter() - t0)
        t0 = time.perf_counter()
        _run_phase(model, spec, data, pruning_epochs, gen, device, f"{tag} s{seed} prune", progress, prune=True)
        paths["pruned"] = _save(model, root, tag, seed, True, data, meta, time.perf_counter() - t0)
    finally:
        torch.use_deterministic_algorithms(previous)
    return paths


def _save(model: nn.Module, root: Path, tag: str, seed: int, pruned: bool, data: Dataset,
          meta: dict[str, Any], seconds: float) -> Path:
    model.eval()
    cpu_model = model.to("cpu")
    path = checkpoint_path(root, tag, seed, pruned)
    spec = tag_spec(tag)
    if is_regression(spec):
        with torch.no_grad():
            penalty = float(regularisation(cpu_model, spec))
        train_mse = mean_squared_error(cpu_model, data.x_train, data.y_train)
        test_mse = mean_squared_error(cpu_model, data.x_test, data.y_test)
        metrics = {"train_mse": train_mse, "test_mse": test_mse, "train_loss": train_mse + penalty,
                   "test_loss": test_mse + penalty}
    else:
        metrics = {"train_acc": accuracy(cpu_model, data.x_train, data.y_train),
                   "test_acc": accuracy(cpu_model, data.x_test, data.y_test)}
    save_checkpoint(cpu_model, path, {**meta, "pruned": pruned, **metrics, "sparsity": sparsity_of(cpu_model),
                                      "phase_seconds": round(seconds, 1)})
    return path


# --------------------------------------------------------------------------------------------------
# CLI


def _cli(args: argparse.Namespace) -> int:
    import json

    validate.train_command(args)
    paths = train(args.tag, args.seed, args.out, args.epochs, args.pruning_epochs, args.train_subsample,
                  progress=not args.no_progress)
    for phase, path in paths.items():
        meta = json.loads(staged_path(path.with_suffix(".json")).read_text())  # written with the command's outputs
        sp = meta["sparsity"].values()
        fit = (f"train MSE {meta['train_mse']:.4g}, test MSE {meta['test_mse']:.4g}" if "test_mse" in meta else
               f"train acc {meta['train_acc']:.4f}, test acc {meta['test_acc']:.4f}")
        print(f"{args.tag} seed {args.seed} {phase}: {fit}, "
              f"sparsity {min(sp):.3f}-{max(sp):.3f}, {meta['phase_seconds']:.0f} s -> {path}")
    return 0
