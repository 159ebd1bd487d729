"""Graphification: hand-computed adjacencies for MLPs, conv kernels, batch norm and residual nets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from modularity.arch import layout_of
from modularity.errors import UnsupportedModelError
from modularity.graph import graph_of, kernel_norms
from modularity.models import MLP, CifarVGG, SmallCNN


def _set(module: nn.Module, weight: np.ndarray) -> None:
    with torch.no_grad():
        module.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))


def _set_bn(bn: nn.BatchNorm2d, gamma: np.ndarray, var: np.ndarray) -> None:
    with torch.no_grad():
        bn.weight.copy_(torch.as_tensor(gamma, dtype=torch.float32))
        bn.running_var.copy_(torch.as_tensor(var, dtype=torch.float32))
        bn.running_mean.uniform_(-1, 1)  # must not matter
        bn.bias.uniform_(-1, 1)  # must not matter


# ------------------------------------------------------------------------------------------------ MLP


def test_mlp_graph_is_the_block_tridiagonal_abs_weight_matrix() -> None:
    model = MLP(in_features=2, hidden=(3,), n_classes=2)
    w1 = np.array([[1.0, -2.0], [0.0, 3.0], [-0.5, 0.25]])  # torch layout (out=3, in=2)
    w2 = np.array([[4.0, 0.0, -1.0], [0.5, -6.0, 2.0]])  # (out=2, in=3)
    _set(model.fc1, w1)
    _set(model.fc2, w2)
    with torch.no_grad():
        model.fc1.bias.fill_(100.0)  # biases are ignored
    g = graph_of(model)
    # vertices: input0 input1 | hidden0 hidden1 hidden2 | out0 out1
    expected = np.array([
        [0, 0, 1, 0, .5, 0, 0],
        [0, 0, 2, 3, .25, 0, 0],
        [1, 2, 0, 0, 0, 4, .5],
        [0, 3, 0, 0, 0, 0, 6],
        [.5, .25, 0, 0, 0, 1, 2],
        [0, 0, 4, 0, 1, 0, 0],
        [0, 0, .5, 6, 2, 0, 0],
    ])
    np.testing.assert_allclose(g.adjacency.toarray(), expected)
    assert g.adjacency.dtype == np.float64 and g.adjacency.format == "csr"
    assert g.adjacency.nnz == np.count_nonzero(expected)  # zero weights are absent edges
    assert list(g.units["layer"]) == ["input"] * 2 + ["hidden1"] * 3 + ["output"] * 2
    assert list(g.units["index"]) == [0, 1, 0, 1, 2, 0, 1]
    assert [s.name for s in g.layers] == ["input", "hidden1", "output"]
    assert g.layer_slice("hidden1") == slice(2, 5)
    np.testing.assert_array_equal(g.isolated(), [False] * 7)


def test_paper_mlp_has_1818_vertices_and_a_symmetric_adjacency() -> None:
    g = graph_of(MLP())
    assert g.n_vertices == 1818 and len(g.units) == 1818
    assert (g.adjacency != g.adjacency.T).nnz == 0
    assert g.adjacency.diagonal().sum() == 0
    assert g.units.groupby("layer", sort=False).size().to_dict() == {
        "input": 784, "hidden1": 256, "hidden2": 256, "hidden3": 256, "hidden4": 256, "output": 10}


# ------------------------------------------------------------------------------------------------ conv


def test_kernel_norms_entrywise_and_reference_matrix_1_norm() -> None:
    k = np.zeros((1, 1, 3, 3))
    k[0, 0] = np.arange(9).reshape(3, 3) - 4  # docs/methods.md §9.1: entry-wise 20, matrix 1-norm 7
    assert kernel_norms(k, "entrywise")[0, 0] == 20
    assert kernel_norms(k, "matrix1")[0, 0] == 7
    rng = np.random.default_rng(0)
    k = rng.normal(size=(4, 3, 3, 3))
    m1 = kernel_norms(k, "matrix1")
    assert m1.shape == (3, 4)  # (in, out)
    for o in range(4):
        for i in range(3):
            assert m1[i, o] == pytest.approx(np.linalg.norm(np.abs(k[o, i]), 1))
            assert kernel_norms(k)[i, o] == pytest.approx(np.abs(k[o, i]).sum())


def test_small_cnn_graph_is_the_l1_norm_of_kernel_slices() -> None:
    model = SmallCNN(in_channels=1, image_size=8, width=2, dense=4)
    k2 = np.zeros((2, 2, 3, 3))
    k2[0, 0] = np.arange(9).reshape(3, 3) - 4  # entrywise 20, matrix1 7
    k2[1, 0, 1, 1] = -2.0  # 2, 2
    k2[0, 1] = 1.0  # 9, 3
    k3 = np.zeros((2, 2, 3, 3))
    k3[1, 1, :, 0] = [1, -1, 1]  # 3, 3
    _set(model.conv2, k2)
    _set(model.conv3, k3)
    g = graph_of(model)
    assert [s.name for s in g.layers] == ["conv1", "conv2", "conv3"]  # input, dense, output excluded
    # vertices: conv1 (0, 1), conv2 (2, 3), conv3 (4, 5); block rows = producer channels
    expected = np.zeros((6, 6))
    expected[0, 2], expected[0, 3], expected[1, 2] = 20, 2, 9
    expected[3, 5] = 3
    expected = expected + expected.T
    np.testing.assert_allclose(g.adjacency.toarray(), expected)
    m1 = graph_of(model, conv_norm="matrix1").adjacency.toarray()
    assert m1[0, 2] == 7 and m1[1, 2] == 3 and m1[0, 3] == 2 and m1[3, 5] == 3
    np.testing.assert_array_equal(g.isolated(), [False, False, False, False, True, False])


def test_paper_conv_nets_vertex_counts() -> None:
    assert graph_of(SmallCNN()).n_vertices == 192
    g = graph_of(CifarVGG())
    assert g.n_vertices == 4224
    assert len(g.blocks) == 12  # conv1->conv2 ... conv12->conv13


def _tiny_vgg() -> CifarVGG:
    model = CifarVGG(in_channels=1, widths=(2, 3, 2)).eval()
    rng = np.random.default_rng(1)
    for conv in (model.conv1, model.conv2, model.conv3):
        _set(conv, rng.normal(size=conv.weight.shape))
    _set_bn(model.bn1, np.array([2.0, -0.5]), np.array([3.0, 0.25]))
    _set_bn(model.bn2, np.array([1.5, 0.1, -3.0]), np.array([0.5, 1.0, 8.0]))
    _set_bn(model.bn3, np.array([7.0, 7.0]), np.array([1.0, 1.0]))  # after the last conv: no edge to scale
    return model


def test_cifar_vgg_batchnorm_scales_the_channels_it_carries_to_the_next_conv() -> None:
    model = _tiny_vgg()
    g = graph_of(model)
    a = g.adjacency.toarray()
    eps = 1e-3
    s1 = np.array([2.0, -0.5]) / np.sqrt(np.array([3.0, 0.25]) + eps)
    s2 = np.array([1.5, 0.1, -3.0]) / np.sqrt(np.array([0.5, 1.0, 8.0]) + eps)
    k2 = model.conv2.weight.detach().double().numpy()
    k3 = model.conv3.weight.detach().double().numpy()
    for i in range(2):
        for j in range(3):  # conv1 channel i -> conv2 channel j
            assert a[i, 2 + j] == pytest.approx(abs(s1[i]) * np.abs(k2[j, i]).sum(), rel=1e-6)
    for i in range(3):
        for j in range(2):
            assert a[2 + i, 5 + j] == pytest.approx(abs(s2[i]) * np.abs(k3[j, i]).sum(), rel=1e-6)
    # Explicit computation: fold BN into the next conv's input channels, then graph without BN.
    folded = _tiny_vgg()
    with torch.no_grad():
        folded.conv2.weight.mul_(torch.as_tensor(s1, dtype=torch.float32)[None, :, None, None])
        folded.conv3.weight.mul_(torch.as_tensor(s2, dtype=torch.float32)[None, :, None, None])
    np.testing.assert_allclose(graph_of(folded, fold_batchnorm=False).adjacency.toarray(), a, rtol=1e-6)


def test_fold_batchnorm_false_is_the_reference_vgg_graph() -> None:
    model = _tiny_vgg()
    unfolded = graph_of(model, fold_batchnorm=False).adjacency.toarray()
    k2 = model.conv2.weight.detach().double().numpy()
    assert unfolded[0, 2] == pytest.approx(np.abs(k2[0, 0]).sum(), rel=1e-6)
    assert not np.allclose(unfolded, graph_of(model).adjacency.toarray())


def test_torchvision_conv_bn_relu_folds_bn_into_the_conv_it_follows() -> None:
    model = torchvision.models.vgg11_bn(num_classes=10).eval()
    bn_after_second = model.features[5]  # features: conv0 bn1 relu2 pool3 conv4 bn5 relu6 ...
    rng = np.random.default_rng(2)
    _set_bn(bn_after_second, rng.normal(size=128), rng.uniform(0.1, 2, size=128))
    _set_bn(model.features[1], rng.normal(size=64), rng.uniform(0.1, 2, size=64))  # first conv's BN: unused
    g = graph_of(model)
    block = g.adjacency[g.layer_slice("features.0"), g.layer_slice("features.4")].toarray()
    s = (bn_after_second.weight / torch.sqrt(bn_after_second.running_var + bn_after_second.eps)).detach().double().numpy()
    k = model.features[4].weight.detach().double().abs().sum(dim=(2, 3)).numpy()  # (out, in)
    np.testing.assert_allclose(block, (k * np.abs(s)[:, None]).T, rtol=1e-6)


# ------------------------------------------------------------------------------------------------ torchvision


@pytest.mark.parametrize(("name", "n_vertices", "n_layers"), [
    ("vgg16", 4224, 13), ("vgg19", 5504, 16), ("resnet18", 4800, 20), ("resnet34", 8512, 36)])
def test_torchvision_vertex_counts(name: str, n_vertices: int, n_layers: int) -> None:
    g = graph_of(getattr(torchvision.models, name)().eval())
    assert g.n_vertices == n_vertices
    assert len(g.layers) == n_layers
    assert (g.adjacency != g.adjacency.T).nnz == 0 and g.adjacency.data.min() > 0
    assert not g.isolated().any()


@pytest.mark.slow
def test_resnet50_vertex_count() -> None:
    g = graph_of(torchvision.models.resnet50().eval())
    assert g.n_vertices == 26560 and len(g.layers) == 53


def test_resnet_follows_residual_additions_and_downsample_shortcuts() -> None:
    model = torchvision.models.resnet18().eval()
    g = graph_of(model)
    pairs = {(b.src, b.dst) for b in g.blocks}
    # The stem's channels reach every conv that reads the layer1 residual stream, and layer2's shortcut.
    for consumer in ("layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1", "layer2.0.downsample.0"):
        assert ("conv1", consumer) in pairs
    assert ("layer1.0.conv2", "layer2.0.downsample.0") in pairs  # along the identity shortcut of layer1.1
    assert ("layer2.0.downsample.0", "layer2.1.conv1") in pairs
    assert ("layer2.0.downsample.0", "layer3.0.conv1") in pairs
    assert ("layer1.0.conv1", "layer1.1.conv1") not in pairs  # inside a block: only to its next conv
    assert ("layer1.0.conv1", "layer1.0.conv2") in pairs
    assert not any(dst == "conv1" for _, dst in pairs)
    # Weight of a residual edge = consumer kernel norms scaled by the consumer's own BN.
    block = next(b for b in g.blocks if (b.src, b.dst) == ("conv1", "layer1.1.conv1"))
    bn = model.layer1[1].bn1
    s = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double().numpy()
    expected = kernel_norms(model.layer1[1].conv1.weight) * np.abs(s)[None, :]
    np.testing.assert_allclose(block.weights, expected, rtol=1e-6)


def test_torchvision_layout_addresses_units_by_module_name() -> None:
    from modularity.layers import analysed_layers, layer_specs

    model = torchvision.models.vgg16()
    specs = layer_specs(model)
    assert specs[0].name == "features.0" and specs[0].weight == "features.0" and specs[0].activation == "features.1"
    assert len(analysed_layers(model)) == 13
    resnet = torchvision.models.resnet18()
    specs = layer_specs(resnet)
    # The stem's ReLU is its own; the blocks' ReLU modules are shared by two convs, so only the fx node
    # locates their post-activation value; a block's second conv feeds the residual sum (its BN output).
    assert [s.activation for s in specs][:3] == ["relu", None, None]
    assert [s.node for s in specs][:3] == ["relu", "layer1_0_relu", "layer1_0_bn2"]


# ------------------------------------------------------------------------------------------------ errors


class _CatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3)
        self.b = nn.Conv2d(1, 3, 3)
        self.c = nn.Conv2d(5, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.cat([self.a(x), self.b(x)], dim=1))


class _UpsampleNet(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Conv2d(1, 2, 3), nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3))


class _GroupedNet(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3, groups=2))


def test_unsupported_model_type_is_named() -> None:
    with pytest.raises(UnsupportedModelError, match="unsupported model type LSTM"):
        graph_of(nn.LSTM(2, 2))


def test_unsupported_operation_between_layers_is_named() -> None:
    with pytest.raises(UnsupportedModelError, match=r"unsupported operation Upsample \('1'\) after '0'.*declare_layout"):
        graph_of(_UpsampleNet())


def test_concatenation_maps_each_channel_to_its_source() -> None:
    model = _CatNet()
    g = graph_of(model)
    k = kernel_norms(model.c.weight)  # (5 in, 2 out)
    np.testing.assert_array_equal(next(b for b in g.blocks if b.src == "a").weights, k[:2])
    np.testing.assert_array_equal(next(b for b in g.blocks if b.src == "b").weights, k[2:])


def test_grouped_convolution_has_edges_only_within_groups() -> None:
    model = _GroupedNet()
    block = graph_of(model).blocks[0].weights  # (4 in, 6 out), groups of (2 in, 3 out)
    assert np.count_nonzero(block[:2, 3:]) == 0 and np.count_nonzero(block[2:, :3]) == 0
    np.testing.assert_array_equal(block[:2, :3], kernel_norms(model[2].weight)[:, :3])
    np.testing.assert_array_equal(block[2:, 3:], kernel_norms(model[2].weight)[:, 3:])


def test_unknown_conv_norm() -> None:
    with pytest.raises(UnsupportedModelError, match="conv_norm"):
        graph_of(SmallCNN(), conv_norm="l2")  # type: ignore[arg-type]


def test_trace_lists_convs_in_execution_order() -> None:
    layout = layout_of(SmallCNN())
    assert [s.name for s in layout.specs] == ["conv1", "conv2", "conv3"]
    assert [(f.src, f.dst) for f in layout.flows] == [("conv1", "conv2"), ("conv2", "conv3")]
