"""Tests for modularity.visualize: the parameterisation, the optimisation, batching, statistics, errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import combine_pvalues

from modularity import visualize as V
from modularity.errors import ModularityError
from modularity.models import MLP, SmallCNN, glorot_init
from modularity.subclusters import SubCluster

CPU = "cpu"


def tiny_mlp(seed: int = 0, in_features: int = 64, hidden: tuple[int, ...] = (16, 16)) -> MLP:
    torch.manual_seed(seed)
    m = MLP(in_features=in_features, hidden=hidden, n_classes=10)
    glorot_init(m)
    with torch.no_grad():  # small positive biases: most units alive at the start
        for mod in m.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.bias.fill_(0.05)
    return m.eval()


def tiny_cnn(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    m = SmallCNN(in_channels=1, image_size=8, width=6, dense=12)
    glorot_init(m)
    return m.eval()


# --------------------------------------------------------------------------------------------------
# Parameterisation


def test_rfft2d_freqs_by_hand() -> None:
    f = V.rfft2d_freqs(4, 4)
    assert f.shape == (4, 3)
    # fy = 0, 1/4, -1/2, -1/4; fx = 0, 1/4, 1/2
    assert f[0, 0] == 0
    assert f[1, 1] == pytest.approx(math.sqrt(2) / 4)
    assert f[2, 2] == pytest.approx(math.sqrt(0.5))
    assert V.rfft2d_freqs(5, 5).shape == (5, 4)  # odd width: one extra column, cropped after irfft2


@pytest.mark.parametrize(("h", "w"), [(4, 4), (28, 28), (7, 5), (6, 9), (32, 32)])
def test_fourier_images_equal_lucids_irfft2(h: int, w: int) -> None:
    # Lucid: sigmoid(irfft2(scale * spectrum) / 4) with an even FFT width, cropped to w columns
    p = V.ImageBatch((2, h, w), [np.random.default_rng(h * w)], decorrelate=False)
    raw = p.raw.detach().numpy()[0]
    spectrum = (raw[0] + 1j * raw[1]) * p.scale.numpy()
    expected = np.fft.irfft2(spectrum, s=(h, w + w % 2))[..., :w] / 4
    np.testing.assert_allclose(p().detach().numpy()[0], 1 / (1 + np.exp(-expected)), rtol=0, atol=1e-6)


def test_image_batch_range_and_start_near_grey() -> None:
    p = V.ImageBatch((1, 28, 28), [np.random.default_rng(i) for i in range(3)])
    img = p()
    assert img.shape == (3, 1, 28, 28)
    assert torch.all((img > 0) & (img < 1))
    assert (img - 0.5).abs().max() < 0.2  # sd 0.01 init: close to the grey mid-point


def test_odd_sizes_and_three_channels() -> None:
    p = V.ImageBatch((3, 7, 5), [np.random.default_rng(0)])
    assert p().shape == (1, 3, 7, 5)
    assert p.decorrelate
    assert np.max(np.linalg.norm(V._COLOR_CORRELATION, axis=0)) == pytest.approx(1.0)
    assert not V.ImageBatch((1, 7, 5), [np.random.default_rng(0)]).decorrelate  # no colour in gray images


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=5, unique=True), st.booleans())
def test_each_image_depends_only_on_its_own_seed(seeds: list[int], fft: bool) -> None:
    together = V.ImageBatch((1, 6, 6), [np.random.default_rng(s) for s in seeds], fft=fft)()
    for i, s in enumerate(seeds):
        alone = V.ImageBatch((1, 6, 6), [np.random.default_rng(s)], fft=fft)()
        torch.testing.assert_close(together[i : i + 1], alone, rtol=0, atol=1e-6)


def test_identity_transform_keeps_the_image() -> None:
    img = torch.rand(2, 1, 8, 8)
    params = torch.tensor([[0.0, 0.0, 1.0, 0.0]] * 2)
    torch.testing.assert_close(V._transform(img, params, 0.5), img, rtol=0, atol=1e-5)
    shifted = V._transform(img, torch.tensor([[1.0, 0.0, 1.0, 0.0]] * 2), 0.5)
    torch.testing.assert_close(shifted[..., 1:], img[..., :-1], rtol=0, atol=1e-5)  # one pixel right
    assert torch.allclose(shifted[..., 0], torch.tensor(0.5))  # uncovered column filled with grey


# --------------------------------------------------------------------------------------------------
# ReLU gradient override


def test_redirected_relu_gradient_by_hand() -> None:
    x = torch.tensor([[-1.0, 2.0], [-1.0, -2.0]], requires_grad=True)
    y = V.RedirectedReLU()(x)
    assert torch.equal(y, torch.relu(x))
    # gradient of the minimised loss: negative = "increase this unit"
    y.backward(torch.tensor([[-1.0, -1.0], [-1.0, 1.0]]))
    # image 0 has a live unit: ordinary ReLU gradient. Image 1 is all dead: the gradient passes where it
    # pushes up (-1) and is zeroed where it would push a dead unit lower (+1).
    assert torch.equal(x.grad, torch.tensor([[0.0, -1.0], [-1.0, 0.0]]))


def _lucid_redirected_relu_grad(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Oracle: lucid.misc.redirected_relu_grad transcribed line by line (tf.where -> torch.where)."""
    relu_grad = torch.where(x < 0.0, torch.zeros_like(grad), grad)
    neg_pushing_lower = (x < 0.0) & (grad > 0.0)
    redirected_grad = torch.where(neg_pushing_lower, torch.zeros_like(grad), grad)
    relu_grad_mag = relu_grad.reshape(x.shape[0], -1).norm(dim=1)
    return torch.where((relu_grad_mag > 0.0).view(-1, *([1] * (x.dim() - 1))), relu_grad, redirected_grad)


@pytest.mark.parametrize("shape", [(7, 5), (6, 3, 4, 4)])
def test_redirected_relu_gradient_equals_lucids_bit_for_bit(shape: tuple[int, ...]) -> None:
    """Random inputs with some images entirely dead (redirected) and some alive (ordinary gradient),
    dense and convolutional shapes: the backward equals the oracle exactly, bit for bit."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(*shape, generator=g)
    x[1] = -x[1].abs() - 0.1  # image 1: every unit dead
    x[4] = -x[4].abs()  # image 4: dead, and its gradient below also pushes some units lower
    grad = torch.randn(*shape, generator=g)
    grad[2] = 0.0  # image 2: no gradient at all
    xr = x.clone().requires_grad_()
    V.RedirectedReLU()(xr).backward(grad)
    expected = _lucid_redirected_relu_grad(x, grad)
    assert torch.equal(xr.grad, expected)
    assert not torch.equal(expected, torch.where(x < 0, torch.zeros_like(grad), grad))  # some image redirected


def dead_unit_mlp() -> MLP:
    """16 inputs (1x4x4), one hidden unit with weights +1 and bias -10: dead on a grey image."""
    m = MLP(in_features=16, hidden=(2,), n_classes=2)
    with torch.no_grad():
        m.fc1.weight.zero_()
        m.fc1.weight[0] = 1.0
        m.fc1.bias[:] = torch.tensor([-10.0, 0.0])
        m.fc2.weight.fill_(0.1)
        m.fc2.bias.zero_()
    return m.eval()


def test_relu_override_revives_a_dead_unit() -> None:
    m = dead_unit_mlp()
    target = [("hidden1", np.array([0]))]
    plain = V.visualize_sets(m, target, [("x",)], 0, V.VisConfig(steps=150, relu_gradient_override=False), device=CPU)
    lucid = V.visualize_sets(m, target, [("x",)], 0, V.VisConfig(steps=150), device=CPU)
    assert plain.table.activation[0] == 0.0  # no gradient ever reaches a dead ReLU
    assert np.abs(plain.images - 0.5).max() < 0.1  # so the image never moved from grey
    assert lucid.table.activation[0] > 2.0  # the override pushes x up until the unit is alive (max 6)


def test_relu_override_window_switches_to_the_plain_gradient() -> None:
    """Lucid applies the override while its global step is <= 16: ``relu_override_steps`` is that window.
    A window of 0 is the plain gradient, a window as long as the run is the override on every update, and
    the inactive module's backward is the ordinary ReLU gradient (by hand)."""
    x = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    relu = V.RedirectedReLU()
    relu.active = False
    relu(x).backward(torch.tensor([[-1.0, 1.0]]))
    assert torch.equal(x.grad, torch.zeros(1, 2))  # all dead and inactive: nothing passes
    m = dead_unit_mlp()
    target, key = [("hidden1", np.array([0]))], [("x",)]
    run = lambda **kw: V.visualize_sets(m, target, key, 0, V.VisConfig(steps=40, **kw), device=CPU)  # noqa: E731
    plain, always = run(relu_gradient_override=False), run()
    assert np.array_equal(run(relu_override_steps=0).images, plain.images)
    assert np.array_equal(run(relu_override_steps=40).images, always.images)
    windowed = run(relu_override_steps=17)
    assert not np.array_equal(windowed.images, always.images) and not np.array_equal(windowed.images, plain.images)
    assert "relu_override_steps" not in V.VisConfig().as_dict() and V.VisConfig(relu_override_steps=17).as_dict()[
        "relu_override_steps"] == 17
    with pytest.raises(ModularityError, match="relu_override_steps"):
        V.VisConfig(relu_override_steps=-1)


# --------------------------------------------------------------------------------------------------
# The optimisation finds a known preferred input


@pytest.mark.parametrize("fft", [True, False])
def test_finds_the_preferred_input_of_a_linear_unit(fft: bool) -> None:
    # hidden unit 0 of a 1x4x4 MLP: +1 on the left half, -1 on the right half. Its maximum over [0, 1]
    # images is the image that is 1 on the left and 0 on the right, with activation 8.
    m = MLP(in_features=16, hidden=(3,), n_classes=2)
    w = torch.tensor([1.0, 1.0, -1.0, -1.0]).repeat(4)
    with torch.no_grad():
        m.fc1.weight.copy_(torch.randn(3, 16) * 0.1)
        m.fc1.weight[0] = w
        m.fc1.bias.zero_()
    vis = V.visualize_sets(m.eval(), [("hidden1", np.array([0]))], [("unit", 0)], 0, V.VisConfig(steps=300, fft=fft),
                           device=CPU)
    img = vis.images[0, 0]
    assert np.all(img[:, :2] > 0.85) and np.all(img[:, 2:] < 0.15)
    assert vis.table.activation[0] > 7.0


def test_finds_the_preferred_input_of_a_conv_channel() -> None:
    # conv1 channel 0 sums its 3x3 patch: its mean over space is largest for an all-white image. Lucid's
    # Fourier parameterisation leaves a few pixels saturated at 0 within 200 steps (the pixel
    # parameterisation does not), so "finds it" means most pixels white and most of the maximum reached.
    m = tiny_cnn()
    with torch.no_grad():
        m.conv1.weight[0].fill_(1.0)
        m.conv1.bias[0] = 0.0
    vis = V.visualize_sets(m, [("conv1", np.array([0]))], [("c",)], 0, V.VisConfig(steps=200), device=CPU)
    assert np.median(vis.images[0]) > 0.95 and np.mean(vis.images[0] > 0.9) > 0.75
    # padding: 4 corners see 4 pixels, 24 edge positions 6, 36 inner 9 -> mean 7.5625 for all-white
    assert 0.8 * 7.5625 < vis.table.activation[0] <= 7.5625
    pixels = V.visualize_sets(m, [("conv1", np.array([0]))], [("c",)], 0, V.VisConfig(steps=200, fft=False),
                              device=CPU)
    assert pixels.images.min() > 0.95 and pixels.table.activation[0] > 0.97 * 7.5625


# --------------------------------------------------------------------------------------------------
# Batched equals one-at-a-time; reported activation equals a manual forward pass


def some_targets(model: torch.nn.Module, n: int, seed: int = 1) -> list[tuple[str, np.ndarray]]:
    from modularity.layers import analysed_layers

    specs = analysed_layers(model)
    rng = np.random.default_rng(seed)
    return [(specs[i % len(specs)].name, rng.choice(specs[i % len(specs)].width, 1 + i % 4, replace=False))
            for i in range(n)]


@pytest.mark.parametrize("make", [tiny_mlp, tiny_cnn])
@pytest.mark.parametrize("transforms", [None, V.Transforms()])
def test_batched_equals_one_at_a_time(make, transforms) -> None:  # type: ignore[no-untyped-def]
    m = make()
    targets = some_targets(m, 6)
    keys = [("k", i) for i in range(6)]
    cfg = V.VisConfig(steps=25, transforms=transforms)
    batched = V.visualize_sets(m, targets, keys, 7, cfg, device=CPU)
    chunked = V.visualize_sets(m, targets, keys, 7, cfg, device=CPU, batch_size=4)
    singles = [V.visualize_sets(m, [t], [k], 7, cfg, device=CPU) for t, k in zip(targets, keys, strict=True)]
    single_images = np.concatenate([s.images for s in singles])
    single_acts = np.array([s.table.activation[0] for s in singles])
    np.testing.assert_allclose(batched.images, single_images, rtol=0, atol=1e-4)
    np.testing.assert_allclose(chunked.images, single_images, rtol=0, atol=1e-4)
    np.testing.assert_allclose(batched.table.activation, single_acts, rtol=1e-4, atol=1e-5)
    assert (batched.table.activation > 0).mean() >= 0.5  # the objective actually moved


def test_same_seed_same_images_other_seed_other_images() -> None:
    m = tiny_mlp()
    targets = some_targets(m, 2)
    a = V.visualize_sets(m, targets, [(0,), (1,)], 3, V.VisConfig(steps=5), device=CPU)
    b = V.visualize_sets(m, targets, [(0,), (1,)], 3, V.VisConfig(steps=5), device=CPU)
    c = V.visualize_sets(m, targets, [(0,), (1,)], 4, V.VisConfig(steps=5), device=CPU)
    assert np.array_equal(a.images, b.images)
    assert not np.allclose(a.images, c.images)


def test_reported_values_match_a_manual_forward_pass() -> None:
    m = tiny_mlp()
    units = np.array([1, 4, 7])
    vis = V.visualize_sets(m, [("hidden2", units)], [("h",)], 0, V.VisConfig(steps=20), device=CPU)
    x = torch.from_numpy(vis.images)
    with torch.no_grad():
        h2 = m.relu2(m.fc2(m.relu1(m.fc1(x.flatten(1)))))
        logits = m(x)
    assert vis.table.activation[0] == pytest.approx(h2[0, units].sum().item(), rel=1e-5)
    p = torch.softmax(logits.double(), -1)[0].numpy()
    assert vis.table.entropy[0] == pytest.approx(-(p * np.log(p)).sum(), rel=1e-9)
    assert vis.table.predicted_class[0] == int(p.argmax())
    assert vis.table.confidence[0] == pytest.approx(p.max())

    cnn = tiny_cnn()
    vis = V.visualize_sets(cnn, [("conv2", np.array([0, 5]))], [("c",)], 0, V.VisConfig(steps=10), device=CPU)
    with torch.no_grad():
        c2 = cnn.relu2(cnn.conv2(cnn.relu1(cnn.conv1(torch.from_numpy(vis.images)))))
    assert vis.table.activation[0] == pytest.approx(c2[0, [0, 5]].mean(dim=(1, 2)).sum().item(), rel=1e-5)


def test_entropy_by_hand() -> None:
    assert V.entropy_of_logits(np.zeros((1, 10)))[0] == pytest.approx(math.log(10))
    assert V.entropy_of_logits(np.array([[0.0, math.log(3.0)]]))[0] == pytest.approx(
        -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    # confident: p2 = e^-100 / (1 + e^-100); H ~ 101 e^-100, not the float32 underflow to 0
    assert V.entropy_of_logits(np.array([[100.0, 0.0]]))[0] == pytest.approx(101 * math.exp(-100), rel=1e-6)


# --------------------------------------------------------------------------------------------------
# Sub-clusters, statistics, pictures


def four_subclusters(width: int = 16) -> list[SubCluster]:
    return [SubCluster("hidden1", 0, np.array([0, 1, 2, 3, 4]), width),
            SubCluster("hidden1", 1, np.array([5, 6, 7, 8]), width),
            SubCluster("hidden2", 0, np.array([0, 1, 2]), width),  # size 3: filtered out (3 < size)
            SubCluster("hidden2", 2, np.arange(4, 10), width)]


def random_units_for(scs: list[SubCluster], n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.stack([np.sort(rng.choice(sc.layer_width, len(sc.units), replace=False)) for _ in range(n)])
            for sc in scs]


def test_size_filter_by_hand() -> None:
    scs = [SubCluster("a", i, np.arange(s), 20) for i, s in enumerate((3, 4, 15, 16))]
    assert [sc.cluster for sc in V.size_filter(scs)] == [1, 2]  # 4 <= size < 0.8 * 20 = 16
    assert [sc.cluster for sc in V.size_filter(scs, min_size=1, max_prop=1.0)] == [0, 1, 2, 3]
    with pytest.raises(ModularityError, match="empty"):
        V.size_filter([SubCluster("a", 0, np.array([], dtype=int), 20)])


def test_visualize_subclusters_layout_and_seeding() -> None:
    m = tiny_mlp()
    scs = four_subclusters()
    rand = random_units_for(scs, 3)
    vis = V.visualize_subclusters(m, scs, 3, 0, V.VisConfig(steps=10), random_units=rand, device=CPU)
    assert vis.images.shape == (3, 4, 1, 8, 8)
    assert [(sc.layer, sc.cluster) for sc in vis.subclusters] == [("hidden1", 0), ("hidden1", 1), ("hidden2", 2)]
    t = vis.table
    assert list(t.role[:4]) == ["true", "random", "random", "random"] and list(t.draw[:4]) == [0, 1, 2, 3]
    assert list(t["size"]) == [5] * 4 + [4] * 4 + [6] * 4
    # image (sub-cluster, draw) is seeded by (layer, cluster, draw): the same image alone
    alone = V.visualize_sets(m, [("hidden2", rand[3][1])], [("hidden2", 2, 2)], 0, V.VisConfig(steps=10), device=CPU)
    np.testing.assert_allclose(vis.images[2, 2], alone.images[0], atol=1e-5)


def fake_visualisation(true: list[float], random: list[list[float]], ent_true: list[float],
                       ent_random: list[list[float]]) -> V.SubclusterVisualisation:
    """A visualisation with chosen activations / entropies: random is (S, n)."""
    s, n = len(true), len(random[0])
    rows = []
    for i in range(s):
        for d in range(n + 1):
            rows.append({"subcluster": i, "layer": "hidden1", "cluster": i, "layer_width": 16, "size": 4,
                         "role": "true" if d == 0 else "random", "draw": d,
                         "activation": true[i] if d == 0 else random[i][d - 1],
                         "entropy": ent_true[i] if d == 0 else ent_random[i][d - 1],
                         "predicted_class": i, "confidence": 0.5})
    scs = [SubCluster("hidden1", i, np.arange(4), 16) for i in range(s)]
    return V.SubclusterVisualisation(np.zeros((s, n + 1, 1, 2, 2), np.float32), pd.DataFrame(rows), scs,
                                     [np.zeros((n, 4), int)] * s, {"seed": 0, "n_random": n})


def test_statistics_by_hand() -> None:
    n = 9
    vis = fake_visualisation(
        true=[10.0, 5.0, 1.0],
        random=[[1.0] * 9, [4.0, 6.0, 6.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0], [2.0] * 9],
        ent_true=[0.1, 1.0, 2.0],
        ent_random=[[1.0] * 9, [0.5, 0.5, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0], [1.0] * 9],
    )
    df, summary = V.coherence_statistics(vis)
    # activation, right-sided: (#{true < random} + 1) / (n + 1)
    assert list(df.p_loss) == pytest.approx([1 / 10, 3 / 10, 10 / 10])
    # entropy, left-sided: (#{random < true} + 1) / (n + 1)
    assert list(df.p_entropy) == pytest.approx([1 / 10, 3 / 10, 10 / 10])
    assert list(df.loss_true) == [10.0, 5.0, 1.0]
    assert df.loss_random_mean[1] == pytest.approx(40 / 9)
    # Fisher on percentiles shifted by 1/(2(n+1)) = 0.05
    expected = combine_pvalues(np.array([0.1, 0.3, 1.0]) - 0.05, method="fisher").pvalue
    assert summary["combined_p_loss"] == pytest.approx(expected)
    assert summary["combined_p_entropy"] == pytest.approx(expected)
    # reference effect factor: mean over sub-clusters of mean(random) / true
    assert summary["effect_loss"] == pytest.approx(np.mean([1 / 10, (40 / 9) / 5, 2 / 1]))
    # Holm across the 3 sub-clusters: 0.1 * 3 = 0.3, max(0.3 * 2, 0.3) = 0.6, 1.0
    assert list(df.p_loss_holm) == pytest.approx([0.3, 0.6, 1.0])
    assert summary["n_subclusters"] == 3 and summary["n_random"] == n
    for key in ("chi2_p_loss", "chi2_p_entropy", "effect_entropy", "log_effect_loss", "log_effect_entropy"):
        assert key in summary


def test_input_coherence_end_to_end(tmp_path) -> None:  # type: ignore[no-untyped-def]
    m = tiny_mlp()
    scs = four_subclusters()
    df, summary = V.input_coherence(m, scs, n_random=3, steps=15, seed=0, random_units=random_units_for(scs, 3),
                                    device=CPU)
    assert list(df.layer) == ["hidden1", "hidden1", "hidden2"]
    for col in V.SUBCLUSTER_COLUMNS + ("p_loss_holm", "p_entropy_holm", "steps", "lr", "seed", "n_random"):
        assert col in df.columns, col
    assert set(df.p_loss) <= {0.25, 0.5, 0.75, 1.0}
    assert summary["params"]["steps"] == 15 and summary["n_subclusters"] == 3
    assert 0 <= summary["combined_p_loss"] <= 1


def test_plot_grid_writes_a_png(tmp_path) -> None:  # type: ignore[no-untyped-def]
    m = tiny_mlp()
    scs = four_subclusters()
    vis = V.visualize_subclusters(m, scs, 2, 0, V.VisConfig(steps=3), random_units=random_units_for(scs, 2),
                                  device=CPU)
    df, _ = V.coherence_statistics(vis)
    path = V.plot_grid(vis, tmp_path / "g.png", title="t", table=df)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


# --------------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_raises_clear_errors() -> None:
    m = tiny_mlp()
    cfg = V.VisConfig(steps=1)
    with pytest.raises(ModularityError, match="empty unit set"):
        V.visualize_sets(m, [("hidden1", np.array([], dtype=int))], [(0,)], 0, cfg, device=CPU)
    with pytest.raises(ModularityError, match="no layer 'hidden9'"):
        V.visualize_sets(m, [("hidden9", np.array([0]))], [(0,)], 0, cfg, device=CPU)
    with pytest.raises(ModularityError, match="no activation"):
        V.visualize_sets(m, [("output", np.array([0]))], [(0,)], 0, cfg, device=CPU)
    with pytest.raises(ModularityError, match="out of range"):
        V.visualize_sets(m, [("hidden1", np.array([0, 16]))], [(0,)], 0, cfg, device=CPU)
    with pytest.raises(ModularityError, match="repeated"):
        V.visualize_sets(m, [("hidden1", np.array([1, 1]))], [(0,)], 0, cfg, device=CPU)
    with pytest.raises(ModularityError, match="not image-shaped"):
        V.visualize_sets(tiny_mlp(in_features=50), [("hidden1", np.array([0]))], [(0,)], 0, cfg, device=CPU)
    with pytest.raises(ModularityError, match="has 49 pixels"):
        V.visualize_sets(m, [("hidden1", np.array([0]))], [(0,)], 0, cfg, image_shape=(1, 7, 7), device=CPU)
    with pytest.raises(ModularityError, match="does not take images"):
        V.visualize_sets(tiny_cnn(), [("conv1", np.array([0]))], [(0,)], 0, cfg, image_shape=(2, 8, 8), device=CPU)
    with pytest.raises(ModularityError, match="unsupported model"):
        V.visualize_sets(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)), [("x", np.array([0]))],
                         [(0,)], 0, cfg, image_shape=(1, 2, 2), device=CPU)
    with pytest.raises(ModularityError, match="steps"):
        V.VisConfig(steps=-1)
    scs = four_subclusters()
    with pytest.raises(ModularityError, match="n_random"):
        V.visualize_subclusters(m, scs, 0, 0, cfg, random_units=random_units_for(scs, 1), device=CPU)
    with pytest.raises(ModularityError, match="empty"):
        V.visualize_subclusters(m, [SubCluster("hidden1", 0, np.array([], dtype=int), 16)], 1, 0, cfg,
                                random_units=[np.zeros((1, 0), int)], device=CPU)
    with pytest.raises(ModularityError, match="size filter"):
        V.visualize_subclusters(m, scs[2:3], 1, 0, cfg, random_units=random_units_for(scs[2:3], 1), device=CPU)
    with pytest.raises(ModularityError, match="expected"):
        V.visualize_subclusters(m, scs, 2, 0, cfg, random_units=random_units_for(scs, 3), device=CPU)


def test_image_shapes_of_the_papers_models() -> None:
    assert V.image_shape_of(MLP()) == (1, 28, 28)
    assert V.image_shape_of(MLP(in_features=2352)) == (3, 28, 28)  # the reference's LUCID MLPs
    assert V.image_shape_of(MLP(in_features=64)) == (1, 8, 8)
    assert V.image_shape_of(SmallCNN(in_channels=2, image_size=28)) == (2, 28, 28)


# --------------------------------------------------------------------------------------------------
# CLI


def run_cli(argv: list[str]) -> int:
    import argparse

    from modularity.commands import add_coherence

    parser = argparse.ArgumentParser()
    add_coherence(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["coherence", *argv])
    return args.func(args)


def test_cli_writes_tables_summary_and_grid(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from modularity.models import build_model, save_checkpoint

    torch.manual_seed(0)
    ckpt = tmp_path / "DIGITS" / "seed0" / "pruned.pt"
    save_checkpoint(build_model("DIGITS").eval(), ckpt, {"tag": "DIGITS", "seed": 0, "pruned": True})
    out = tmp_path / "out"
    assert run_cli([str(ckpt), "--k", "4", "--steps", "3", "--n-random", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "images.csv", "images.npy", "subclusters.csv",
                                                     "summary.json"]
    table = pd.read_csv(out / "subclusters.csv")
    images = pd.read_csv(out / "images.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert len(table) >= 1 and (table.tag == "DIGITS").all() and (table.k == 4).all()
    assert len(images) == 3 * len(table)
    assert np.load(out / "images.npy").shape == (len(table), 3, 1, 8, 8)
    assert summary["n_subclusters"] == len(table) and summary["k"] == 4 and summary["params"]["steps"] == 3
    from modularity.errors import CheckpointError

    with pytest.raises(CheckpointError):
        run_cli([str(tmp_path / "missing.pt")])


# --------------------------------------------------------------------------------------------------
# batch_size="auto"


def test_auto_batch_size_by_hand() -> None:
    """The largest per-image buffer, by hand: the small CNN's conv2 im2col matrix (64 channels x 3 x 3
    x 28 x 28 positions, 4 bytes) and the MLP's 784-pixel input; 32 MiB over them, rounded down."""
    from modularity.featurevis.render import AUTO_CHUNK_BYTES, auto_batch_size

    cpu, budget = torch.device(CPU), AUTO_CHUNK_BYTES["cpu"]
    assert budget == 32 * 2**20
    assert auto_batch_size(SmallCNN().eval(), (1, 28, 28), cpu) == budget // (64 * 9 * 28 * 28 * 4) == 18
    assert auto_batch_size(MLP().eval(), (1, 28, 28), cpu) == budget // (784 * 4) == 10699
    assert auto_batch_size(MLP().double().eval(), (1, 28, 28), cpu, dtype=torch.float64) == budget // (784 * 8)
    nn = torch.nn
    huge = nn.Sequential(nn.Conv2d(1, 2048, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 2))
    assert auto_batch_size(huge, (1, 64, 64), cpu) == 1  # 2048 x 64 x 64 x 4 bytes > 32 MiB per image: never 0


def test_auto_batch_size_gives_the_same_images_as_one_batch() -> None:
    """``"auto"`` chunks the small CNN's images (18 per chunk): the images equal one batch of all, bit
    for bit (each image has its own parameters, seed and objective)."""
    from modularity.models import SmallCNN

    torch.manual_seed(0)
    m = SmallCNN().eval()
    targets = [(layer, np.array([u, u + 1])) for layer in ("conv1", "conv3") for u in range(10)]
    keys = [(layer, int(units[0])) for layer, units in targets]
    cfg = V.VisConfig(steps=3)
    auto = V.visualize_sets(m, targets, keys, 0, cfg, device=CPU)
    whole = V.visualize_sets(m, targets, keys, 0, cfg, device=CPU, batch_size=None)
    assert np.array_equal(auto.images, whole.images)
    pd.testing.assert_frame_equal(auto.table, whole.table)
    with pytest.raises(ModularityError, match="batch_size must be"):
        V.visualize_sets(m, targets, keys, 0, cfg, device=CPU, batch_size="big")  # type: ignore[arg-type]
