"""The architecture registry: derived layouts equal the paper models' hand-written ones, planted modules
are recovered, declared layouts and bad inputs give one-line errors before any work."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from modularity.arch import LayerSpec, declare_layout, layer_by_name, layer_specs
from modularity.errors import ModularityError
from modularity.graph import graph_of
from modularity.importance import importance
from modularity.lesion import lesion_counts
from modularity.models import MLP, CifarVGG, SmallCNN
from modularity.partition import partition
from modularity.partitions import activation_partition, compare_partitions, from_labels, random_like
from modularity.subclusters import SubCluster, subclusters


def _previous_mlp_layout(model: MLP) -> list[LayerSpec]:
    """The hand-written layout the registry replaced (modularity/layers.py before the registry)."""
    specs = [LayerSpec("input", "input", model.in_features, None, None, analysed=False)]
    for i, h in enumerate(model.hidden, start=1):
        specs.append(LayerSpec(f"hidden{i}", "dense", h, f"fc{i}", f"relu{i}"))
    specs.append(LayerSpec("output", "output", model.n_classes, f"fc{len(model.hidden) + 1}", None, analysed=False))
    return specs


def _previous_conv_layout(model: nn.Module) -> list[LayerSpec]:
    names = dict(model.named_children())
    specs, i = [], 1
    while f"conv{i}" in names:
        bn = f"bn{i}" if f"bn{i}" in names else None
        specs.append(LayerSpec(f"conv{i}", "conv", names[f"conv{i}"].out_channels, f"conv{i}", f"relu{i}", batchnorm=bn))
        i += 1
    return specs


def _old_fields(specs: list[LayerSpec]) -> list[tuple]:  # type: ignore[type-arg]
    return [(s.name, s.kind, s.width, s.weight, s.activation, s.batchnorm, s.analysed) for s in specs]


@pytest.mark.parametrize("model", [MLP(), MLP(64, (32, 32, 32), 10, dropout=0.5), MLP(in_features=2352)])
def test_derived_mlp_layout_equals_the_papers(model: MLP) -> None:
    assert _old_fields(layer_specs(model)) == _old_fields(_previous_mlp_layout(model))


@pytest.mark.parametrize("model", [SmallCNN(), SmallCNN(dropout=True), SmallCNN(1, 8, 10, width=8, dense=16),
                                   CifarVGG(), CifarVGG(dropout=True), CifarVGG(1, widths=(2, 3, 2))])
def test_derived_conv_layout_equals_the_papers(model: nn.Module) -> None:
    assert _old_fields(layer_specs(model)) == _old_fields(_previous_conv_layout(model))


def test_planted_modules_in_a_plain_sequential_are_recovered_exactly() -> None:
    k, sizes = 3, (12, 9, 6, 3)  # per-module widths of input, hidden1, hidden2, output
    model = nn.Sequential(nn.Flatten(), nn.Linear(k * sizes[0], k * sizes[1]), nn.ReLU(),
                          nn.Linear(k * sizes[1], k * sizes[2]), nn.ReLU(), nn.Linear(k * sizes[2], k * sizes[3]))
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for lin in (model[1], model[3], model[5]):
            w = np.zeros(lin.weight.shape)
            o, i = lin.out_features // k, lin.in_features // k
            for m in range(k):
                w[m * o:(m + 1) * o, m * i:(m + 1) * i] = rng.uniform(0.5, 1.5, size=(o, i))
            lin.weight.copy_(torch.as_tensor(w))
    graph = graph_of(model)
    assert [s.name for s in graph.layers] == ["input", "hidden1", "hidden2", "output"]
    planted = np.concatenate([np.repeat(np.arange(k), s) for s in sizes])
    labels = partition(graph, k=k, seed=0).labels
    # Same partition up to renaming the clusters.
    assert len(set(zip(planted.tolist(), labels.tolist(), strict=True))) == k


# ------------------------------------------------------------------------------------------------ declared


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act1, self.fc2 = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.fc1(x))
        if h.sum() > 0:
            h = h * 1.0
        return self.fc2(h)


class Declared(Untraceable):
    pass


class WrongWidth(Untraceable):
    pass


class Typo(Untraceable):
    pass


declare_layout(Declared, [LayerSpec("input", "input", 4, None, None, analysed=False),
                          LayerSpec("hidden1", "dense", 6, "fc1", "act1"),
                          LayerSpec("output", "output", 3, "fc2", None, analysed=False)])
declare_layout(WrongWidth, [LayerSpec("input", "input", 4, None, None, analysed=False),
                            LayerSpec("hidden1", "dense", 7, "fc1", "act1")])
declare_layout(Typo, [LayerSpec("input", "input", 4, None, None, analysed=False),
                      LayerSpec("hidden1", "dense", 6, "fc_1", "act1")])


def test_declared_layout_gives_graph_and_lesions() -> None:
    torch.manual_seed(0)
    model = Declared().eval()
    g = graph_of(model)
    np.testing.assert_array_equal(g.blocks[0].weights, np.abs(model.fc1.weight.detach().double().numpy()).T)
    x = torch.rand(30, 4)
    y = model(x).argmax(1)
    counts = lesion_counts(model, "hidden1", [[0, 1]], x, y)
    with torch.no_grad():
        w = model.fc1.weight.clone()
        b = model.fc1.bias.clone()
        model.fc1.weight[[0, 1]] = 0
        model.fc1.bias[[0, 1]] = 0
        pred = model(x).argmax(1)
        model.fc1.weight.copy_(w)
        model.fc1.bias.copy_(b)
    np.testing.assert_array_equal(counts[0], np.bincount(y[pred == y].numpy(), minlength=3))


def _one_line(exc: pytest.ExceptionInfo) -> str:  # type: ignore[type-arg]
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_untraceable_model_names_the_way_out() -> None:
    with pytest.raises(ModularityError) as exc:
        layer_specs(Untraceable())
    assert "torch.fx cannot trace it" in _one_line(exc) and "declare_layout" in str(exc.value)


def test_declared_layout_with_wrong_width_or_typo() -> None:
    with pytest.raises(ModularityError, match="width 7 but 'fc1' has 6 outputs") as exc:
        layer_specs(WrongWidth())
    _one_line(exc)
    with pytest.raises(ModularityError, match="weight module 'fc_1' not found") as exc:
        layer_specs(Typo())
    _one_line(exc)
    with pytest.raises(ModularityError, match="every such model"):
        declare_layout(nn.Sequential, [])


def test_unsupported_operation_and_unknown_layer() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.cumsum(self.a(x), dim=1))

    with pytest.raises(ModularityError, match="unsupported operation function 'cumsum' after 'hidden1'") as exc:
        graph_of(Odd())
    _one_line(exc)
    with pytest.raises(ModularityError, match="no layer 'hidden9'.*hidden1") as exc:
        layer_by_name(MLP(), "hidden9")
    _one_line(exc)
    assert layer_by_name(MLP(), "fc2").name == "hidden2"  # a weight module's name also finds its layer


# ------------------------------------------------------------------------------------------------ data


@pytest.fixture(scope="module")
def small() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 5)).eval()
    x = torch.rand(40, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _subs(model: nn.Module) -> list[SubCluster]:
    return subclusters(from_labels(graph_of(model), {"hidden1": np.arange(12) % 3, "hidden2": np.arange(10) % 2}))


def test_every_data_form_gives_the_same_table(small: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, y = small

    class Items(Dataset):
        def __len__(self) -> int:
            return len(x)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return x[i], int(y[i])

    subs = _subs(model)
    ref, _ = importance(model, subs, (x, y), n_random=5)
    for data in ((x.numpy(), y.numpy()), TensorDataset(x, y), Items(), DataLoader(TensorDataset(x, y), batch_size=7)):
        table, _ = importance(model, subs, data, n_random=5)
        np.testing.assert_array_equal(table["p_mean"].to_numpy(), ref["p_mean"].to_numpy())


def test_bad_data_fails_before_any_lesion(small: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, y = small
    subs = _subs(model)
    for data, message in [(((x * 255).to(torch.uint8), y), "uint8"), ((x * 255).round(), "data must be"),
                          (((x * 255).round(), y), "unscaled"), ((x, y + 5), r"labels must lie in 0..4"),
                          ((x, torch.nn.functional.one_hot(y, 5)), "one-hot")]:
        t0 = time.perf_counter()
        with pytest.raises(ModularityError, match=message) as exc:
            importance(model, subs, data, n_random=2000)
        _one_line(exc)
        assert time.perf_counter() - t0 < 2


def test_many_outputs_few_test_images_use_the_classes_present() -> None:
    """A network with 1000 outputs and a handful of test images: no failure after the lesions."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(6, 1000)).eval()
    x = torch.rand(20, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    part = from_labels(graph_of(model), {"0": np.arange(6) % 2, "2": np.arange(6) % 3})
    table, summary = importance(model, subclusters(part), (x, y), n_random=4)
    assert summary["n_classes"] == 1000 and summary["n_classes_present"] == len(np.unique(y.numpy()))
    assert summary["classes_present"] == sorted(np.unique(y.numpy()).tolist())
    assert np.isfinite(table["lesioned_balanced_acc"]).all()


# ------------------------------------------------------------------------------------------------ partitions


def test_random_like_keeps_cluster_sizes_per_layer(small: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, _, _ = small
    part = partition(graph_of(model), k=3, seed=0)
    rand = random_like(part, seed=1)
    for s in part.graph.layers:
        assert sorted(part.labels_of(s.name).tolist()) == sorted(rand.labels_of(s.name).tolist())
    assert not np.array_equal(rand.labels, part.labels)


def test_activation_partition_and_comparison_table(small: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, y = small
    spectral = partition(graph_of(model), k=3, seed=0)
    act = activation_partition(model, (x, y), k=3, seed=0)
    assert (act.labels_of("input") == -1).all() and (act.labels_of("output") == -1).all()
    clustered = np.concatenate([act.labels_of("hidden1"), act.labels_of("hidden2")])
    assert np.unique(clustered[clustered >= 0]).size == 3
    table = compare_partitions(model, {"weights": spectral, "activations": act, "random": random_like(spectral)},
                               (x, y), n_random=5,
                               coherence={"n_random": 1, "steps": 2, "min_size": 1, "max_prop": 1.0, "image_shape": (1, 4, 4)})
    assert list(table["partition"]) == ["weights", "activations", "random"]
    assert {"combined_p_means", "effect_means", "n_subclusters", "combined_p_loss", "effect_entropy"} <= set(table.columns)


def test_results_are_typed_and_still_unpack(small: tuple[nn.Module, torch.Tensor, torch.Tensor], tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from modularity.results import ImportanceResult, InputCoherenceResult
    from modularity.visualize import input_coherence

    model, x, y = small
    subs = _subs(model)
    res = importance(model, subs, (x, y), n_random=5)
    assert isinstance(res, ImportanceResult)
    table, summary = res
    assert table is res.table and summary["combined_p_means"] == res.combined_p_means
    assert set(summary["counts"]) == {"unlesioned", "true", "random", "class_sizes"}
    assert json.loads(res.to_json(tmp_path / "s.json"))["n_subclusters"] == res.n_subclusters == len(subs)
    assert res.plot(tmp_path / "a.png").stat().st_size > 0 and res.plot_per_class(tmp_path / "b.png").exists()
    coh = input_coherence(model, subs, n_random=2, steps=2, min_size=1, max_prop=1.0, image_shape=(1, 4, 4))
    assert isinstance(coh, InputCoherenceResult)
    ctable, csummary = coh
    assert csummary["combined_p_loss"] == coh.combined_p_loss and len(ctable) == coh.n_subclusters
    json.loads(coh.to_json())
    assert coh.plot(tmp_path / "g.png").exists()


def test_cli_on_a_users_own_model(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import json
    import sys

    from modularity.cli import main

    (tmp_path / "mynets.py").write_text(
        "from torch import nn\n\n"
        "def make_net():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 10), nn.ReLU(),\n"
        "                         nn.Linear(10, 5))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mynets", None)
    import mynets  # type: ignore[import-not-found]

    torch.manual_seed(0)
    net = mynets.make_net().eval()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    x = torch.rand(40, 1, 4, 4)
    with torch.no_grad():
        y = net(x).argmax(1)
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    common = ["--model", "mynets:make_net", "--weights", str(tmp_path / "w.pt"), "--k", "3", "--out", str(tmp_path)]
    assert main(["cluster", *common]) == 0
    assert json.loads((tmp_path / "w-k3-seed0-summary.json").read_text())["n_vertices"] == 16 + 12 + 10 + 5
    assert main(["importance", *common, "--data", str(tmp_path / "d.npz"), "--n-random", "5", "--no-plots"]) == 0
    summary = json.loads((tmp_path / "w-k3-seed0-importance.json").read_text())
    assert summary["model"] == "mynets:make_net" and summary["n_test"] == 40
    assert main(["coherence", *common, "--n-random", "1", "--steps", "2", "--min-size", "1", "--max-prop", "1.0",
                 "--image-shape", "1", "4", "4", "--out", str(tmp_path / "coh")]) == 0
    assert (tmp_path / "coh" / "summary.json").exists()
    assert main(["importance", "--model", "mynets:make_net"]) == 2  # no --data: one-line error
    assert main(["importance", "--model", "nosuchmodule:f", "--data", str(tmp_path / "d.npz")]) == 2


def test_multi_layer_lesions_equal_weight_zeroing_and_double_lesion_table(
        small: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    from modularity.double_lesion import double_lesion
    from modularity.lesion.multi import multi_lesion_counts

    model, x, y = small
    lesions = [{"hidden1": [0, 3], "hidden2": [1]}, {"hidden1": [5]}, {"hidden2": [0, 2, 4]}]
    got = multi_lesion_counts(model, lesions, x, y)
    for m, les in enumerate(lesions):
        net = copy.deepcopy(model)
        with torch.no_grad():
            for layer, units in les.items():
                lin = net[1] if layer == "hidden1" else net[3]
                lin.weight[units] = 0
                lin.bias[units] = 0
            pred = net(x).argmax(1)
        np.testing.assert_array_equal(got[m], np.bincount(y[pred == y].numpy(), minlength=5))
    np.testing.assert_array_equal(multi_lesion_counts(model, [{"hidden1": [0, 3]}], x, y),
                                  lesion_counts(model, "hidden1", [[0, 3]], x, y))
    subs = _subs(model)
    table = double_lesion(model, subs, (x, y), n_random=5)
    assert len(table) == len(subs) * (len(subs) + 1) // 2
    assert table["p_mean"].between(0, 1).all()


def test_an_operation_the_graph_cannot_express_still_allows_lesions() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2), nn.Conv2d(4, 4, 3),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    with pytest.raises(ModularityError, match="unsupported operation Upsample"):
        graph_of(model)
    x = torch.rand(20, 1, 6, 6)
    with torch.no_grad():
        y = model(x).argmax(1)
        zeroed = copy.deepcopy(model)
        zeroed[0].weight[[1, 2]] = 0
        zeroed[0].bias[[1, 2]] = 0
        pred = zeroed(x).argmax(1)
    np.testing.assert_array_equal(lesion_counts(model, "0", [[1, 2]], x, y)[0], np.bincount(y[pred == y].numpy(), minlength=3))


def test_operations_after_the_last_unit_layer_are_ignored() -> None:
    class SoftmaxHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.log_softmax(self.b(torch.relu(self.a(x))), dim=1).permute(0, 1)

    g = graph_of(SoftmaxHead())
    assert [s.name for s in g.layers] == ["input", "hidden1", "output"] and len(g.blocks) == 2


def test_forward_buffers_by_hand() -> None:
    """Outputs and im2col columns per image, counted by hand: a 3x3 conv on 10x10 gives 8x8 positions."""
    from modularity.arch.buffers import Buffer, forward_buffers
    from modularity.lesion.engine import _bytes_per_image

    net = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 5)).eval()
    x = torch.zeros(1, 4, 10, 10)
    assert forward_buffers(net, x) == [Buffer("0", 8 * 64, 2 * 9 * 64, 4), Buffer("1", 512, 0, 4),
                                       Buffer("2", 512, 0, 4), Buffer("3", 5, 0, 4)]
    assert forward_buffers(net.double(), x.double())[0].itemsize == 8
    net.float()
    before = torch.backends.mkldnn.enabled
    try:
        torch.backends.mkldnn.enabled = False  # pinned numerics: the column matrix is materialised
        assert _bytes_per_image(net, x) == (512 + 1152 + 512 + 512 + 5) * 4
        torch.backends.mkldnn.enabled = True
        assert _bytes_per_image(net, x) == (512 * 3 + 5) * 4
    finally:
        torch.backends.mkldnn.enabled = before
    with pytest.raises(ModularityError, match="batch of one image"):
        forward_buffers(net, torch.zeros(2, 4, 10, 10))
