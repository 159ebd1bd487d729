"""Cluster-gradient training (SMALL-MNIST+CLUSTERABILITY-GRADIENT): eigengap term, NormalizeWeights, 7x7 MNIST."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage, sparse
from scipy.sparse.linalg import eigsh

from modularity.cluster_gradient import (
    UNIT_NORM,
    EigengapTerm,
    eigengap_loss,
    linear_layers,
    normalize_weights,
    normalized_laplacian,
    spectral_eigenvalues,
    weight_adjacency,
)
from modularity.data import DERIVED, Dataset, base_dataset, downsample_antialiased
from modularity.errors import ModularityError
from modularity.graph import graph_of
from modularity.models import DATASET_SHAPES, MLP, build_model, load_checkpoint, tag_spec
from modularity.partition import partition
from modularity.train import train

CG = "SMALL-MNIST+CLUSTERABILITY-GRADIENT"


def _mlp(sizes: tuple[int, ...] = (6, 5, 4, 3), seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    model = MLP(in_features=sizes[0], hidden=sizes[1:-1], n_classes=sizes[-1]).double()
    with torch.no_grad():
        for lin in linear_layers(model):
            lin.bias.uniform_(-0.5, 0.5)
    return model


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [lin.weight for lin in linear_layers(model)]


def _scipy_laplacian(model: torch.nn.Module) -> sparse.csr_matrix:
    """L_sym of the project's weight graph (modularity.graph), isolated nodes removed, as the reference builds it."""
    adj = graph_of(model).adjacency
    keep = np.asarray(adj.sum(axis=0)).ravel() > 0
    adj = adj[keep][:, keep]
    d = np.asarray(adj.sum(axis=0)).ravel() ** -0.5
    return sparse.identity(adj.shape[0], format="csr") - sparse.csr_matrix(adj.multiply(d[None, :]).multiply(d[:, None]))


def _reference_gradient(model: torch.nn.Module, n_eigs: int) -> list[np.ndarray]:
    """The reference's hand-written gradient of sum(lambda_2..lambda_{m+1}) (src/cluster_gradient.py), vectorised.

    Per weight (m, n) of a layer: 0.5 d_m^-1.5 sum_j |A_mj| d_j^-0.5 G_mj + the same for n, minus
    (d_m d_n)^-0.5 G_mn, times sign(w), with G = sum_i v_i v_i^T. Needs a graph without isolated nodes.
    """
    weights = [w.detach().numpy().T for w in _weights(model)]  # (in, out), as Keras stores them
    adj = graph_of(model).adjacency.toarray()
    deg = adj.sum(0)
    assert (deg > 0).all()
    _, vecs = np.linalg.eigh(np.eye(len(deg)) - adj / np.sqrt(np.outer(deg, deg)))
    g = vecs[:, 1:n_eigs + 1] @ vecs[:, 1:n_eigs + 1].T
    row = 0.5 * deg ** -1.5 * (adj * deg[None, :] ** -0.5 * g).sum(1)  # the "m / n contributions" of every node
    out, start = [], 0
    for w in weights:
        rows, cols = slice(start, start + w.shape[0]), slice(start + w.shape[0], start + w.shape[0] + w.shape[1])
        grad = row[rows][:, None] + row[cols][None, :] - g[rows, cols] / np.sqrt(np.outer(deg[rows], deg[cols]))
        out.append(grad * np.sign(w))
        start += w.shape[0]
    return out


# --------------------------------------------------------------------------------------------------
# The eigengap term


def test_adjacency_is_the_projects_weight_graph() -> None:
    model = _mlp()
    assert np.array_equal(weight_adjacency(_weights(model)).detach().numpy(), graph_of(model).adjacency.toarray())


def test_eigenvalues_match_scipy_with_an_isolated_node() -> None:
    model = _mlp((8, 7, 6, 4))
    with torch.no_grad():  # hidden unit 2 of layer 1 loses every edge: isolated, removed
        model.fc1.weight[2] = 0
        model.fc2.weight[:, 2] = 0
    lap, keep = normalized_laplacian(_weights(model))
    assert int((~keep).sum()) == 1 and lap.shape == (24, 24)
    ref = _scipy_laplacian(model)
    assert np.allclose(lap.detach().numpy(), ref.toarray(), atol=1e-12)
    ours = spectral_eigenvalues(_weights(model), 3).detach().numpy()
    arpack = eigsh(ref, 4, sigma=-1.0, which="LM", v0=np.ones(ref.shape[0]))[0]  # the reference's call
    assert np.allclose(ours, np.sort(arpack)[1:4], atol=1e-9)
    assert np.allclose(ours, np.linalg.eigvalsh(ref.toarray())[1:4], atol=1e-12)
    assert 0 < ours[0] <= ours[1] <= ours[2]


def test_gradient_matches_finite_differences() -> None:
    model = _mlp((5, 4, 4, 3), seed=1)
    weights = [w.detach().clone().requires_grad_(True) for w in _weights(model)]
    assert torch.autograd.gradcheck(lambda *ws: spectral_eigenvalues(ws, 3).sum(), weights, eps=1e-6, atol=1e-6)


def test_reference_analytic_gradient_is_half_the_true_gradient() -> None:
    """Why EigengapTerm.gradient_scale is 0.5: the tag's updates equal the reference's."""
    model = _mlp((9, 8, 7, 5), seed=2)
    term = EigengapTerm()
    eigengap_loss(_weights(model), term).backward()
    autograd_full = [w.grad.numpy().T.copy() for w in _weights(model)]
    reference = _reference_gradient(model, term.n_eigs)
    factor = term.lam / term.n_eigs  # the reference's dy for each eigenvalue
    for ours, ref in zip(autograd_full, reference, strict=True):
        assert np.allclose(ours, factor * ref, atol=1e-12)  # with gradient_scale 0.5: the reference's update
        assert np.abs(ref).max() > 1e-3
    model.zero_grad()
    eigengap_loss(_weights(model), EigengapTerm(gradient_scale=1.0)).backward()
    for w, ref in zip(_weights(model), reference, strict=True):
        assert np.allclose(w.grad.numpy().T, 2 * factor * ref, atol=1e-12)


def test_gradient_steps_lower_the_eigenvalue_sum() -> None:
    model = _mlp((10, 8, 8, 4), seed=3)
    weights = _weights(model)
    before = float(spectral_eigenvalues(weights, 3).sum().detach())
    opt = torch.optim.SGD(weights, lr=0.5)
    for _ in range(10):
        opt.zero_grad()
        eigengap_loss(weights, EigengapTerm(lam=3.0, gradient_scale=1.0)).backward()
        opt.step()
    after = float(spectral_eigenvalues(weights, 3).sum().detach())
    assert after < before - 0.05, (before, after)


def test_too_small_graph_is_refused() -> None:
    with pytest.raises(ModularityError, match="eigenvalues needed"):
        spectral_eigenvalues([torch.ones(1, 1), torch.ones(1, 1)], 3)


# --------------------------------------------------------------------------------------------------
# NormalizeWeights


def test_normalize_weights_keeps_outputs_and_sets_norms() -> None:
    model = build_model("SMALL-MNIST").double().eval()
    with torch.no_grad():
        for lin in linear_layers(model):
            lin.weight.mul_(torch.empty_like(lin.weight).uniform_(0.1, 3.0))
            lin.bias.uniform_(-0.3, 0.3)
        model.fc2.weight[5] = 0  # a unit with nothing incoming (as after pruning)
        model.fc2.bias[5] = 0
    x = torch.rand(32, 1, 7, 7, dtype=torch.float64)
    before = model(x)
    lins = linear_layers(model)
    normalize_weights(lins)
    assert torch.allclose(model(x), before, atol=1e-12)
    for lin in lins[:-1]:
        norms = torch.sqrt(lin.weight.pow(2).sum(1) + lin.bias.pow(2))
        alive = norms > 0
        assert torch.allclose(norms[alive], torch.full_like(norms[alive], UNIT_NORM), atol=1e-12)
    assert int((~(torch.sqrt(lins[1].weight.pow(2).sum(1) + lins[1].bias.pow(2)) > 0)).sum()) == 1
    assert torch.all(model.fc3.weight[:, 5] == 0)  # the dead unit's outgoing weights are zeroed, as the reference


def test_normalize_weights_changes_the_graph_not_the_function() -> None:
    model = _mlp((6, 5, 5, 3), seed=4)
    with torch.no_grad():
        model.fc1.weight.mul_(10)
    before = spectral_eigenvalues(_weights(model), 2).detach().clone()
    normalize_weights(linear_layers(model))
    assert not torch.allclose(spectral_eigenvalues(_weights(model), 2), before)


# --------------------------------------------------------------------------------------------------
# 7x7 MNIST


def test_downsample_matches_scikit_image() -> None:
    """Golden values: ``skimage.transform.resize(img, [7, 7], anti_aliasing=True) * 255`` (scikit-image 0.26)."""
    img = np.zeros((28, 28), np.uint8)
    img[6:22, 9:19] = (np.arange(160) + 90).astype(np.uint8).reshape(16, 10)
    out = downsample_antialiased(img[None, None])
    assert out.shape == (1, 1, 7, 7) and out.dtype == np.float32
    assert np.allclose(out[0, 0, 3], [0.0, 4.4130, 122.9041, 169.2955, 127.7749, 4.6423, 0.0], atol=1e-3)
    assert np.allclose(out[0, 0, 0], [0.0, 0.0120, 0.3364, 0.4705, 0.3603, 0.0131, 0.0], atol=1e-3)


def test_downsample_is_blur_then_bilinear_at_pixel_centres() -> None:
    x = np.random.default_rng(0).integers(0, 256, (5, 1, 28, 28)).astype(np.uint8)
    out = downsample_antialiased(x, chunk=2)
    centres = 4 * (np.arange(7) + 0.5) - 0.5
    grid = np.meshgrid(centres, centres, indexing="ij")
    for i in range(5):
        blur = ndimage.gaussian_filter(x[i, 0] / 255.0, 1.5, mode="mirror")
        expected = ndimage.map_coordinates(blur, grid, order=1) * 255
        assert np.allclose(out[i, 0], expected, atol=1e-4)
    flat = downsample_antialiased(np.full((1, 1, 28, 28), 200, np.uint8))
    assert np.allclose(flat, 200, atol=1e-4)


def test_small_mnist_is_registered() -> None:
    assert base_dataset("small-mnist") == "mnist" and "small-mnist" in DERIVED
    assert DATASET_SHAPES["small-mnist"] == (1, 7, 7)
    for tag in ("SMALL-MNIST", CG):
        spec = tag_spec(tag)
        assert (spec.family, spec.dataset, spec.hidden, spec.epochs, spec.pruning_epochs, spec.batch_size) == \
            ("mlp", "small-mnist", (64, 64, 64), 10, 10, 128)
    assert tag_spec("SMALL-MNIST").cluster_gradient is None
    assert tag_spec(CG).cluster_gradient == EigengapTerm(lam=0.1, n_eigs=3, gradient_scale=0.5)
    assert [m.weight.shape[1] for m in linear_layers(build_model(CG))] == [49, 64, 64, 64]
    assert tag_spec("MNIST").hidden is None and build_model("MNIST").fc1.out_features == 256


# --------------------------------------------------------------------------------------------------
# Training


def _tiny_data(n: int = 400) -> Dataset:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.rand(n, 1, 7, 7, generator=g) * 0.3
    x[torch.arange(n), 0, y % 7, y // 2 % 7] += 0.7  # a learnable pixel per class
    return Dataset("small-mnist", x, y, x[:100], y[:100], 10)


def test_train_cluster_gradient_tag_and_cluster_it(tmp_path: Path) -> None:
    data = _tiny_data()
    paths = train(CG, 0, out=tmp_path, epochs=1, pruning_epochs=1, progress=False, data=data)
    model, meta = load_checkpoint(paths["pruned"])
    assert meta["spec"]["cluster_gradient"] == {"lam": 0.1, "n_eigs": 3, "gradient_scale": 0.5}
    assert max(meta["sparsity"].values()) == pytest.approx(0.9, abs=1e-3)
    graph = graph_of(model)
    assert graph.n_vertices == 49 + 192 + 10
    part = partition(graph, k=12, seed=0)
    assert part.labels.shape == (251,) and 0 < part.ncut < 12
    # the eigengap term and NormalizeWeights changed the training: not the plain SMALL-MNIST weights
    plain = train("SMALL-MNIST", 0, out=tmp_path / "plain", epochs=1, pruning_epochs=1, progress=False, data=data)
    unpruned_cg, _ = load_checkpoint(paths["unpruned"])
    unpruned_plain, _ = load_checkpoint(plain["unpruned"])
    assert not torch.allclose(unpruned_cg.fc2.weight, unpruned_plain.fc2.weight)


def test_batched_training_refuses_the_eigengap_term(tmp_path: Path) -> None:
    from modularity.train_batched import train_many

    with pytest.raises(ModularityError, match="eigengap"):
        train_many([(CG, 0)], out=tmp_path, epochs=0, pruning_epochs=1, progress=False, data=_tiny_data())


# --------------------------------------------------------------------------------------------------
# Benchmark rows


def test_paper_profile_compares_the_small_mnist_rows() -> None:
    """The 4 reference networks (10 replicates each) run in the paper profile (5 seeds) and can agree or differ."""
    import pandas as pd

    from benchmark import compare, paper_values, plan

    profile = plan.load_profile("paper")
    p = plan.plan(profile, plan.load_tables())
    table = next(t for t in p.tables if t.name == "clusterability")
    rows = [r for r in p.rows if r.table == table.name and r.tag.startswith("SMALL-")]
    assert {(r.tag, r.pruned) for r in rows} == {(t, pr) for t in ("SMALL-MNIST", CG) for pr in (False, True)}
    assert all(r.skip is None and r.seeds == (0, 1, 2, 3, 4) and r.k == 12 for r in rows)
    paper = paper_values.load_paper_values(table.paper)

    def results(shift: float) -> pd.DataFrame:
        recs = []
        for r in rows:
            pr = paper[(paper.tag == r.tag) & (paper.pruned == r.pruned)]
            assert len(pr) == 10 and (pr.family == "mlp").all()
            for s in r.seeds:
                recs.append({"analysis": "cluster", "tag": r.tag, "family": "mlp", "seed": s, "pruned": r.pruned, "k": 12,
                             "ncut": pr.ncut.median() + shift, "null_mean": pr.null_mean.median(),
                             "null_stdev": pr.null_stdev.median(), "z_score": pr.z_score.median(),
                             "percentile": pr.percentile.iloc[s], "test_acc": pr.test_acc.median(), "n_shuffles": 50})
        return pd.DataFrame(recs)

    same = compare.compare_table(table, rows, results(0.0), paper, profile=profile).rows
    assert (same.verdict == "agree").all() and (same.n_ours == 5).all() and (same.n_paper == 10).all()
    off = compare.compare_table(table, rows, results(1.0), paper, profile=profile).rows
    assert (off.verdict == "differ").all() and off.differing.str.contains("n-cut").all()
