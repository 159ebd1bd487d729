"""Researchers' own networks through the registry: graph -> partition -> sub-clusters -> importance ->
input coherence, and lesion counts equal to an independent weight-zeroing lesion, for every family."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from modularity.arch import analysed_layers, layer_specs, layout_of
from modularity.graph import graph_of
from modularity.importance import importance
from modularity.lesion import lesion_counts
from modularity.partition import partition
from modularity.partitions import from_labels
from modularity.subclusters import subclusters
from modularity.visualize import input_coherence


class FunctionalMLP(nn.Module):
    """A custom module whose activations are functions, not modules."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(64, 24), nn.Linear(24, 20), nn.Linear(20, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        return self.c(F.gelu(self.b(torch.relu(self.a(x)))))


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(out)))


class ResidualCNN(nn.Module):
    """A hand-written residual CNN (functional ReLUs, additions)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.block = Block(6)
        self.head = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(F.relu(self.stem(x)))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _seq_mlp(act: type[nn.Module], norm: bool = False) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(64, 24), act()]
    if norm:
        layers += [nn.LayerNorm(24), nn.Dropout(0.2)]
    return nn.Sequential(*layers, nn.Linear(24, 20), act(), nn.Dropout(0.1), nn.Linear(20, 10))


def _seq_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10))


FAMILIES: dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int]]] = {
    "seq-relu": (lambda: _seq_mlp(nn.ReLU), (1, 8, 8)),
    "seq-gelu": (lambda: _seq_mlp(nn.GELU), (1, 8, 8)),
    "seq-tanh": (lambda: _seq_mlp(nn.Tanh), (1, 8, 8)),
    "seq-layernorm-dropout": (lambda: _seq_mlp(nn.ReLU, norm=True), (1, 8, 8)),
    "functional-mlp": (FunctionalMLP, (1, 8, 8)),
    "seq-cnn-bn": (_seq_cnn, (1, 8, 8)),
    "residual-cnn": (ResidualCNN, (1, 8, 8)),
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (3, 32, 32)),
    "vgg11": (lambda: _small_head(torchvision.models.vgg11(num_classes=10)), (3, 32, 32)),
    "vgg11-full": (lambda: torchvision.models.vgg11(num_classes=10), (3, 32, 32)),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(num_classes=10), (3, 32, 32)),
    "densenet121": (lambda: torchvision.models.densenet121(num_classes=10), (3, 32, 32)),
    "resnet50": (lambda: torchvision.models.resnet50(num_classes=10), (3, 32, 32)),
}
TORCHVISION = {"resnet18", "vgg11", "vgg11-full", "mobilenet_v2", "densenet121", "resnet50"}
SLOW = {"densenet121", "resnet50", "vgg11-full"}


def _small_head(model: nn.Module) -> nn.Module:
    """torchvision VGG's conv layers with a small head (its 4096-wide classifier holds 100M weights)."""
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Sequential(nn.Linear(512, 32), nn.ReLU(), nn.Linear(32, 10))
    return model


def _params(names: list[str]) -> list:  # type: ignore[type-arg]
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


def _build(name: str, n_images: int = 24) -> tuple[nn.Module, torch.Tensor, torch.Tensor, tuple[int, int, int]]:
    """A seeded random network in eval mode, random images, labels = its own float64 predictions (a few
    flipped), so lesions have something to lose."""
    factory, shape = FAMILIES[name]
    torch.manual_seed(0)
    model = factory().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    x = torch.rand(n_images, *shape, generator=g)
    with torch.no_grad():
        y = copy.deepcopy(model).double()(x.double()).argmax(1)
    y[:3] = (y[:3] + 1) % 10
    return model, x, y, shape


def zeroed_weight_counts(model: nn.Module, layer: str, sets: list[np.ndarray], x: torch.Tensor, y: torch.Tensor
                         ) -> np.ndarray:
    """Independent oracle: zero the units' incoming weights and bias (or, where a norm reads the layer's
    output, that norm's gain and shift) in a float64 copy, and run a plain forward pass. Equal to zeroing
    the post-activation value because every activation used here maps 0 to 0."""
    spec = next(s for s in layer_specs(model) if s.name == layer)
    m = copy.deepcopy(model).double().eval()
    own = layout_of(model).own_norm.get(layer)
    target = m.get_submodule(own if own is not None else spec.weight)
    saved = [p.detach().clone() for p in (target.weight, target.bias) if p is not None]
    out = []
    with torch.no_grad():
        for units in sets:
            idx = torch.as_tensor(np.asarray(units, dtype=np.int64))
            for p in (target.weight, target.bias):
                if p is not None:
                    p[idx] = 0
            pred = m(x.double()).argmax(1)
            out.append(np.bincount(y[pred == y].numpy(), minlength=10))
            for p, v in zip([p for p in (target.weight, target.bias) if p is not None], saved, strict=True):
                p.copy_(v)
    return np.stack(out)


def _sampled_sets(width: int, seed: int, few: bool = False) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = (max(1, width // 3), width - 1) if few else (1, max(1, width // 3), width - 1)
    return [rng.choice(width, s, replace=False) for s in sizes]


def _layers_to_check(model: nn.Module, name: str) -> list[str]:
    names = [s.name for s in analysed_layers(model)]
    if name in ("resnet18",) or len(names) <= 8:
        return names  # every layer (resnet18: all 20 convs)
    rng = np.random.default_rng(0)
    return sorted(set([names[0], names[-1], *rng.choice(names, 6, replace=False)]), key=names.index)


@pytest.mark.parametrize("name", _params(list(FAMILIES)))
def test_lesion_counts_equal_a_weight_zeroing_lesion(name: str) -> None:
    big = name in TORCHVISION
    model, x, y, _ = _build(name, n_images=10 if big else 24)
    layers = _layers_to_check(model, name)
    if name == "resnet18":
        assert len(layers) == 20
    for i, layer in enumerate(layers):
        width = next(s.width for s in layer_specs(model) if s.name == layer)
        sets = _sampled_sets(width, i, few=big)
        expected = zeroed_weight_counts(model, layer, sets, x, y)
        np.testing.assert_array_equal(lesion_counts(model, layer, sets, x, y), expected, err_msg=f"{name} {layer}")


def test_fast_engine_runs_on_plain_sequentials_and_hooks_elsewhere() -> None:
    for name, method in (("seq-relu", "fast"), ("seq-gelu", "fast"), ("seq-cnn-bn", "fast"),
                         ("functional-mlp", "hooks"), ("residual-cnn", "hooks")):
        model, x, y, _ = _build(name)
        info: dict = {}
        layer = analysed_layers(model)[0].name
        lesion_counts(model, layer, [[0]], x, y, stats=info)
        assert info["method"] == method, name


PIPELINE = [n for n in FAMILIES if n != "vgg11-full"]


@pytest.mark.parametrize("name", _params(PIPELINE))
def test_graph_partition_subclusters_importance_coherence(name: str) -> None:
    model, x, y, shape = _build(name, n_images=16)
    graph = graph_of(model)
    assert graph.n_vertices == sum(s.width for s in layer_specs(model))
    # ARPACK's shift-invert factorisation does not fit resnet50's 26 560-vertex graph in memory.
    part = partition(graph, k=4, seed=0, n_init=2, eigen_solver="lobpcg" if graph.n_vertices > 20000 else "arpack")
    assert part.labels.shape == (graph.n_vertices,)
    split = [s.name for s in analysed_layers(model) if np.unique(part.labels_of(s.name)).size > 1]
    if not split:  # random-weight deep nets often cluster by layer: test a given partition instead
        rng = np.random.default_rng(0)
        part = from_labels(graph, {s.name: rng.integers(0, 3, s.width) for s in analysed_layers(model)})
        split = [s.name for s in analysed_layers(model)]
    subs = subclusters(part, layers=split[:3])
    table, summary = importance(model, subs, (x, y), n_random=3, complete="skip")
    assert len(table) == len(subs) and summary["n_test"] == len(y)
    coh_table, coh_summary = input_coherence(model, subs, n_random=1, steps=2, min_size=1, max_prop=1.0,
                                             image_shape=shape, batch_size=None)
    assert len(coh_table) >= 1 and "combined_p_loss" in coh_summary
