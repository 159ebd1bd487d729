"""Train several MLPs at once (seeds, and tags of one MLP architecture), each exactly as if trained alone.

:func:`train_many` runs :func:`modularity.train.train`'s recipe (docs/methods.md §1.3, 1.4: Adam, then a
second Adam under the polynomial magnitude-pruning schedule) for N networks in one loop: their
parameters are stacked along a leading network axis, so each step is one batched matrix product per
layer (``torch.baddbmm``) and one Adam update per stacked tensor instead of N. Everything that makes a
network what it is stays per network:

* initial weights: built by :func:`modularity.models.build_model` after ``seed_everything(seed)``, as
  ``train`` does (MOD-INIT with the network's own generator);
* data order: the network's own ``torch.Generator`` (``randperm`` per epoch), its own training subset
  (``train_subsample`` is drawn with its own seed);
* dropout: a per-network generator holding the global RNG state that ``train`` would have after
  building the model, and the same ``bernoulli_(1 - p)`` / ``div_(1 - p)`` noise as ``F.dropout``;
* loss: the network's own mean cross-entropy plus its own L1 / L2 kernel penalty;
* pruning masks: per network and per layer (:func:`modularity.train.magnitude_mask`).

**Exactness.** On the CPU each network's weights are bitwise equal to training it alone with
``train(tag, seed, ...)`` in a process with the same number of torch threads (``tests/test_train_batched.py``
checks it). This is by construction, not by tolerance: the forward product ``baddbmm`` of a stack
equals ``addmm`` of each slice (what ``nn.Linear`` calls), and so do ``bmm(grad, W)`` (the input
gradient) and the bias gradient ``grad.sum(1)``; the weight gradient is computed per network with
the very product ``nn.Linear``'s backward uses (``grad.t().mm(x)``), because a batched ``bmm`` of it
differs in the last bits on the 256x10 output layer; Adam is elementwise, so stacking does not change
it. On a GPU the same code runs, but bitwise equality with one-at-a-time training is not claimed.

The pipeline can call it wherever it trains several (tag, seed) pairs of MLPs with the same options::

    paths = train_many([("MNIST", s) for s in range(5)], out=root, epochs=20, pruning_epochs=20)

and gets, per job, the same ``{"unpruned": path, "pruned": path}`` as ``train`` returns, at the same
checkpoint paths, with the same weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import Dataset, load_dataset
from .errors import ModularityError
from .models import MLP, TagSpec, apply_mod_init, build_model, spec_dict, tag_spec
from .train import DEFAULT_ROOT, FINAL_SPARSITY, PRUNE_FREQUENCY, _save, polynomial_sparsity, stacked_magnitude_mask, subsample
from .utils import default_device, seed_everything

DROPOUT_P = 0.5  # models.build_model's MLP dropout


class _StackedLinear(torch.autograd.Function):
    """``y[n] = x[n] @ w[n].T + b[n]`` for a stack of N networks, with ``nn.Linear``'s exact arithmetic.

    Shapes: x (N, B, in), w (N, out, in), b (N, out) -> (N, B, out).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        x, w = ctx.saved_tensors
        grad_x = torch.bmm(grad, w) if ctx.needs_input_grad[0] else None
        # addmm's backward for a transposed weight: grad.t().mm(x) per network (bmm differs in the last bits).
        grad_w = torch.stack([g.t().mm(xi) for g, xi in zip(grad.unbind(0), x.unbind(0), strict=True)])
        return grad_x, grad_w, grad.sum(1)


@dataclass
class _Net:
    """One network of the batch: its recipe, data, generators and output bookkeeping."""

    tag: str
    seed: int
    spec: TagSpec
    data: Dataset
    order_gen: torch.Generator  # data order (train's ``gen``)
    dropout_gen: torch.Generator | None  # the global RNG stream train's dropout would draw from
    meta: dict[str, Any]


class StackedMLP:
    """The parameters of N same-shaped MLPs, stacked: ``weights[l]`` (N, out, in), ``biases[l]`` (N, out)."""

    def __init__(self, models: Sequence[MLP], device: torch.device) -> None:
        layers = [[m for m in model.modules() if isinstance(m, torch.nn.Linear)] for model in models]
        shapes = {tuple(tuple(lin.weight.shape) for lin in net) for net in layers}
        if len(shapes) != 1:
            raise ModularityError(f"train_many needs networks of one architecture, got layer shapes {sorted(shapes)}")
        self.weights = [torch.stack([net[i].weight.detach() for net in layers]).to(device).requires_grad_()
                        for i in range(len(layers[0]))]
        self.biases = [torch.stack([net[i].bias.detach() for net in layers]).to(device).requires_grad_()
                       for i in range(len(layers[0]))]

    def parameters(self) -> list[torch.Tensor]:
        return [p for pair in zip(self.weights, self.biases, strict=True) for p in pair]

    def forward(self, x: torch.Tensor, noise: list[torch.Tensor | None]) -> torch.Tensor:
        """x (N, B, in_features) -> logits (N, B, classes); ``noise[l]`` scales hidden layer l (dropout)."""
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = _StackedLinear.apply(h, w, b)
            if i < last:
                h = torch.relu(h)
                if noise[i] is not None:
                    h = h * noise[i]
        return h

    def load_into(self, model: MLP, n: int) -> MLP:
        """Copy network ``n``'s parameters into ``model`` (on the CPU) and return it."""
        lins = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        with torch.no_grad():
            for lin, w, b in zip(lins, self.weights, self.biases, strict=True):
                lin.weight.copy_(w[n].cpu())
                lin.bias.copy_(b[n].cpu())
        return model


def _check_jobs(jobs: Sequence[tuple[str, int]]) -> list[TagSpec]:
    if not jobs:
        raise ModularityError("train_many needs at least one (tag, seed) job")
    if len(set(jobs)) != len(jobs):
        raise ModularityError("train_many got the same (tag, seed) twice; their checkpoints would collide")
    specs = [tag_spec(tag) for tag, _ in jobs]
    for spec in specs:
        if spec.family != "mlp":
            raise ModularityError(f"train_many trains MLPs only; {spec.tag} is a {spec.family} (use modularity.train)")
        if spec.cluster_gradient is not None:
            raise ModularityError(f"train_many has no eigengap term; train {spec.tag} with modularity.train")
    for attr in ("dataset", "batch_size"):
        values = {getattr(s, attr) for s in specs}
        if len(values) != 1:
            raise ModularityError(f"train_many needs one {attr} for all networks, got {sorted(values)}")
    return specs


def _noise(nets: list[_Net], batch: int, widths: list[int], device: torch.device) -> list[torch.Tensor | None]:
    """Dropout scales per hidden layer, (N, B, width): ``F.dropout``'s noise for dropout nets, ones otherwise."""
    if not any(net.dropout_gen is not None for net in nets):
        return [None] * len(widths)
    out: list[torch.Tensor | None] = []
    for width in widths:  # layer order = the order train's forward pass draws them
        per_net = []
        for net in nets:
            if net.dropout_gen is None:
                per_net.append(torch.ones(batch, width))
            else:
                per_net.append(torch.empty(batch, width).bernoulli_(1 - DROPOUT_P, generator=net.dropout_gen)
                               .div_(1 - DROPOUT_P))
        out.append(torch.stack(per_net).to(device))
    return out


def _regularisation(stack: StackedMLP, nets: list[_Net], device: torch.device) -> torch.Tensor | float:
    """Each network's Keras kernel penalty (L2 wins over L1, as in ``train.regularisation``), summed."""
    l2 = torch.tensor([n.spec.l2 for n in nets], dtype=torch.float32, device=device)
    l1 = torch.tensor([0.0 if n.spec.l2 else n.spec.l1 for n in nets], dtype=torch.float32, device=device)
    total: torch.Tensor | float = 0.0
    if bool(l2.any()):
        total = total + (l2 * sum(w.pow(2).sum((1, 2)) for w in stack.weights)).sum()
    if bool(l1.any()):
        total = total + (l1 * sum(w.abs().sum((1, 2)) for w in stack.weights)).sum()
    return total


@torch.no_grad()
def _update_masks(stack: StackedMLP, sparsity: float) -> list[torch.Tensor]:
    masks = [stacked_magnitude_mask(w, sparsity) for w in stack.weights]
    _apply_masks(stack, masks)
    return masks


@torch.no_grad()
def _apply_masks(stack: StackedMLP, masks: list[torch.Tensor]) -> None:
    for w, m in zip(stack.weights, masks, strict=True):
        w.mul_(m)


def _run_phase(stack: StackedMLP, nets: list[_Net], epochs: int, device: torch.device, desc: str,
               progress: bool, prune: bool) -> None:
    """One phase of ``train._run_phase`` for every network of the stack."""
    opt = torch.optim.Adam(stack.parameters(), lr=1e-3, eps=1e-7)
    n = len(nets[0].data.x_train)
    batch_size = nets[0].spec.batch_size
    steps_per_epoch = math.ceil(n / batch_size)
    end_step = steps_per_epoch * epochs
    widths = [w.shape[1] for w in stack.weights[:-1]]
    masks: list[torch.Tensor] = []
    bar = tqdm(total=end_step, desc=desc, disable=not progress, unit="step", leave=False)
    step = 0
    for _ in range(epochs):
        orders = [torch.randperm(n, generator=net.order_gen) for net in nets]
        for b in range(steps_per_epoch):
            idx = [order[b * batch_size:(b + 1) * batch_size] for order in orders]
            xb = torch.stack([net.data.x_train[i].flatten(1) for net, i in zip(nets, idx, strict=True)]).to(device)
            yb = [net.data.y_train[i].to(device) for net, i in zip(nets, idx, strict=True)]
            if prune and step % PRUNE_FREQUENCY == 0:
                masks = _update_masks(stack, polynomial_sparsity(step, end_step))
            logits = stack.forward(xb, _noise(nets, len(idx[0]), widths, device))
            loss = sum(F.cross_entropy(lg, y) for lg, y in zip(logits.unbind(0), yb, strict=True))
            loss = loss + _regularisation(stack, nets, device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if prune:
                _apply_masks(stack, masks)
            step += 1
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item() / len(nets):.3f}")
            bar.update(1)
    bar.close()
    if prune:
        _apply_masks(stack, _update_masks(stack, FINAL_SPARSITY))


def train_many(jobs: Sequence[tuple[str, int]], out: str | Path | None = None, epochs: int | None = None,
               pruning_epochs: int | None = None, train_subsample: int | None = None,
               device: str | torch.device | None = None, progress: bool = True,
               data: Dataset | None = None) -> list[dict[str, Path]]:
    """Train and prune the MLP of every ``(tag, seed)`` job together; return each job's checkpoint paths.

    Options mean what they mean for :func:`modularity.train.train` and apply to every job; the tags
    must share dataset, batch size and epoch counts (the MLP variants of one dataset do). Returns one
    ``{"unpruned": path, "pruned": path}`` per job, in job order. The metadata's ``phase_seconds`` is
    the whole batch's phase time; ``batched_with`` names the jobs trained together.
    """
    jobs = [(str(tag), int(seed)) for tag, seed in jobs]
    specs = _check_jobs(jobs)
    epoch_counts = {(s.epochs if epochs is None else epochs, s.pruning_epochs if pruning_epochs is None else pruning_epochs)
                    for s in specs}
    if len(epoch_counts) != 1:
        raise ModularityError(f"train_many needs one (epochs, pruning_epochs) for all networks, got {sorted(epoch_counts)}")
    (n_epochs, n_prune), = epoch_counts
    if n_epochs < 0 or n_prune < 1:
        raise ModularityError(f"need epochs >= 0 and pruning_epochs >= 1, got {n_epochs} and {n_prune}")
    root = Path(out) if out is not None else DEFAULT_ROOT
    device = torch.device(device) if device is not None else default_device()
    full = data if data is not None else load_dataset(specs[0].dataset)

    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        nets, models = [], []
        for (tag, seed), spec in zip(jobs, specs, strict=True):
            gen = seed_everything(seed)
            model = build_model(spec)
            if spec.mod_init:
                apply_mod_init(model, gen)
            dropout_gen = None
            if spec.dropout:
                dropout_gen = torch.Generator()
                dropout_gen.set_state(torch.get_rng_state())
            net_data = subsample(full, train_subsample, seed)
            meta = {"tag": tag, "seed": seed, "epochs": n_epochs, "pruning_epochs": n_prune,
                    "train_subsample": train_subsample, "dataset": spec.dataset, "spec": spec_dict(spec),
                    "batched_with": [f"{t} s{s}" for t, s in jobs]}
            nets.append(_Net(tag, seed, spec, net_data, gen, dropout_gen, meta))
            models.append(model)
        if len({len(net.data.x_train) for net in nets}) != 1:
            raise ModularityError("train_many needs the same number of training images for every network")
        stack = StackedMLP(models, device)
        label = f"{len(nets)} MLPs"
        t0 = time.perf_counter()
        _run_phase(stack, nets, n_epochs, device, f"{label} train", progress, prune=False)
        seconds = time.perf_counter() - t0
        paths: list[dict[str, Path]] = [{} for _ in nets]
        for i, net in enumerate(nets):
            paths[i]["unpruned"] = _save(stack.load_into(build_model(net.spec), i), root, net.tag, net.seed, False,
                                         net.data, net.meta, seconds)
        t0 = time.perf_counter()
        _run_phase(stack, nets, n_prune, device, f"{label} prune", progress, prune=True)
        seconds = time.perf_counter() - t0
        for i, net in enumerate(nets):
            paths[i]["pruned"] = _save(stack.load_into(build_model(net.spec), i), root, net.tag, net.seed, True,
                                       net.data, net.meta, seconds)
    finally:
        torch.use_deterministic_algorithms(previous)
    return paths
