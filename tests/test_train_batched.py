"""Training many MLPs at once: every network's weights equal training it alone, bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modularity.data import Dataset
from modularity.errors import ModularityError
from modularity.train import magnitude_mask, train
from modularity.train_batched import stacked_magnitude_mask, train_many


def _mnist_shaped(n_train: int = 300, n_test: int = 100) -> Dataset:
    """Random MNIST-shaped images with random labels: enough to exercise every op of the recipe."""
    g = torch.Generator().manual_seed(0)
    return Dataset("mnist", torch.rand(n_train, 1, 28, 28, generator=g), torch.randint(0, 10, (n_train,), generator=g),
                   torch.rand(n_test, 1, 28, 28, generator=g), torch.randint(0, 10, (n_test,), generator=g), 10)


def _assert_same_checkpoints(a: dict[str, Path], b: dict[str, Path]) -> None:
    assert a.keys() == b.keys() == {"unpruned", "pruned"}
    for phase in a:
        sa, sb = torch.load(a[phase], weights_only=True), torch.load(b[phase], weights_only=True)
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), (phase, k, float((sa[k] - sb[k]).abs().max()))


def test_every_variant_and_seed_equals_training_alone(tmp_path: Path) -> None:
    # Dropout, L1, L2 and MOD-INIT nets side by side, two seeds of one tag, a subset with a partial last
    # batch (250 = 128 + 122), and a pruning phase long enough for a mid-phase mask update (step 10).
    data = _mnist_shaped()
    jobs = [("MNIST", 0), ("MNIST", 1), ("MNIST+DROPOUT", 0), ("MNIST+L1REG", 2), ("MNIST+L2REG", 0),
            ("MNIST+MOD-INIT", 3)]
    kw = dict(epochs=1, pruning_epochs=6, train_subsample=250, progress=False, data=data)
    alone = [train(tag, seed, tmp_path / "alone", **kw) for tag, seed in jobs]
    together = train_many(jobs, tmp_path / "together", **kw)
    for a, b in zip(alone, together, strict=True):
        _assert_same_checkpoints(a, b)
    assert together[0]["pruned"] == tmp_path / "together" / "MNIST" / "seed0" / "pruned.pt"


def test_what_is_trained_beside_a_network_does_not_change_it(tmp_path: Path) -> None:
    data = _mnist_shaped(n_train=200)
    kw = dict(epochs=1, pruning_epochs=1, progress=False, data=data)
    solo = train_many([("MNIST+DROPOUT", 5)], tmp_path / "solo", **kw)
    crowd = train_many([("MNIST", 1), ("MNIST+DROPOUT", 5), ("MNIST+L2REG", 0)], tmp_path / "crowd", **kw)
    _assert_same_checkpoints(solo[0], crowd[1])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 300), st.floats(0, 1), st.integers(0, 3))
def test_stacked_mask_equals_the_stable_argsort_mask(n_nets: int, size: int, sparsity: float, levels: int) -> None:
    g = torch.Generator().manual_seed(size)
    w = torch.randn(n_nets, size, generator=g)
    if levels:  # many exact ties, as pruned kernels have (zeros) and as rounding makes them
        w = (w * levels).round() / levels
    expected = torch.stack([_argsort_mask(x, sparsity) for x in w])  # the oracle: the definition itself
    assert torch.equal(stacked_magnitude_mask(w, sparsity), expected)
    assert all(torch.equal(magnitude_mask(x, sparsity), e) for x, e in zip(w, expected, strict=True))


def _argsort_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The definition: zero the first round(s*n) entries of a stable argsort of |w|."""
    mask = torch.ones(w.numel())
    mask[torch.argsort(w.abs().flatten(), stable=True)[:round(sparsity * w.numel())]] = 0
    return mask.view_as(w)


def test_jobs_must_share_one_recipe(tmp_path: Path) -> None:
    with pytest.raises(ModularityError, match="MLPs only"):
        train_many([("CNN-MNIST", 0)], tmp_path)
    with pytest.raises(ModularityError, match="one dataset"):
        train_many([("MNIST", 0), ("FASHION", 0)], tmp_path)
    with pytest.raises(ModularityError, match="twice"):
        train_many([("MNIST", 0), ("MNIST", 0)], tmp_path)
    with pytest.raises(ModularityError, match="at least one"):
        train_many([], tmp_path)
