"""The POLY regression task: dataset, monomial-term bookkeeping and the regression lesion test.

The reference's only regression networks (docs/methods.md §10): an MLP 2 -> 256x4 -> 512
with linear outputs, trained with MSE on

* inputs ``x ~ N(0, I_2)``: ``x_train`` (60000, 2), ``x_test`` (10000, 2), float32, seed 42;
* targets ``y`` (N, 512) float32: output ``j`` is the polynomial ``sum_t c_jt * m_t(x)`` over the
  :data:`N_TERMS` = 9 monomials ``m_t = x1^a * x2^b`` (a, b in {0, 1, 2}, :data:`TERMS`) with
  ``c_jt = bit t of j`` (:func:`coefficients`), so the 512 outputs are every 0/1 combination of the
  9 terms and each term appears in exactly 256 of them (:func:`term_membership`).

Importance of a sub-cluster (docs/methods.md §5.2): the "classes" of the classification test are
replaced by the 9 terms. Per lesion, the per-output test MSE (512,) is averaged over the 256 outputs
containing each term (:func:`per_term_mse`, (9,)); the lesion's "mean" is the mean over the 9 terms
and its "range" is ``max - min`` of ``delta / mean(delta)`` with ``delta`` = per-term MSE minus the
intact network's (:func:`modularity.stats.range_statistic`, right-sided as for classification).

Direction (``direction=``), for the mean test:

``"paper"`` (default)
    the paper's text, mirroring the classification test: a lesion is more important when it *raises*
    the MSE more than random lesions do, so the mean percentile is right-sided on the MSE and
    ``effect_means`` = mean over sub-clusters of ``true MSE / mean random MSE`` (> 1: the sub-clusters
    matter more than random sets, as for accuracy).
``"reference"``
    the reference code's (docs/methods.md §9.11): the left-sided percentile of the classification
    test applied to the MSE unchanged, so it is small when the true lesion gives a *lower* MSE (is
    less damaging), and ``effect_means`` = mean of ``mean random MSE / true MSE``. The stored POLY
    lesion row (Fisher p 0.05, effect 7.8) used it; compare with it only in this direction.

The range test does not depend on the direction (``delta / mean(delta)`` is unchanged when every
sign flips). The lesion test itself is :func:`modularity.lesion.regression.regression_importance`,
which :func:`modularity.importance.importance` runs when the targets are float (N, outputs) arrays.
This module imports only NumPy and torch, so that loading the dataset (the train stage) does not
depend on the analysis code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .errors import ModularityError

SEED = 42
N_TRAIN, N_TEST = 60_000, 10_000
#: The 9 monomials x1^a * x2^b as exponent pairs (a, b), in the order of the coefficient bits.
TERMS: tuple[tuple[int, int], ...] = tuple((a, b) for a in range(3) for b in range(3))
N_TERMS = len(TERMS)
N_OUTPUTS = 2 ** N_TERMS



# --------------------------------------------------------------------------------------------------
# Terms and dataset


def term_names() -> list[str]:
    """Readable names of :data:`TERMS`: ``1``, ``x2``, ``x2^2``, ``x1``, ``x1*x2``, ..."""
    def power(v: str, e: int) -> str:
        return "" if e == 0 else (v if e == 1 else f"{v}^{e}")

    return ["*".join(p for p in (power("x1", a), power("x2", b)) if p) or "1" for a, b in TERMS]


def coefficients() -> np.ndarray:
    """0/1 coefficients, int8 (512, 9): ``c[j, t]`` = bit ``t`` of ``j`` (output j contains term t)."""
    return ((np.arange(N_OUTPUTS)[:, None] >> np.arange(N_TERMS)[None, :]) & 1).astype(np.int8)


def term_membership() -> np.ndarray:
    """Boolean (9, 512): which outputs contain each term (every row has 256 True)."""
    return coefficients().T.astype(bool)


def monomials(x: np.ndarray) -> np.ndarray:
    """The 9 monomials of inputs ``x`` (N, 2), float64 (N, 9), in the order of :data:`TERMS`."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ModularityError(f"POLY inputs must have shape (N, 2), got {x.shape}")
    x1, x2 = x[:, 0], x[:, 1]
    p1, p2 = [np.ones_like(x1), x1, x1 * x1], [np.ones_like(x2), x2, x2 * x2]
    return np.stack([p1[a] * p2[b] for a, b in TERMS], axis=1)


def targets(x: np.ndarray) -> np.ndarray:
    """All 512 polynomials of inputs ``x`` (N, 2), float32 (N, 512).

    Summed term by term in a fixed order in float64 (each product by 0 or 1 is exact), so the values
    do not depend on a BLAS library's summation order.
    """
    m = monomials(x)
    c = coefficients().astype(np.float64)
    y = np.zeros((len(m), N_OUTPUTS))
    for t in range(N_TERMS):
        y += m[:, t:t + 1] * c[None, :, t]
    return y.astype(np.float32)


def make_arrays(seed: int = SEED, n_train: int = N_TRAIN, n_test: int = N_TEST) -> dict[str, np.ndarray]:
    """The POLY dataset as arrays: ``x_*`` float32 (N, 2), ``y_*`` float32 (N, 512).

    ``x`` is one stream ``np.random.RandomState(seed).standard_normal((n_train + n_test, 2))`` (the
    legacy generator, stable across NumPy versions), cast to float32; the first ``n_train`` rows are
    the training set. The targets are computed from the float32 inputs the network sees.
    """
    if n_train < 1 or n_test < 1:
        raise ModularityError(f"need n_train, n_test >= 1, got {n_train}, {n_test}")
    x = np.random.RandomState(seed).standard_normal((n_train + n_test, 2)).astype(np.float32)
    y = targets(x)
    return {"x_train": x[:n_train], "y_train": y[:n_train], "x_test": x[n_train:], "y_test": y[n_train:]}


def dataset(seed: int = SEED, n_train: int = N_TRAIN, n_test: int = N_TEST) -> Any:
    """The POLY dataset as a :class:`modularity.data.Dataset` (``n_classes`` = 512 outputs)."""
    from .data import Dataset

    a = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in make_arrays(seed, n_train, n_test).items()}
    return Dataset("poly", a["x_train"], a["y_train"], a["x_test"], a["y_test"], N_OUTPUTS)


# --------------------------------------------------------------------------------------------------
# Regression metrics


def per_output_mse(pred: Any, target: Any) -> np.ndarray:
    """Mean over examples of the squared error, float64 (outputs,); ``pred``, ``target`` (N, outputs)."""
    p, t = torch.as_tensor(pred).double(), torch.as_tensor(target).double()
    if p.shape != t.shape or p.ndim != 2:
        raise ModularityError(f"predictions {tuple(p.shape)} and targets {tuple(t.shape)} must both be (N, outputs)")
    return ((p - t) ** 2).mean(0).cpu().numpy()


def per_term_mse(output_mse: Any, membership: np.ndarray | None = None) -> np.ndarray:
    """Per term, the mean of the per-output MSE over the outputs containing it: (..., outputs) -> (..., terms).

    ``membership`` is a boolean (terms, outputs) matrix (default :func:`term_membership`: 9 x 512).
    """
    groups = term_membership() if membership is None else np.asarray(membership, dtype=bool)
    mse = np.asarray(output_mse, dtype=np.float64)
    if groups.ndim != 2 or mse.shape[-1] != groups.shape[1]:
        raise ModularityError(f"per-output MSE has {mse.shape[-1:]} outputs, the term membership {groups.shape}")
    if not groups.any(axis=1).all():
        raise ModularityError("every term must be in at least one output")
    return mse @ groups.T.astype(np.float64) / groups.sum(axis=1)
