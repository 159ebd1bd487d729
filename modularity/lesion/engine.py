"""The lesion engine: per-class correct-prediction counts of a network with sets of units silenced.

What a lesion is lives in :mod:`modularity.lesion.definition` (a hook zeroing post-activation values);
this module computes the counts of exactly that, fast.

Results are integer counts of correct predictions per true class, shape ``(M, n_classes)`` for ``M``
lesions, so every later comparison is exact (ties between a true and a random lesion are common).

How it is fast (flat ``nn.Sequential`` models: MLP, SmallCNN, CifarVGG):

* The network is cut right after the lesioned layer (after any channel-wise modules that follow it:
  pooling, batch norm, dropout), the activations at the cut and the unlesioned outputs of the next
  layers are computed once per chunk of images, and only the rest of the network is evaluated per
  lesion.
* The next weight layer is updated in low rank: ``z' = z + W[:, S] (v_S - h_S)`` costs ``|S|`` of its
  input width (a convolution over the ``|S|`` lesioned channels for conv layers). In MLPs the change
  is propagated as long as it touches few units: with 90%-pruned weights a small lesion changes only
  the units that have a non-zero weight from it, and the next update again costs only those units.
* Images on which every lesioned unit is already zero are not evaluated at all: their prediction
  cannot change.
* Pruned MLPs: once a change is dense, the remaining Linear/ReLU layers run in transposed layout with
  sparse weight matrices, in cache-sized blocks of images, into reused buffers (``_sparse_tail``).

Every other model the registry supports (torchvision, residual nets, functional activations) goes
through the definition's forward hook, many lesions per batched forward pass, with no prefix reuse.

Exactness. The fast path adds the low-rank change in another order than a plain forward pass sums its
products, so a float32 logit can differ in the last bits and flip an argmax at a near-tie. Every
prediction whose top-two logit margin is below ``TIE_RTOL * (1 + max |logit|)`` (far above float32
rounding) is therefore decided again by a float64 forward pass with the lesion applied by a hook. The
counts are thus those of the float64 forward pass of the (float32) network, independent of batch sizes
and summation order; a plain float32 forward pass gives the same counts except for an image whose
exact margin is within its own float32 rounding error (~1e-6), which the tests and the benchmark check
(none seen).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .. import validate
from ..arch import LayerSpec, is_flat_sequential, layer_by_name, ops
from ..arch.buffers import forward_buffers
from ..errors import ModularityError
from .definition import check_lesionable, lesion_point, lesioned_logits

TIE_RTOL = 1e-4
"""Relative top-two logit margin below which a prediction is re-decided in float64."""

DEFAULT_MAX_MEMORY = 1 << 30
"""Bytes of activations the engine aims to hold at once (a chunk of images is sized from it)."""

SPARSE_FRACTION = 0.5
"""An MLP layer's change stays column-sparse while it touches at most this fraction of the units."""

ALL_ROWS_FRACTION = 0.6
"""Images changed by a lesion are gathered only if at most this fraction changed (else all are used)."""

SPARSE_WEIGHT_DENSITY = 0.3
"""A Linear layer of the dense tail is multiplied as a sparse matrix if at most this fraction of its
weights is non-zero (pruned MLPs: 10%; torch's COO product was 2x faster than the dense one here)."""

SPARSE_MIN_OUT = 64
"""Narrower Linear layers (the output layer) stay dense: their product is cheaper than the tail's transpose."""

SPARSE_TAIL_MIN_ROWS = 512
"""The sparse tail is used only for at least this many images (below, the dense product is as fast)."""

TAIL_BLOCK = 2048
"""Images per block of the sparse tail (2048 x 256 floats = 2 MB per activation: cache-resident)."""

# Modules after the lesion point that the fast path pushes the lesion value through (per channel).
_CHANNELWISE = (nn.ReLU, nn.Dropout, nn.Identity, nn.MaxPool2d, *ops.BATCHNORM_MODULES)
_ELEMENTWISE = ops.ELEMENTWISE_1LIP

Lesions = Sequence[Sequence[int] | np.ndarray] | np.ndarray | torch.Tensor


# --------------------------------------------------------------------------------------------------
# Input checking


def as_unit_sets(lesions: Lesions, width: int) -> list[np.ndarray]:
    """Normalise lesions to a list of sorted unique int64 index arrays within ``range(width)``.

    ``lesions`` is either a sequence of unit-index collections (one per lesion) or a 2-D boolean /
    0-1 array of shape ``(M, width)`` whose true entries mark the lesioned units. An empty set is
    allowed (it is the unlesioned network); duplicates and out-of-range indices raise.
    """
    if isinstance(lesions, torch.Tensor):
        lesions = lesions.detach().cpu().numpy()
    if isinstance(lesions, np.ndarray) and lesions.ndim == 2 and lesions.dtype != object:
        if lesions.shape[1] != width:
            raise ModularityError(f"lesion mask has {lesions.shape[1]} columns but the layer has {width} units")
        if not np.isin(lesions, (0, 1)).all():
            raise ModularityError("a lesion mask must contain only 0/1 (or booleans)")
        return [np.flatnonzero(row).astype(np.int64) for row in lesions]
    sets = []
    for i, units in enumerate(lesions):
        arr = np.asarray(units)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ModularityError(f"lesion {i}: unit indices must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64).ravel()
        if arr.size and (arr.min() < 0 or arr.max() >= width):
            raise ModularityError(f"lesion {i}: unit indices must lie in 0..{width - 1}, got {arr.min()}..{arr.max()}")
        uniq = np.unique(arr)
        if uniq.size != arr.size:
            raise ModularityError(f"lesion {i}: duplicate unit indices")
        sets.append(uniq)
    return sets


def n_outputs(model: nn.Module, x: torch.Tensor) -> int:
    """Number of logits of ``model`` (one forward pass on one example)."""
    with _eval_mode(model), torch.inference_mode():
        out = model(x[:1].to(_device_of(model), torch.float32))
    return int(out.shape[1])


def check_data(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Validate ``(x, y)`` against the model; return float32 images, int64 labels, number of classes."""
    from ..inputs import as_xy, check_images

    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        x, y = as_xy((x, y))
    x, y = check_images(x, y)
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise ModularityError(f"need images (N, ...) and labels (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(y) == 0:
        raise ModularityError("no images to evaluate")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ModularityError(f"labels must be integers, got {y.dtype}")
    validate.finite_model(model)
    validate.finite_images(x)
    try:
        n_classes = n_outputs(model, x)
    except RuntimeError as exc:
        raise ModularityError(f"images of shape {tuple(x.shape[1:])} do not fit the model: "
                              f"{str(exc).splitlines()[0]}") from None
    if int(y.min()) < 0 or int(y.max()) >= n_classes:
        raise ModularityError(f"labels must lie in 0..{n_classes - 1} (the model's outputs), "
                              f"got {int(y.min())}..{int(y.max())}")
    return x.to(torch.float32), y.to(torch.int64), n_classes


def class_sizes(y: torch.Tensor | np.ndarray, n_classes: int) -> np.ndarray:
    """Number of images per class, int64 ``(n_classes,)``."""
    return np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# Small helpers


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluate in eval mode (no dropout, BN running statistics) and restore the caller's mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _near_tie(logits: torch.Tensor, preds: torch.Tensor | None = None) -> torch.Tensor:
    """Rows whose top-two margin is within ``TIE_RTOL`` (relative) of a tie.

    ``preds`` (the argmax, if the caller has it) saves a pass; the runner-up is the maximum with the
    argmax masked out, so an exact tie gives margin 0. On 10 000 x 10 logits here: 0.32 ms with
    ``preds``, 0.62 ms without, 1.1 ms for the ``topk(2)`` this replaced.
    """
    if logits.shape[1] < 2:
        return torch.zeros(len(logits), dtype=torch.bool, device=logits.device)
    idx = (logits.argmax(dim=1) if preds is None else preds)[:, None]
    top = logits.gather(1, idx).squeeze(1)
    runner_up = logits.scatter(1, idx, float("-inf")).amax(dim=1)
    margin = top - runner_up
    return ~(margin > TIE_RTOL * (1 + logits.abs().amax(dim=1)))  # NaN logits count as near ties


def _per_class(y: torch.Tensor, correct: torch.Tensor, n_classes: int) -> torch.Tensor:
    return torch.bincount(y[correct], minlength=n_classes)


# --------------------------------------------------------------------------------------------------
# The float64 tie-breaker


class _ExactJudge:
    """Re-decides near-tie predictions with a float64 copy of the model (created on first use)."""

    def __init__(self, model: nn.Module, spec: LayerSpec | None, before_batchnorm: bool = False,
                 batch: int = 2048) -> None:
        self.model, self.spec, self.before_batchnorm, self.batch = model, spec, before_batchnorm, batch
        self._model64: nn.Module | None = None
        self.n_decided = 0

    def _m64(self) -> nn.Module:
        if self._model64 is None:
            self._model64 = copy.deepcopy(self.model).double().eval()
        return self._model64

    def predictions(self, x: torch.Tensor, lesioned: torch.Tensor | None) -> torch.Tensor:
        """float64 argmax for images ``x`` with per-image lesions ``lesioned`` (None: unlesioned)."""
        m64 = self._m64()
        out = []
        for i in range(0, len(x), self.batch):
            xb = x[i:i + self.batch]
            if lesioned is None:
                logits = m64(xb.to(dtype=torch.float64))
            else:
                assert self.spec is not None
                logits = lesioned_logits(m64, self.spec, xb, lesioned[i:i + self.batch], self.before_batchnorm)
            out.append(logits.argmax(dim=1))
        self.n_decided += len(x)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


# --------------------------------------------------------------------------------------------------
# The fast path's plan for flat nn.Sequential models


@dataclass
class _Plan:
    """Where the network is cut and how a lesion enters the next weight layer."""

    prefix: list[nn.Module]          # modules up to and including the cut
    value: torch.Tensor              # (C,) value a lesioned unit takes at the cut (0, or BN(0))
    mixing: str                      # "linear", "flatten_linear", "conv" or "none"
    mix: nn.Module | None            # the Linear / Conv2d
    stages: list[nn.Module]          # modules after the mixing layer (or after the cut if "none")
    sparse_stages: int = 0           # how many leading stages can carry a column-sparse change
    nonzero: list[torch.Tensor] = field(default_factory=list)  # per sparse Linear stage: weight != 0
    bound_cut: torch.Tensor | None = None  # |change at cut| -> bound on |change of logits|
    bound_after: list[torch.Tensor | None] = field(default_factory=list)  # same after each stage
    # Per stage: the Linear weight as a sparse COO matrix where it is sparse enough and every stage from
    # there on is Linear or elementwise (the transposed sparse tail, see _sparse_tail); else None.
    sparse_weights: list[torch.Tensor | None] = field(default_factory=list)
    tail_calls: int = 0              # how many evaluations ran the sparse tail (reported in stats)
    sparse_entry: bool = False       # the mixing Linear is sparse and the tail can run every stage


_is_plain_sequential = is_flat_sequential


def _plan(model: nn.Module, spec: LayerSpec, before_batchnorm: bool, example: torch.Tensor) -> _Plan | None:
    """Cut a flat Sequential after the lesion point and its channel-wise followers; None if not flat."""
    if not _is_plain_sequential(model):
        return None
    names = [n for n, _ in model.named_children()]
    mods = [m for _, m in model.named_children()]
    point = lesion_point(spec, before_batchnorm)
    if point is None or point not in names:
        return None
    i = names.index(point)
    # The lesion value after the channel-wise followers: push zeros through them.
    with torch.inference_mode():
        act = example
        for m in mods[: i + 1]:
            act = m(act)
        j = i + 1
        v = torch.zeros_like(act[:1])
        while j < len(mods) and isinstance(mods[j], _CHANNELWISE) and not (
                isinstance(mods[j], nn.MaxPool2d) and mods[j].padding != 0):
            v = mods[j](v)
            j += 1
    flat_v = v.flatten(2) if v.ndim > 2 else v.unsqueeze(2)
    if not torch.equal(flat_v, flat_v[:, :, :1].expand_as(flat_v)):
        return None  # not a per-channel constant: let the hooked path handle it
    value = flat_v[0, :, 0]
    prefix = mods[:j]
    rest = mods[j:]
    mixing, mix = "none", None
    if rest and isinstance(rest[0], nn.Linear) and v.ndim == 2:
        mixing, mix, rest = "linear", rest[0], rest[1:]
    elif len(rest) > 1 and isinstance(rest[0], nn.Flatten) and isinstance(rest[1], nn.Linear) and v.ndim == 4:
        mixing, mix, rest = "flatten_linear", rest[1], rest[2:]
    elif rest and isinstance(rest[0], nn.Conv2d) and v.ndim == 4 and rest[0].groups == 1 \
            and rest[0].padding_mode == "zeros":
        mixing, mix, rest = "conv", rest[0], rest[1:]
    plan = _Plan(prefix, value, mixing, mix, _pool_before_relu(list(rest)))
    if mixing in ("linear", "flatten_linear"):
        n = 0
        for m in plan.stages:
            if isinstance(m, _ELEMENTWISE):
                n += 1
            elif isinstance(m, nn.Linear):
                plan.nonzero.append(m.weight != 0)
                n += 1
            else:
                break
        plan.sparse_stages = n
    plan.sparse_weights = _sparse_tail_weights(plan.stages)
    plan.sparse_entry = (mixing == "linear" and any(w is not None for w in plan.sparse_weights)
                         and all(isinstance(m, (nn.Linear, *_ELEMENTWISE)) for m in plan.stages)
                         and _is_sparse(mix.weight))
    _add_bounds(plan)
    return plan


def _is_sparse(weight: torch.Tensor) -> bool:
    """At most ``SPARSE_WEIGHT_DENSITY`` of the entries are non-zero (worth a sparse product)."""
    return float((weight != 0).float().mean()) <= SPARSE_WEIGHT_DENSITY


def _sparse_tail_weights(stages: list[nn.Module]) -> list[torch.Tensor | None]:
    """Sparse COO copies of the tail's sparse Linear weights (None where the tail cannot start)."""
    out: list[torch.Tensor | None] = [None] * len(stages)
    for k in range(len(stages) - 1, -1, -1):
        m = stages[k]
        if isinstance(m, nn.Linear):
            w = m.weight.detach()
            if m.out_features >= SPARSE_MIN_OUT and _is_sparse(w):
                out[k] = w.to_sparse().coalesce()
        elif not isinstance(m, _ELEMENTWISE):
            return [None] * (k + 1) + out[k + 1:]  # a stage the tail cannot run: no tail before it
    return out


def _sparse_tail(stages: list[nn.Module], weights: list[torch.Tensor | None], n_rows: int,
                 first: Callable[[int, int, torch.Tensor], torch.Tensor], buffers: _Buffers) -> torch.Tensor:
    """Run ``stages`` (Linear / elementwise only) in transposed layout, sparse weights where given.

    ``first(i, j, out)`` writes the transposed input of images ``i:j`` (units x images) into ``out``
    and returns it. Written by hand because torch's sparse product is fast only as ``sparse @ dense``
    with the dense factor in (units, images) layout. Images go in blocks of ``TAIL_BLOCK`` so that a
    block's activations stay in cache (2.3x faster than one 10 000-image block here), and outputs go
    to reused buffers (fresh 10 MB tensors cost page faults on every lesion). Summation order differs
    from the dense product; the float64 re-decision of near ties keeps the counts exact (module
    docstring). Returns the logits, ``(n_rows, out_features)``.
    """
    out_features = next(m.out_features for m in reversed(stages) if isinstance(m, nn.Linear))
    width = next(m.in_features for m in stages if isinstance(m, nn.Linear))  # units entering the tail
    logits = torch.empty(n_rows, out_features, dtype=buffers.dtype, device=buffers.device)
    for i in range(0, n_rows, TAIL_BLOCK):
        j = min(n_rows, i + TAIL_BLOCK)
        aT = first(i, j, buffers.get("tail0", (width, j - i)))
        n_linear = 0
        for m, w in zip(stages, weights, strict=True):
            if isinstance(m, nn.Linear):
                n_linear += 1  # alternate between two buffers: the output never aliases the input
                out = buffers.get(f"tail{n_linear % 2}", (m.out_features, aT.shape[1]))
                weight = m.weight if w is None else w
                if m.bias is None:
                    aT = torch.mm(weight, aT, out=out)
                else:
                    aT = torch.addmm(m.bias[:, None], weight, aT, out=out)
            else:
                aT = _stage(m, aT)
        logits[i:j] = aT.T
    return logits


def _stage(m: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """``m(a)`` where ``a`` is a scratch tensor the caller owns: ReLU in place (no new allocation)."""
    return a.relu_() if isinstance(m, nn.ReLU) else m(a)


class _Buffers:
    """Reusable scratch tensors by slot name: contiguous views of a flat buffer grown on demand."""

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self.dtype, self.device = dtype, device
        self._flat: dict[str, torch.Tensor] = {}

    def get(self, slot: str, shape: tuple[int, ...]) -> torch.Tensor:
        n = int(np.prod(shape))
        flat = self._flat.get(slot)
        if flat is None or flat.numel() < n:
            flat = self._flat[slot] = torch.empty(n, dtype=self.dtype, device=self.device)
        return flat[:n].view(shape)


def _pool_before_relu(stages: list[nn.Module]) -> list[nn.Module]:
    """Swap ReLU -> MaxPool2d into MaxPool2d -> ReLU: bit-identical (max and ReLU commute), 4x less ReLU."""
    out = list(stages)
    for k in range(len(out) - 1):
        if isinstance(out[k], nn.ReLU) and isinstance(out[k + 1], nn.MaxPool2d):
            out[k], out[k + 1] = out[k + 1], out[k]
    return out


def _add_bounds(plan: _Plan) -> None:
    """Bound matrices ``P`` with ``|change of logits| <= P |change here|`` where the rest is Linear/ReLU.

    ``P`` is the product of the absolute weight matrices of the remaining Linear layers (ReLU and
    dropout are 1-Lipschitz and elementwise). A lesioned image whose logit margins exceed the bound
    keeps its prediction, so it needs no further evaluation. Checks sit after elementwise stages
    (post-activation values) and at the cut. Computed in float64, used in float32.
    """
    P: torch.Tensor | None = None  # covers stages k+1 .. end
    ok, n_linear = True, 0
    after: list[torch.Tensor | None] = [None] * len(plan.stages)
    for k in range(len(plan.stages) - 1, -1, -1):
        m = plan.stages[k]
        # A check before the last Linear alone costs as much as that layer: only check deeper.
        if ok and n_linear >= 2 and isinstance(m, _ELEMENTWISE):
            after[k] = P.float() if P is not None else None
        if isinstance(m, nn.Linear):
            w = m.weight.detach().abs().double()
            P = w if P is None else P @ w
            n_linear += 1
        elif not isinstance(m, _ELEMENTWISE):
            ok = False
    plan.bound_after = after
    if ok and n_linear >= 1 and isinstance(plan.mix, nn.Linear):
        w = plan.mix.weight.detach().abs().double()
        plan.bound_cut = (w if P is None else P @ w).float()


def _bytes_per_image(model: nn.Module, example: torch.Tensor) -> int:
    """Bytes of all intermediate outputs of one image's forward pass (for sizing chunks), with each
    convolution's im2col buffer when oneDNN is off (pinned numerics): see :mod:`modularity.arch.buffers`."""
    im2col = not torch.backends.mkldnn.enabled
    total = sum((b.output + (b.im2col if im2col else 0)) * b.itemsize for b in forward_buffers(model, example))
    return max(total, 1)


_CERTIFY_SLACK = 1e-3


class _CheckStats:
    """Running share of images a bound check decides; checks that decide < 10% are only sampled."""

    def __init__(self) -> None:
        self.rate, self.calls = 1.0, 0

    def worth_it(self) -> bool:
        self.calls += 1
        return self.rate >= 0.1 or self.calls % 16 == 0

    def update(self, decided: float) -> None:
        self.rate = 0.5 * self.rate + 0.5 * decided


class _Chunk:
    """Cached unlesioned activations of one chunk of images, and the lesion evaluations on it."""

    def __init__(self, plan: _Plan, x: torch.Tensor, y: torch.Tensor, n_classes: int) -> None:
        self.plan, self.y, self.n_classes = plan, y, n_classes
        # Images as channels-last: oneDNN's convolutions and pooling are 1.5-4x faster on it here.
        a = x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x
        for m in plan.prefix:
            a = m(a)
        self.h = a  # activations at the cut
        self.bases: list[torch.Tensor] = []  # outputs of mix and of the sparse-capable stages
        if plan.mix is not None:
            a = plan.mix(a.flatten(1) if plan.mixing == "flatten_linear" else a)
            self.bases.append(a)
        for k, m in enumerate(plan.stages):
            a = m(a)
            if k < plan.sparse_stages:
                self.bases.append(a)
        self.logits = a
        self.preds = a.argmax(dim=1)
        self.near = _near_tie(a)
        self.checks: dict[int, _CheckStats] = {}
        self.buffers = _Buffers(a.dtype, a.device)
        self._base_t: torch.Tensor | None = None  # bases[0] transposed, for the sparse entry

    def settle_base(self, exact: torch.Tensor) -> None:
        """Replace near-tie unlesioned predictions by their exact float64 decision; prepare margins."""
        self.preds[self.near] = exact
        self.correct = self.preds == self.y
        self.base_counts = _per_class(self.y, self.correct, self.n_classes)
        top = self.logits.gather(1, self.preds[:, None])
        margins = top - self.logits
        margins.scatter_(1, self.preds[:, None], float("inf"))
        self.margins = margins  # (N, C): how much each other logit may gain before the argmax changes
        self.tol = TIE_RTOL * (1 + self.logits.abs().amax(dim=1))

    def _uncertified(self, rows: torch.Tensor | None, change: torch.Tensor, P: torch.Tensor,
                     point: int) -> torch.Tensor | None:
        """Mask of rows whose prediction the bound ``P |change|`` cannot guarantee to be unchanged.

        Returns None (skip) where this check has recently decided too few images to pay for itself.
        """
        stats = self.checks.setdefault(point, _CheckStats())
        if not stats.worth_it():
            return None
        mag = torch.abs(change, out=self.buffers.get("abs", tuple(change.shape)))
        b = mag.flatten(1) @ P.T  # (R, C) bound on each logit's change
        bp = b.gather(1, _take(self.preds, rows)[:, None])
        need = (b + bp) * (1 + _CERTIFY_SLACK) + _take(self.tol, rows)[:, None]
        keep = ~(_take(self.margins, rows) > need).all(dim=1)
        stats.update(1.0 - float(keep.float().mean()) if len(keep) else 0.0)
        return keep

    def evaluate(self, units: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-class correct counts with ``units`` lesioned; also the near-tie rows and their preds."""
        plan, h = self.plan, self.h
        empty = torch.zeros(0, dtype=torch.int64)
        if units.size == 0:
            return self.base_counts.clone(), empty, empty
        S = torch.as_tensor(units, device=h.device)
        v = plan.value[S].view(1, -1, *([1] * (h.ndim - 2)))
        cut = torch.index_select(h, 1, S, out=self.buffers.get("cut", (len(h), len(S), *h.shape[2:])))
        d = cut.neg_().add_(v)  # change of the lesioned units at the cut
        changed = d.flatten(1).ne(0).any(dim=1)
        rows: torch.Tensor | None = None
        if int(changed.sum()) <= ALL_ROWS_FRACTION * len(changed):  # else work on all rows: no gathers
            rows = torch.nonzero(changed).squeeze(1)
            d = d.index_select(0, rows)
        if _count(rows, h) and plan.bound_cut is not None:
            P = plan.bound_cut
            if plan.mixing == "flatten_linear":
                P = P.view(P.shape[0], h.shape[1], -1)[:, S].reshape(P.shape[0], -1)
            else:
                P = P.index_select(1, S)
            keep = self._uncertified(rows, d, P, -1)
            if keep is not None:
                rows, (d,) = _filter(rows, keep, d)
        if _count(rows, h) == 0:
            return self.base_counts.clone(), empty, empty
        rows, logits = self._propagate(S, rows, d)
        if _count(rows, h) == 0:
            return self.base_counts.clone(), empty, empty
        preds = logits.argmax(dim=1)
        near = _near_tie(logits, preds)
        yr = _take(self.y, rows)
        counts = (self.base_counts - _per_class(yr, _take(self.correct, rows), self.n_classes)
                  + _per_class(yr, preds == yr, self.n_classes))
        all_rows = torch.arange(len(h), device=h.device) if rows is None else rows
        return counts, all_rows[near], preds[near]

    def _propagate(self, S: torch.Tensor, rows: torch.Tensor | None, d: torch.Tensor
                   ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The logits of the still undecided ``rows`` (and those rows) after the lesion."""
        plan = self.plan
        if plan.mixing == "none":
            a = _take(self.h, rows).clone()
            a[:, S] = plan.value[S].view(1, -1, *([1] * (a.ndim - 2)))
            for m in plan.stages:
                a = m(a)
            return rows, a
        mix = plan.mix
        assert mix is not None
        base = self.bases[0]
        if plan.mixing == "conv":
            assert isinstance(mix, nn.Conv2d)
            cl = torch.channels_last
            a = torch.nn.functional.conv2d(d.contiguous(memory_format=cl),
                                           mix.weight[:, S].contiguous(memory_format=cl), None, mix.stride,
                                           mix.padding, mix.dilation)
            a += _take(base, rows)
            for m in plan.stages:
                a = m(a)
            return rows, a
        # Linear (or Flatten + Linear): W[:, cols] applied to the change d.
        w = mix.weight
        if plan.mixing == "flatten_linear":
            hw = d[0, 0].numel()
            w = w.view(w.shape[0], -1, hw)[:, S].reshape(w.shape[0], -1)
            d = d.flatten(1)
        else:
            w = w.index_select(1, S)
        touched = torch.nonzero((w != 0).any(dim=1)).squeeze(1)
        if plan.sparse_entry and touched.numel() > SPARSE_FRACTION * w.shape[0] \
                and _count(rows, d) >= SPARSE_TAIL_MIN_ROWS:
            plan.tail_calls += 1
            return rows, self._sparse_entry(rows, d, w)
        cols, a = self._linear_change(base, rows, d, w, touched, "mix")
        linear_k = 0
        change: torch.Tensor | None = None  # a - bases[k] on (rows, cols), if the last check computed it
        for k, m in enumerate(plan.stages):
            known, change = change, None
            if cols is not None and k < plan.sparse_stages:
                if isinstance(m, nn.Linear):
                    nz = plan.nonzero[linear_k]
                    linear_k += 1
                    d = known if known is not None else a - _take(self.bases[k], rows, cols)
                    touched = torch.nonzero(nz.index_select(1, cols).any(dim=1)).squeeze(1)
                    cols, a = self._linear_change(self.bases[k + 1], rows, d,
                                                  m.weight.index_select(1, cols), touched, f"stage{k}")
                else:
                    a = _stage(m, a)
            else:
                if cols is not None:  # densify: the unlesioned values with the changed columns replaced
                    a, cols = _with_columns(self.bases[k], rows, cols, a, self.buffers.get(
                        f"dense{k}", (_count(rows, a), self.bases[k].shape[1]))), None
                if plan.sparse_weights and plan.sparse_weights[k] is not None and len(a) >= SPARSE_TAIL_MIN_ROWS:
                    plan.tail_calls += 1
                    return rows, _sparse_tail(plan.stages[k:], plan.sparse_weights[k:], len(a),
                                              lambda i, j, out, a=a: out.copy_(a[i:j].T), self.buffers)
                a = _stage(m, a)
            P = plan.bound_after[k] if k < len(plan.bound_after) else None
            if P is not None and k + 1 < len(plan.stages):
                change = self._take_into(f"change{k}", self.bases[k + 1], rows, cols)
                change = torch.sub(a, change, out=change)
                keep = self._uncertified(rows, change, P if cols is None else P.index_select(1, cols), k)
                if cols is None:
                    change = None  # the dense path after this does not use it
                if keep is not None:
                    rows, (a, *kept) = _filter(rows, keep, a, *([] if change is None else [change]))
                    change = kept[0] if kept else None
                    if _count(rows, a) == 0:
                        return rows, a
        if cols is not None:
            a = _with_columns(self.bases[-1], rows, cols, a)
        return rows, a

    def _sparse_entry(self, rows: torch.Tensor | None, d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Logits of ``rows`` for a dense change ``d`` at the cut, all in the transposed sparse tail.

        The mixing layer's update ``base + W[:, S] d`` is itself computed in transposed layout with
        the sparse ``W[:, S]``, so the whole lesion runs without a dense product or a transpose of
        the activations (the bound check after the mixing layer is skipped for these lesions).
        """
        if self._base_t is None:
            self._base_t = self.bases[0].T.contiguous()  # (units, images), built on first use
        base_t, w_sparse, plan = self._base_t, w.to_sparse(), self.plan

        def first(i: int, j: int, out: torch.Tensor) -> torch.Tensor:
            d_t = self.buffers.get("d_t", (d.shape[1], j - i)).copy_(d[i:j].T)
            b = base_t[:, i:j] if rows is None else torch.index_select(base_t, 1, rows[i:j], out=out)
            return torch.addmm(b, w_sparse, d_t, out=out)

        return _sparse_tail(plan.stages, plan.sparse_weights, len(d), first, self.buffers)

    def _take_into(self, slot: str, t: torch.Tensor, rows: torch.Tensor | None, cols: torch.Tensor | None
                   ) -> torch.Tensor:
        """``t[rows][:, cols]`` as a copy in the buffer ``slot`` (no fresh allocation)."""
        if cols is not None:
            return _take(t, rows, cols)  # column-sparse: small
        out = self.buffers.get(slot, (_count(rows, t), *t.shape[1:]))
        return out.copy_(t) if rows is None else torch.index_select(t, 0, rows, out=out)

    def _linear_change(self, base: torch.Tensor, rows: torch.Tensor | None, d: torch.Tensor, w: torch.Tensor,
                       touched: torch.Tensor, slot: str) -> tuple[torch.Tensor | None, torch.Tensor]:
        """New pre-activations ``base + d @ w.T`` on ``rows``: column-sparse if few units are touched.

        A dense result goes to the buffer ``slot`` (one per stage, so it never aliases ``d``).
        """
        if touched.numel() <= SPARSE_FRACTION * w.shape[0]:
            return touched, torch.addmm(_take(base, rows, touched), d, w.index_select(0, touched).T)
        out = self.buffers.get(slot, (len(d), w.shape[0]))
        return None, torch.addmm(_take(base, rows), d, w.T, out=out)


def _take(t: torch.Tensor, rows: torch.Tensor | None, cols: torch.Tensor | None = None) -> torch.Tensor:
    """``t[rows][:, cols]`` (None: all); ``index_select``, 3-6x faster here than advanced indexing."""
    if rows is not None:
        t = t.index_select(0, rows)
    return t if cols is None else t.index_select(1, cols)


def _with_columns(base: torch.Tensor, rows: torch.Tensor | None, cols: torch.Tensor, a: torch.Tensor,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """``base[rows]`` (a new tensor, or ``out``) with its columns ``cols`` replaced by ``a``."""
    if out is None:
        full = base.clone() if rows is None else base.index_select(0, rows)
    else:
        full = out.copy_(base) if rows is None else torch.index_select(base, 0, rows, out=out)
    return full.index_copy_(1, cols, a)


def _count(rows: torch.Tensor | None, t: torch.Tensor) -> int:
    return len(t) if rows is None else int(rows.numel())


def _filter(rows: torch.Tensor | None, keep: torch.Tensor, *tensors: torch.Tensor
            ) -> tuple[torch.Tensor | None, tuple[torch.Tensor, ...]]:
    """Keep the rows marked in ``keep`` (of the current rows) in ``rows`` and in each tensor."""
    if bool(keep.all()):
        return rows, tensors
    idx = torch.nonzero(keep).squeeze(1)
    return (idx if rows is None else rows.index_select(0, idx)), tuple(t.index_select(0, idx) for t in tensors)


# --------------------------------------------------------------------------------------------------
# Public API


def unlesioned_counts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> np.ndarray:
    """Per-class correct-prediction counts of the intact network, int64 ``(n_classes,)``.

    Near-tie predictions are decided in float64, as in :func:`lesion_counts`, so that the two agree.
    """
    x, y, n_classes = check_data(model, x, y)
    device = _device_of(model)
    counts = torch.zeros(n_classes, dtype=torch.int64)
    with _eval_mode(model), torch.inference_mode():
        judge: _ExactJudge | None = None
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            logits = model(xb)
            preds = logits.argmax(dim=1)
            near = _near_tie(logits, preds)
            if near.any():
                if judge is None:
                    judge = _ExactJudge(model, None)
                preds[near] = judge.predictions(xb[near], None).to(device)
            counts += _per_class(yb, preds == yb, n_classes).cpu()
    return counts.numpy()


def lesion_counts(model: nn.Module, layer: str | LayerSpec, lesions: Lesions, x: torch.Tensor, y: torch.Tensor,
                  *, before_batchnorm: bool = False, max_memory: int = DEFAULT_MAX_MEMORY,
                  method: str = "auto", stats: dict | None = None) -> np.ndarray:
    """Per-class correct-prediction counts with each lesion applied, int64 ``(M, n_classes)``.

    Args:
        model: a network with a layout in :mod:`modularity.layers` (its weights are not modified).
        layer: the lesioned layer (name or spec), e.g. ``"hidden2"`` or ``"conv1"``.
        lesions: ``M`` lesions: unit-index collections, or an ``(M, width)`` 0/1 array (1 = lesioned).
        x, y: images and integer labels (e.g. the test split).
        before_batchnorm: reference behaviour for BN layers (zero the ReLU output, BN maps it to a
            constant); default: zero after the BN.
        max_memory: bytes of activations to hold at once (sets the image chunk size).
        method: ``"auto"`` (fast path where the model allows), ``"fast"`` (require it) or ``"hooks"``
            (plain hooked forward passes, many lesions per batch).
        stats: if a dict is given, it receives ``{"method", "chunk", "exact_decisions",
            "sparse_tail_calls"}`` (the last: lesions whose dense tail ran with sparse weights).
    """
    spec = layer if isinstance(layer, LayerSpec) else layer_by_name(model, layer)
    check_lesionable(spec)  # raises for layers without activation (input, output)
    sets = as_unit_sets(lesions, spec.width)
    x, y, n_classes = check_data(model, x, y)
    if method not in ("auto", "fast", "hooks"):
        raise ModularityError(f"unknown lesion method {method!r}; use auto, fast or hooks")
    device = _device_of(model)
    counts = torch.zeros(len(sets), n_classes, dtype=torch.int64)
    with _eval_mode(model), torch.inference_mode():
        example = x[:1].to(device)
        plan = None if method == "hooks" else _plan(model, spec, before_batchnorm, example)
        if plan is None and method == "fast":
            raise ModularityError(f"the fast lesion path needs a flat nn.Sequential; {type(model).__name__} is not")
        per_image = _bytes_per_image(model, example)
        judge = _ExactJudge(model, spec, before_batchnorm)
        if plan is not None:
            chunk = int(max(1, min(len(x), max_memory // (3 * per_image))))
            _fast_counts(plan, judge, x, y, sets, n_classes, chunk, counts, spec.width)
        else:
            chunk = int(max(1, min(len(x), max_memory // (2 * per_image))))
            _hooked_counts(model, spec, before_batchnorm, judge, x, y, sets, n_classes, chunk, counts)
    if stats is not None:
        stats.update(method="fast" if plan is not None else "hooks", chunk=chunk,
                     exact_decisions=judge.n_decided, sparse_tail_calls=plan.tail_calls if plan else 0)
    return counts.numpy()


def _fast_counts(plan: _Plan, judge: _ExactJudge, x: torch.Tensor, y: torch.Tensor, sets: list[np.ndarray],
                 n_classes: int, chunk: int, counts: torch.Tensor, width: int) -> None:
    device = plan.value.device
    for start in range(0, len(x), chunk):
        xc, yc = x[start:start + chunk].to(device), y[start:start + chunk].to(device)
        c = _Chunk(plan, xc, yc, n_classes)
        c.settle_base(judge.predictions(xc[c.near], None).to(device) if c.near.any()
                      else torch.zeros(0, dtype=torch.int64, device=device))
        pending_rows, pending_masks, pending_preds, pending_ids = [], [], [], []
        for m, units in enumerate(sets):
            cm, near_rows, near_preds = c.evaluate(units)
            counts[m] += cm.cpu()
            if near_rows.numel():
                mask = torch.zeros(len(near_rows), width, dtype=torch.bool, device=device)
                mask[:, torch.as_tensor(units, device=device)] = True
                pending_rows.append(near_rows)
                pending_masks.append(mask)
                pending_preds.append(near_preds)
                pending_ids.append(torch.full((len(near_rows),), m, dtype=torch.int64))
        if pending_rows:
            rows = torch.cat(pending_rows)
            fast = torch.cat(pending_preds)
            exact = judge.predictions(xc[rows], torch.cat(pending_masks)).to(device)
            _correct_counts(counts, torch.cat(pending_ids), yc[rows], fast, exact, n_classes)


def _correct_counts(counts: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor, fast: torch.Tensor,
                    exact: torch.Tensor, n_classes: int) -> None:
    """Swap the fast decisions of near-tie rows for the exact ones in the per-lesion counts."""
    delta = (exact == labels).long() - (fast == labels).long()
    flat = ids.cpu() * n_classes + labels.cpu()
    counts.view(-1).index_add_(0, flat, delta.cpu())


def _hooked_counts(model: nn.Module, spec: LayerSpec, before_batchnorm: bool, judge: _ExactJudge,
                   x: torch.Tensor, y: torch.Tensor, sets: list[np.ndarray], n_classes: int, chunk: int,
                   counts: torch.Tensor) -> None:
    """Plain forward passes with a hook, several lesions per batch (any model with a layout)."""
    device = _device_of(model)
    masks = torch.zeros(len(sets), spec.width, dtype=torch.bool)
    for m, units in enumerate(sets):
        masks[m, torch.as_tensor(units, dtype=torch.int64)] = True
    per_batch = max(1, chunk // len(x)) if chunk >= len(x) else 1
    img_chunk = min(chunk, len(x))
    for start in range(0, len(x), img_chunk):
        xc, yc = x[start:start + img_chunk].to(device), y[start:start + img_chunk].to(device)
        b = len(xc)
        for m0 in range(0, len(sets), per_batch):
            mk = masks[m0:m0 + per_batch].to(device)
            k = len(mk)
            logits = lesioned_logits(model, spec, xc.repeat(k, *([1] * (xc.ndim - 1))),
                                     mk.repeat_interleave(b, dim=0), before_batchnorm)
            preds = logits.argmax(dim=1)
            near = _near_tie(logits, preds)
            if near.any():
                idx = torch.nonzero(near).squeeze(1)
                preds[idx] = judge.predictions(xc[idx % b], mk[idx // b]).to(device)
            yk = yc.repeat(k)
            ids = torch.arange(m0, m0 + k).repeat_interleave(b)
            flat = ids * n_classes + yk.cpu()
            counts.view(-1).index_add_(0, flat, (preds == yk).long().cpu())
