"""Cluster-gradient training: the eigengap loss term and the per-batch weight normalisation (docs/methods.md §1.8).

The reference's ``SMALL-MNIST+CLUSTERABILITY-GRADIENT`` networks minimise

    CE + (lambda / m) * sum_{i=2..m+1} lambda_i(L_sym),    lambda = 0.1, m = 3,

where lambda_1 <= lambda_2 <= ... are the eigenvalues of the normalised Laplacian
``L_sym = I - D^-1/2 A D^-1/2`` of the MLP's weight graph (the graph :mod:`modularity.graph` builds: every
unit a node, ``|W|`` the edge weights between consecutive layers, biases ignored, isolated nodes removed),
so lambda_2..lambda_{m+1} are the smallest non-trivial ones. Before every batch a ``NormalizeWeights`` step
rescales each hidden unit's incoming weights and bias to L2 norm sqrt(2) and multiplies its outgoing
weights by the same factor; ReLU is positively homogeneous, so the network's function is unchanged while
the graph (and the eigenvalues) can no longer shrink by scaling whole layers.

**Autograd instead of the reference's analytic gradient.** The reference computes the eigenvalues with
ARPACK (``eigsh(k=m+1, sigma=-1)``) outside TensorFlow and writes the gradient by hand: the
eigenvector outer products ``v v^T`` (= d lambda / d L for a simple eigenvalue) chained through ``L_sym``
and ``|W|`` by explicit loops. Here ``L_sym`` is built from the weights in torch and
:func:`torch.linalg.eigvalsh` is differentiated by autograd, whose backward is ``V diag(g) V^T``, the same
``v v^T`` rule; the chain through ``D^-1/2 A D^-1/2`` and ``|W|`` is then exact by construction instead of
hand-derived, runs on any device, and needs no worker pool. For simple eigenvalues both are the gradient
of the same function (``tests/test_cluster_gradient.py`` checks autograd against finite differences and
the eigenvalues against SciPy). One difference is deliberate: the reference's hand-written chain counts
each weight once in ``L_sym`` although the symmetric matrix holds it twice (entries (m, n) and (n, m)),
so its gradient is exactly **half** the true gradient of the loss it states (checked numerically in the
tests against a transcription of its formula). :attr:`EigengapTerm.gradient_scale` = 0.5, the tag's
value, reproduces the reference's updates; 1.0 gives the gradient of the loss as written in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from .errors import ModularityError

#: Norm of every hidden unit's (incoming weights, bias) after :func:`normalize_weights` (He-like scale).
UNIT_NORM = math.sqrt(2.0)


@dataclass(frozen=True)
class EigengapTerm:
    """The loss term ``gradient_scale * (lam / n_eigs) * sum(lambda_2..lambda_{n_eigs+1})`` of a training recipe.

    ``lam`` and ``n_eigs`` are the reference's ``cluster_lambda`` = 0.1 and ``num_cluster_eigs`` = 3.
    ``gradient_scale`` = 0.5 reproduces the reference's hand-written gradient, which is half the true one
    (module docstring); set it to 1.0 for the gradient of the loss as the paper states it.
    """

    lam: float = 0.1
    n_eigs: int = 3
    gradient_scale: float = 0.5


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The Linear layers of an MLP, input to output; consecutive layers must chain (in_{l+1} = out_l)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModularityError("cluster-gradient training needs an MLP (no Linear layers found)")
    for a, b in pairwise(linears):
        if b.in_features != a.out_features:
            raise ModularityError(f"cluster-gradient training needs a plain MLP: a Linear with {a.out_features} outputs "
                                  f"is followed by one with {b.in_features} inputs")
    return linears


def weight_adjacency(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """Symmetric adjacency of the ``|W|`` graph, differentiable in the weights.

    ``weights``: torch layout, layer l of shape (n_{l+1}, n_l). Returns (V, V) float64 with V = sum_l n_l
    (inputs, hidden units, outputs in order); block (l, l+1) is ``|W_l|^T``, the diagonal blocks are zero.
    """
    sizes = [weights[0].shape[1]] + [w.shape[0] for w in weights]
    offsets = [0]
    for s in sizes:
        offsets.append(offsets[-1] + s)
    upper = weights[0].new_zeros((offsets[-1], offsets[-1]), dtype=torch.float64)
    for layer, w in enumerate(weights):
        if w.shape[1] != sizes[layer]:
            raise ModularityError(f"weight {layer} has shape {tuple(w.shape)}; expected {sizes[layer]} inputs")
        upper[offsets[layer]:offsets[layer + 1], offsets[layer + 1]:offsets[layer + 2]] = w.abs().to(torch.float64).T
    return upper + upper.T


def normalized_laplacian(weights: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``L_sym = I - D^-1/2 A D^-1/2`` of the ``|W|`` graph with isolated nodes (degree 0) removed.

    Returns (L of shape (V', V') float64, keep of shape (V,) bool: the nodes kept, V' = keep.sum()).
    Only single isolated nodes are removed, as the reference does; disconnected parts stay (each adds a
    zero eigenvalue).
    """
    adj = weight_adjacency(weights)
    keep = adj.sum(1) > 0
    adj = adj[keep][:, keep]
    inv_sqrt = adj.sum(1).rsqrt()
    lap = torch.eye(adj.shape[0], dtype=adj.dtype, device=adj.device) - inv_sqrt[:, None] * adj * inv_sqrt[None, :]
    return lap, keep


def spectral_eigenvalues(weights: Sequence[torch.Tensor], n_eigs: int = 3) -> torch.Tensor:
    """lambda_2..lambda_{n_eigs+1} of :func:`normalized_laplacian`, ascending, shape (n_eigs,) float64.

    The smallest eigenvalue (0 for any graph) is skipped, as the reference's ``evals[1:m+1]``.
    Differentiable: autograd through :func:`torch.linalg.eigvalsh`.
    """
    lap, _ = normalized_laplacian(weights)
    if lap.shape[0] < n_eigs + 1:
        raise ModularityError(f"the weight graph has {lap.shape[0]} connected nodes; {n_eigs + 1} eigenvalues needed")
    return torch.linalg.eigvalsh(lap)[1:n_eigs + 1]


def eigengap_loss(weights: Sequence[torch.Tensor], term: EigengapTerm = EigengapTerm()) -> torch.Tensor:
    """The scalar loss term of ``term`` for weights in torch layout (see :func:`weight_adjacency`), in their dtype."""
    value = spectral_eigenvalues(weights, term.n_eigs).sum()
    return (term.gradient_scale * term.lam / term.n_eigs * value).to(weights[0].dtype)


@torch.no_grad()
def normalize_weights(linears: Sequence[nn.Linear], norm: float = UNIT_NORM) -> None:
    """The reference's ``NormalizeWeights`` callback, in place; the network's outputs do not change.

    For each hidden layer in order (so a layer's incoming weights already carry the previous layer's
    factors): s_j = ||(W_in[j, :], b_j)||_2 / norm; the unit's incoming row and bias are divided by s_j
    and the outgoing column W_out[:, j] multiplied by it. A unit with s_j = 0 (everything incoming is 0,
    e.g. all pruned) is left as it is and its outgoing weights become 0, as in the reference; the unit's
    output is ReLU(0) = 0 either way. Needs ReLU (positively homogeneous) activations between the layers.
    """
    for inc, out in pairwise(linears):
        sq = inc.weight.pow(2).sum(1)
        if inc.bias is not None:
            sq = sq + inc.bias.pow(2)
        scale = sq.sqrt() / norm  # (n_hidden,)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        inc.weight.div_(safe[:, None])
        if inc.bias is not None:
            inc.bias.div_(safe)
        out.weight.mul_(scale[None, :])


class ClusterGradient:
    """Training hook of a tag with an :class:`EigengapTerm`: ``before_batch()`` then ``loss()`` every step."""

    def __init__(self, model: nn.Module, term: EigengapTerm) -> None:
        self.linears, self.term = linear_layers(model), term

    def before_batch(self) -> None:
        """NormalizeWeights (the reference runs it at the start of every batch, before the pruning mask update)."""
        normalize_weights(self.linears)

    def loss(self) -> torch.Tensor:
        """The eigengap term on the current weights, to add to the cross-entropy."""
        return eigengap_loss([lin.weight for lin in self.linears], self.term)
