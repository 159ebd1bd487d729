"""The lesion engine: exact equality with a plain lesioned forward pass, and input checking."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from modularity.errors import ModularityError
from modularity.layers import LayerSpec, analysed_layers, layer_by_name, register_layout
from modularity.lesion import as_unit_sets, lesion_counts, lesioned_logits, unlesioned_counts
from modularity.models import MLP, CifarVGG, SmallCNN, glorot_init
from modularity.train import magnitude_mask
from tests.helpers import digits_tensors, train_briefly


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    return digits_tensors()


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> nn.Module:
    torch.manual_seed(0)
    return train_briefly(model, x, y, steps, lr)


@pytest.fixture(scope="module")
def mlp(digits: tuple[torch.Tensor, torch.Tensor]) -> nn.Module:
    torch.manual_seed(0)
    model = _train(MLP(64, (32, 32, 32), 10), *digits, steps=150, lr=1e-2)
    with torch.no_grad():  # 60% magnitude pruning, so the sparse paths are exercised
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(m.weight.abs() > m.weight.abs().flatten().quantile(0.6))
    return model


@pytest.fixture(scope="module")
def mlp90(digits: tuple[torch.Tensor, torch.Tensor]) -> nn.Module:
    """90% magnitude-pruned like the paper's MLPs: the engine's sparse tail (sparse weight products) runs."""
    torch.manual_seed(0)
    model = _train(MLP(64, (64, 64, 64), 10), *digits, steps=150, lr=1e-2)
    with torch.no_grad():  # the training code's own pruning mask, on every hidden layer
        for m in model.modules():
            if isinstance(m, nn.Linear) and m.out_features > 10:
                m.weight.mul_(magnitude_mask(m.weight, 0.9))
    return model


@pytest.fixture(scope="module")
def cnn(digits: tuple[torch.Tensor, torch.Tensor]) -> nn.Module:
    torch.manual_seed(0)
    return _train(SmallCNN(1, 8, 10, width=8, dense=16), *digits, steps=80, lr=3e-3)


@pytest.fixture(scope="module")
def vgg() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = CifarVGG(3, 10, widths=(6,) * 13)
    glorot_init(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    model.eval()
    x = torch.rand(48, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (48,), generator=g)
    return model, x, y


def naive_counts(model: nn.Module, layer: str, units: np.ndarray, x: torch.Tensor, y: torch.Tensor,
                 before_batchnorm: bool = False, dtype: torch.dtype = torch.float32) -> np.ndarray:
    """The reference lesion: zero incoming weights and bias (and, after-BN, the BN's gamma and beta)."""
    spec = layer_by_name(model, layer)
    m = copy.deepcopy(model).to(dtype).eval()
    idx = torch.as_tensor(np.asarray(units, dtype=np.int64))
    with torch.no_grad():
        w = m.get_submodule(spec.weight)
        w.weight[idx] = 0
        w.bias[idx] = 0
        if spec.batchnorm is not None and not before_batchnorm:
            bn = m.get_submodule(spec.batchnorm)
            bn.weight[idx] = 0
            bn.bias[idx] = 0
        pred = m(x.to(dtype)).argmax(1)
    return np.bincount(y[pred == y].numpy(), minlength=10)


def some_sets(width: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [1, 1, 2, 3, width // 4, width // 2, width - 1, width]
    return [rng.choice(width, s, replace=False) for s in sizes]


@pytest.mark.parametrize("model_name", ["mlp", "mlp90", "cnn"])
def test_engine_equals_weight_zeroing_forward(model_name: str, request: pytest.FixtureRequest,
                                              digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = request.getfixturevalue(model_name)
    x, y = digits
    tail_calls = 0
    for spec in analysed_layers(model):
        sets = some_sets(spec.width)
        expected = np.stack([naive_counts(model, spec.name, s, x, y) for s in sets])
        info: dict = {}
        fast = lesion_counts(model, spec.name, sets, x, y, stats=info)
        assert info["method"] == "fast"
        tail_calls += info["sparse_tail_calls"]
        assert fast.dtype == np.int64 and fast.shape == (len(sets), 10)
        np.testing.assert_array_equal(fast, expected, err_msg=f"{model_name} {spec.name}")
        np.testing.assert_array_equal(lesion_counts(model, spec.name, sets, x, y, method="hooks"), expected)
    assert (tail_calls > 0) == (model_name == "mlp90")  # the sparse tail is exercised where weights are sparse
    # the lesions matter: the counts differ between sets, and a whole-layer lesion is devastating
    assert len({tuple(r) for r in fast}) > 2
    assert fast[-1].sum() < 0.5 * unlesioned_counts(model, x, y).sum()


@pytest.mark.parametrize("before_batchnorm", [False, True])
def test_vgg_batchnorm_semantics(vgg: tuple[nn.Module, torch.Tensor, torch.Tensor], before_batchnorm: bool) -> None:
    model, x, y = vgg
    for layer in ("conv1", "conv7", "conv13"):
        width = layer_by_name(model, layer).width
        sets = some_sets(width, seed=3)
        expected = np.stack([naive_counts(model, layer, s, x, y, before_batchnorm) for s in sets])
        fast = lesion_counts(model, layer, sets, x, y, before_batchnorm=before_batchnorm)
        np.testing.assert_array_equal(fast, expected, err_msg=layer)


def test_after_bn_lesion_silences_the_channel(vgg: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    """Default: the BN output of a lesioned channel is 0; before-BN: it is BN's constant beta - gamma mu/sigma."""
    model, x, _ = vgg
    bn = model.get_submodule("bn1")
    seen = {}
    handle = bn.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o.detach().clone()))
    with torch.no_grad():
        lesioned_logits(model, "conv1", x[:4], torch.tensor([True, False, False, False, False, False]))
        assert torch.count_nonzero(seen["out"][:, 0]) > 0  # the hook zeroes BN's output, not its input
        lesioned_logits(model, "conv1", x[:4], torch.tensor([True] + [False] * 5), before_batchnorm=True)
        const = bn.bias[0] - bn.weight[0] * bn.running_mean[0] / torch.sqrt(bn.running_var[0] + bn.eps)
        torch.testing.assert_close(seen["out"][:, 0], torch.full_like(seen["out"][:, 0], float(const)))
    handle.remove()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layer=st.sampled_from(["hidden1", "hidden2", "hidden3"]), data=st.data())
def test_property_engine_equals_float64_forward(mlp: nn.Module, digits: tuple[torch.Tensor, torch.Tensor],
                                               layer: str, data: st.DataObject) -> None:
    """Any unit set: the engine's counts are those of a float64 plain forward pass."""
    x, y = digits
    units = data.draw(st.lists(st.integers(0, 31), min_size=0, max_size=32, unique=True))
    fast = lesion_counts(mlp, layer, [np.array(units, dtype=np.int64)], x, y)[0]
    expected = naive_counts(mlp, layer, np.array(units, dtype=np.int64), x, y, dtype=torch.float64)
    np.testing.assert_array_equal(fast, expected)


def test_exact_ties_are_decided_like_a_plain_forward(digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Two identical output units tie exactly on every image; argmax takes the first, in both paths."""
    x, y = digits
    torch.manual_seed(0)
    model = _train(MLP(64, (16, 16), 10), x, y, steps=60, lr=1e-2)
    with torch.no_grad():
        model.fc3.weight[1] = model.fc3.weight[0]
        model.fc3.bias[1] = model.fc3.bias[0]
    sets = some_sets(16, seed=5)
    info: dict = {}
    fast = lesion_counts(model, "hidden2", sets, x, y, stats=info)
    expected = np.stack([naive_counts(model, "hidden2", s, x, y) for s in sets])
    np.testing.assert_array_equal(fast, expected)
    assert fast[:, 1].sum() == 0  # class 1 can never win a tie against class 0
    assert info["exact_decisions"] > 0


def test_mask_matrix_equals_index_sets(mlp: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    sets = some_sets(32, seed=2)
    masks = np.zeros((len(sets), 32), dtype=bool)
    for i, s in enumerate(sets):
        masks[i, s] = True
    a = lesion_counts(mlp, "hidden2", sets, x, y)
    np.testing.assert_array_equal(a, lesion_counts(mlp, "hidden2", masks.astype(np.int64), x, y))
    np.testing.assert_array_equal(a, lesion_counts(mlp, "hidden2", torch.from_numpy(masks), x, y))


def test_small_memory_budget_gives_the_same_counts(cnn: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits[0][:300], digits[1][:300]
    sets = some_sets(8, seed=4)
    info: dict = {}
    small = lesion_counts(cnn, "conv2", sets, x, y, max_memory=100_000, stats=info)
    assert info["chunk"] < len(x)
    np.testing.assert_array_equal(small, lesion_counts(cnn, "conv2", sets, x, y))


def test_empty_set_and_unlesioned_counts(mlp: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    unl = unlesioned_counts(mlp, x, y)
    with torch.no_grad():
        pred = mlp(x).argmax(1)
    np.testing.assert_array_equal(unl, np.bincount(y[pred == y].numpy(), minlength=10))
    np.testing.assert_array_equal(lesion_counts(mlp, "hidden1", [[]], x, y)[0], unl)


def test_model_left_untouched(mlp: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    mlp.train()
    try:
        lesion_counts(mlp, "hidden1", some_sets(32), x, y)
        assert mlp.training
        assert not mlp.fc1._forward_hooks and not mlp.relu1._forward_hooks
    finally:
        mlp.eval()
    for k, v in mlp.state_dict().items():
        assert torch.equal(v, before[k])


class _Wrapped(nn.Module):
    """A non-Sequential model: the engine must fall back to hooks."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


register_layout(_Wrapped, lambda m: [LayerSpec(f"hidden{i}", "dense", 32, f"inner.fc{i}", f"inner.relu{i}")
                                     for i in (1, 2, 3)])


def test_hooked_path_for_other_models(mlp: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    wrapped = _Wrapped(mlp).eval()
    sets = some_sets(32, seed=7)
    info: dict = {}
    counts = lesion_counts(wrapped, "hidden2", sets, x, y, stats=info)
    assert info["method"] == "hooks"
    np.testing.assert_array_equal(counts, lesion_counts(mlp, "hidden2", sets, x, y))
    with pytest.raises(ModularityError, match="flat nn.Sequential"):
        lesion_counts(wrapped, "hidden2", sets, x, y, method="fast")


# --------------------------------------------------------------------------------------------------
# Bad input


def test_as_unit_sets_validation() -> None:
    assert [s.tolist() for s in as_unit_sets([[3, 1], []], 4)] == [[1, 3], []]
    with pytest.raises(ModularityError, match="0..3"):
        as_unit_sets([[4]], 4)
    with pytest.raises(ModularityError, match="0..3"):
        as_unit_sets([[-1]], 4)
    with pytest.raises(ModularityError, match="duplicate"):
        as_unit_sets([[1, 1]], 4)
    with pytest.raises(ModularityError, match="integers"):
        as_unit_sets([[1.5]], 4)
    with pytest.raises(ModularityError, match="columns"):
        as_unit_sets(np.zeros((2, 5)), 4)
    with pytest.raises(ModularityError, match="0/1"):
        as_unit_sets(np.full((1, 4), 2), 4)


def test_bad_data_and_layers(mlp: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    with pytest.raises(ModularityError, match="labels must lie in 0..9"):
        lesion_counts(mlp, "hidden1", [[0]], x, y + 1)
    with pytest.raises(ModularityError, match="labels must lie"):
        unlesioned_counts(mlp, x, y - 1)
    with pytest.raises(ModularityError, match=r"labels \(N,\)"):
        lesion_counts(mlp, "hidden1", [[0]], x, y[:-1])
    with pytest.raises(ModularityError, match="do not fit the model"):
        lesion_counts(mlp, "hidden1", [[0]], torch.rand(10, 1, 9, 9), y[:10])
    with pytest.raises(ModularityError, match="integers"):
        lesion_counts(mlp, "hidden1", [[0]], x, y.float())
    with pytest.raises(ModularityError, match="no activation"):
        lesion_counts(mlp, "output", [[0]], x, y)
    with pytest.raises(ModularityError, match="no layer"):
        lesion_counts(mlp, "hidden9", [[0]], x, y)
    with pytest.raises(ModularityError, match="method"):
        lesion_counts(mlp, "hidden1", [[0]], x, y, method="magic")


def test_near_tie_flags_exact_ties_close_margins_and_nan() -> None:
    from modularity.lesion import TIE_RTOL, _near_tie

    logits = torch.tensor([[1.0, 3.0, 3.0],             # exact tie at the top
                           [0.0, 2.0, 2.0 - TIE_RTOL],  # margin 1e-4 < 1e-4 * (1 + 2)
                           [0.0, 2.0, 1.0],             # clear winner
                           [0.0, float("nan"), 1.0],    # NaN
                           [0.05, -1000.0, 0.0]])       # margin 0.05 < 1e-4 * (1 + 1000): scale-relative
    expected = [True, True, False, True, True]
    assert _near_tie(logits).tolist() == expected
    assert _near_tie(logits, logits.argmax(dim=1)).tolist() == expected
    assert _near_tie(torch.ones(3, 1)).tolist() == [False] * 3


@pytest.mark.parametrize("entry", ["at the cut", "after column-sparse stages"])
def test_sparse_tail_in_several_image_blocks(mlp90: nn.Module, digits: tuple[torch.Tensor, torch.Tensor],
                                             monkeypatch: pytest.MonkeyPatch, entry: str) -> None:
    import modularity.lesion.engine as lesion

    monkeypatch.setattr(lesion, "TAIL_BLOCK", 500)  # 1797 images: blocks of 500, 500, 500, 297
    if entry != "at the cut":  # small lesions: column-sparse changes until a Linear stage densifies them
        monkeypatch.setattr(lesion, "SPARSE_TAIL_MIN_ROWS", 1)
        monkeypatch.setattr(lesion._Plan, "sparse_entry", property(lambda _: False, lambda *_: None))
    x, y = digits
    sets = some_sets(64, seed=3)
    info: dict = {}
    fast = lesion_counts(mlp90, "hidden1", sets, x, y, stats=info)
    assert info["sparse_tail_calls"] > 0
    np.testing.assert_array_equal(fast, np.stack([naive_counts(mlp90, "hidden1", s, x, y) for s in sets]))
