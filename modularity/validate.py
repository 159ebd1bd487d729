"""Input checks at the public boundary: every user error is one :class:`ModularityError` line, raised
before any work starts.

The analysis functions (``graph_of``, ``partition``, ``clusterability``, ``importance``,
``input_coherence``, ``lesion_counts``) call these at their top, and the CLI calls them (through those
functions) before it reads data or writes anything. Each check names the offending option or tensor.

What is refused, and why (docs/bad-input.md lists the cases):

* **Non-finite weights or images** (NaN, +inf, -inf): a single NaN weight turns every logit into NaN
  (accuracy at chance) and becomes a *missing* edge in the weight graph; an inf breaks the spectral
  embedding. No statistic computed from such a network means anything, so they are refused with the
  tensor's name and the count.
* **A network no better than chance** (:func:`above_chance`): lesion tests compare accuracy drops; a
  network whose intact balanced accuracy is within :data:`CHANCE_MARGIN` of ``1/n_classes`` has no
  accuracy to lose, and its p-values would only measure noise. ``importance`` raises (an error, not a
  warning, so that no table is written from it).
* **Options out of range**: seeds must be integers >= 0 (NumPy's ``SeedSequence`` refuses negative
  ones), ``n_jobs`` >= 1 or -1, ``n_init`` >= 1, ``0 < max_prop <= 1``, ``min_size`` >= 1, integer
  unit indices (fractional ones are not silently truncated), correction methods and tie rules from
  closed lists, and sizes whose arrays would not fit in memory (:func:`memory_budget`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .choices import CORRECTION_METHODS, TIE_RULES
from .errors import CheckpointError, ModularityError

#: The intact network's balanced accuracy must exceed ``1/n_classes`` by at least this much.
CHANCE_MARGIN = 0.02

#: Largest seed accepted (torch.manual_seed and NumPy both take 0..2**63-1 without surprises).
MAX_SEED = 2**63 - 1


# --------------------------------------------------------------------------------------------------
# Finite weights and images


def _nonfinite_counts(t: torch.Tensor) -> tuple[int, int, int]:
    """Counts of NaN, +inf and -inf entries (all zero for integer tensors)."""
    if not t.is_floating_point() and not t.is_complex():
        return 0, 0, 0
    if bool(torch.isfinite(t).all()):
        return 0, 0, 0
    nan = int(torch.isnan(t).sum())
    pos = int(torch.isposinf(t).sum())
    neg = int(torch.isneginf(t).sum())
    return nan, pos, neg


def _describe(nan: int, pos: int, neg: int) -> str:
    parts = [f"{n} {label} value(s)" for n, label in ((nan, "NaN"), (pos, "+inf"), (neg, "-inf")) if n]
    return " and ".join(parts)


def finite_tensors(tensors: Iterable[tuple[str, Any]], where: str = "") -> None:
    """Raise if any named floating-point tensor holds NaN or +-inf; the message names the first such tensor.

    ``where`` prefixes the message (e.g. the checkpoint path).
    """
    bad = []
    for name, t in tensors:
        if not isinstance(t, torch.Tensor):
            continue
        nan, pos, neg = _nonfinite_counts(t.detach())
        if nan or pos or neg:
            bad.append(f"{name} has {_describe(nan, pos, neg)}")
    if bad:
        more = f" (and {len(bad) - 1} more tensor(s))" if len(bad) > 1 else ""
        prefix = f"{where}: " if where else ""
        raise ModularityError(f"{prefix}{bad[0]}{more}; the network cannot be analysed")


def finite_model(model: nn.Module, where: str = "") -> None:
    """Every parameter and floating-point buffer (BatchNorm statistics included) must be finite."""
    if not isinstance(model, nn.Module):
        return  # type errors are reported by the caller's own checks
    finite_tensors(model.state_dict(keep_vars=False).items(), where)


def finite_images(x: Any, name: str = "images") -> None:
    """Images must be finite: a NaN pixel makes every logit of its image NaN."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        return
    nan, pos, neg = _nonfinite_counts(x)
    if nan or pos or neg:
        n_images = int((~torch.isfinite(x.reshape(len(x), -1))).any(dim=1).sum()) if x.ndim >= 1 and len(x) else 0
        raise ModularityError(f"{name} have {_describe(nan, pos, neg)} (in {n_images} of {len(x)} images); "
                              "nothing can be computed from them")


def finite_graph(graph: Any) -> None:
    """A weight graph's edge weights must be finite (a hand-built adjacency may not be)."""
    adj = getattr(graph, "adjacency", None)
    data = getattr(adj, "data", None)
    if data is not None and data.size and not np.isfinite(data).all():
        raise ModularityError(f"the weight graph has {int((~np.isfinite(data)).sum())} non-finite edge weight(s) "
                              "(NaN or inf); it cannot be partitioned")


def above_chance(correct_counts: Any, class_sizes: Any, where: str = "the network") -> None:
    """Refuse a network whose intact balanced accuracy is not above chance by :data:`CHANCE_MARGIN`."""
    counts = np.asarray(correct_counts, dtype=np.float64)
    sizes = np.asarray(class_sizes, dtype=np.float64)
    present = sizes > 0
    if not present.any():
        return
    n_classes = int(sizes.size)
    balanced = float(np.mean(counts[present] / sizes[present]))
    chance = 1.0 / n_classes
    if not balanced > chance + CHANCE_MARGIN:
        raise ModularityError(f"{where} has balanced accuracy {balanced:.4f}, no better than chance "
                              f"({chance:.4f} for {n_classes} classes, margin {CHANCE_MARGIN}); lesion tests "
                              "of it would measure noise")


def network_above_chance(model: nn.Module, x: torch.Tensor, y: torch.Tensor, where: str = "") -> None:
    """:func:`above_chance` from one forward pass over ``(x, y)``: for commands, before the partition."""
    from .lesion import check_data, class_sizes, unlesioned_counts

    x, y, n_classes = check_data(model, x, y)
    above_chance(unlesioned_counts(model, x, y), class_sizes(y.cpu().numpy(), n_classes),
                 where or f"the intact {type(model).__name__}")


# --------------------------------------------------------------------------------------------------
# Scalars


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def integer(value: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (not a bool, not a float) in ``[minimum, maximum]``; returned as ``int``."""
    ok = _is_int(value) and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        if minimum is not None and maximum is not None:
            rule = f"an integer from {minimum} to {maximum}"
        elif minimum is not None:
            rule = f"an integer >= {minimum}"
        else:
            rule = "an integer"
        raise ModularityError(f"{name} must be {rule}, got {value!r}")
    return int(value)


def seed(value: Any, name: str = "seed") -> int:
    """A seed: integer from 0 to 2**63 - 1."""
    return integer(value, name, 0, MAX_SEED)


def n_jobs(value: Any, name: str = "n_jobs") -> int:
    """joblib's ``n_jobs``: a positive integer, or -1 for every core."""
    if not _is_int(value) or not (value >= 1 or value == -1):
        raise ModularityError(f"{name} must be a positive integer or -1 (every core), got {value!r}")
    return int(value)


def n_init(value: Any, name: str = "n_init") -> int | None:
    """k-means restarts: ``None`` (the default rule) or an integer >= 1."""
    return None if value is None else integer(value, name, 1)


def positive_number(value: Any, name: str) -> float:
    """A finite real number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value <= 0:
        raise ModularityError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def max_prop(value: Any, name: str = "max_prop") -> float:
    """A proportion of a layer: finite, ``0 < value <= 1`` (above 1 would admit the whole layer)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or not 0 < value <= 1:
        raise ModularityError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


def min_size(value: Any, name: str = "min_size") -> int:
    """Smallest sub-cluster kept: an integer >= 1."""
    return integer(value, name, 1)


def k(value: Any, name: str = "k") -> int:
    """Number of clusters: an integer >= 2 (the graph-specific upper bound is checked by ``partition``)."""
    return integer(value, name, 2)


def choice(value: Any, allowed: Sequence[str], name: str) -> str:
    """One of a closed set of names."""
    if not isinstance(value, str) or value not in allowed:
        raise ModularityError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def correction(value: Any, name: str = "correction method") -> str:
    """A ``statsmodels.stats.multitest.multipletests`` method (:data:`CORRECTION_METHODS`)."""
    return choice(value, CORRECTION_METHODS, name)


def tie_rule(value: Any, name: str = "ties") -> str:
    """A rank tie rule (:data:`TIE_RULES`)."""
    return choice(value, TIE_RULES, name)


def alpha(value: Any, name: str = "alpha") -> float:
    """A significance level in (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or not 0 < value < 1:
        raise ModularityError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


def clusterability_options(k_value: Any, n_shuffles: Any, seed_value: Any, jobs: Any, restarts: Any) -> None:
    """The options of ``partition.clusterability`` (``k``'s graph-specific range is checked by ``partition``).

    ``n_shuffles`` must be >= 1: with none, the null statistics are undefined (NaN).
    """
    integer(n_shuffles, "n_shuffles", 1)
    seed(seed_value)
    n_jobs(jobs)
    n_init(restarts)


def importance_options(correction_method: Any, ties: Any, seed_value: Any, alpha_value: Any = 0.05) -> None:
    """Closed-set and scalar options of ``importance``, checked before any lesion."""
    correction(correction_method)
    tie_rule(ties)
    seed(seed_value)
    alpha(alpha_value)


def coherence_options(n_random_value: Any, steps: Any, seed_value: Any, lr: Any, min_size_value: Any,
                      max_prop_value: Any, correction_method: Any = "holm", ties: Any = "strict") -> None:
    """Options of ``input_coherence`` / ``visualize_subclusters``, checked before any image is optimised."""
    integer(n_random_value, "n_random", 1)
    integer(steps, "steps", 0)
    seed(seed_value)
    positive_number(lr, "lr")
    min_size(min_size_value)
    max_prop(max_prop_value)
    correction(correction_method)
    tie_rule(ties)


# --------------------------------------------------------------------------------------------------
# Unit indices and layers


def unit_indices(values: Any, name: str = "units") -> np.ndarray:
    """Unit indices as int64; floats are accepted only when every value is a whole number.

    ``[0.5, 1.7]`` is refused instead of being truncated to ``[0, 1]``; booleans (a mask, not indices)
    are refused too.
    """
    arr = np.asarray(values)
    if arr.dtype == bool:
        raise ModularityError(f"{name} must be integer unit indices, got a boolean array (a mask?)")
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            bad = arr[~np.isfinite(arr) | (arr != np.round(arr))]
            raise ModularityError(f"{name} must be whole numbers, got {bad[:5].tolist()}"
                                  f"{' ...' if bad.size > 5 else ''}")
        return arr.astype(np.int64)
    if arr.dtype == object:
        try:
            as_float = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise ModularityError(f"{name} must be integer unit indices, got {arr.ravel()[:5].tolist()}") from None
        return unit_indices(as_float, name)
    raise ModularityError(f"{name} must be integer unit indices, got dtype {arr.dtype}")


def layer_names(names: Any, available: Iterable[str], name: str = "layers") -> list[str]:
    """Every requested layer must exist; unknown ones are listed with the known ones."""
    known = list(available)
    if isinstance(names, str):
        names = [names]
    names = list(names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ModularityError(f"unknown {name}: {', '.join(map(str, unknown))}; known: {', '.join(known)}")
    return names


# --------------------------------------------------------------------------------------------------
# Memory


def available_memory() -> int:
    """Bytes this process may reasonably allocate: ``$MODULARITY_MAX_MEMORY`` or the machine's RAM."""
    env = os.environ.get("MODULARITY_MAX_MEMORY")
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise ModularityError(f"MODULARITY_MAX_MEMORY must be a number of bytes, got {env!r}") from None
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 16 << 30


def memory_budget(n_bytes: float, what: str, fraction: float = 0.5) -> None:
    """Refuse work whose arrays would need more than ``fraction`` of :func:`available_memory`."""
    limit = available_memory() * fraction
    if n_bytes > limit:
        raise ModularityError(f"{what} would need about {_gib(n_bytes)} of memory, more than {fraction:.0%} of "
                              f"the {_gib(available_memory())} available; use fewer (or set MODULARITY_MAX_MEMORY)")


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def n_random(value: Any, subclusters: Sequence[Any] = (), n_classes: int = 10, name: str = "n_random") -> int:
    """Random draws per sub-cluster: an integer >= 1 whose arrays fit in memory.

    The draws need about ``n * (16 * layer width + 16 * size + 8 * n_classes)`` bytes per sub-cluster
    (the permutation keys of :func:`modularity.subclusters.random_sets`, the index sets, the counts).
    """
    n = integer(value, name, 1)
    per_draw = sum(16 * int(getattr(sc, "layer_width", 0)) + 16 * len(np.asarray(getattr(sc, "units", ())))
                   + 8 * n_classes for sc in subclusters)
    memory_budget(float(n) * per_draw, f"{name}={n} for {len(subclusters)} sub-clusters")
    return n


# --------------------------------------------------------------------------------------------------
# Metadata


def checkpoint_meta(meta: Any, where: str) -> Mapping[str, Any]:
    """Checkpoint metadata must be a JSON object with a string ``tag``."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"corrupt checkpoint metadata {where}: expected a JSON object, got "
                              f"{type(meta).__name__}")
    if "tag" not in meta:
        raise CheckpointError(f"checkpoint metadata {where} has no 'tag'")
    if not isinstance(meta["tag"], str):
        raise CheckpointError(f"checkpoint metadata {where}: 'tag' must be a string, got {meta['tag']!r}")
    return meta


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line: its type and the first non-empty line of its message."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    text = text[:limit] + (" ..." if len(text) > limit else "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------------------
# Output folders and CLI commands (checked before the checkpoint is even read)


def output_dir(path: Any, name: str = "output folder") -> None:
    """``path`` must be (or be creatable as) a writable folder: not a file, not read-only, not immutable."""
    if path is None:
        return
    from pathlib import Path

    folder = Path(path)
    probe = folder
    while not probe.exists():
        if probe.is_symlink():
            raise ModularityError(f"{name} {folder}: {probe} is a dangling symbolic link")
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ModularityError(f"{name} {folder}: {probe} exists and is not a folder")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        why = "is on a read-only file system" if _read_only_fs(probe) else "is not writable"
        raise ModularityError(f"{name} {folder}: {probe} {why}")


def _read_only_fs(path: Any) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:  # pragma: no cover
        return False


def _out_folder(args: Any) -> Any:
    """Where a command writes: ``--out``, else beside the checkpoint (or the ``--weights`` of a user model)."""
    if getattr(args, "out", None) is not None:
        return args.out
    for source in (getattr(args, "checkpoint", None), getattr(args, "weights", None)):
        if source is not None:
            return source.parent
    return None


def cluster_command(args: Any) -> None:
    """``cluster``: k, seed, shuffles, jobs, n_init and the output folder."""
    k(args.k)
    seed(args.seed)
    integer(args.shuffles, "--shuffles", 0)
    n_jobs(args.jobs, "--jobs")
    n_init(args.n_init, "--n-init")
    output_dir(_out_folder(args))


def importance_command(args: Any) -> None:
    """``importance``: k, seed, n_random, correction, ties and the output folder."""
    k(args.k)
    seed(args.seed)
    if args.n_random is not None:
        integer(args.n_random, "n_random", 1)
    correction(args.correction)
    tie_rule(args.ties)
    output_dir(_out_folder(args))


def coherence_command(args: Any) -> None:
    """``coherence``: every numeric option, correction, ties and the output folder."""
    k(args.k)
    coherence_options(args.n_random, args.steps, args.seed, args.lr, args.min_size, args.max_prop,
                      args.correction, args.ties)
    if args.batch_size != "auto":
        integer(args.batch_size, "batch_size", 1)
    if getattr(args, "relu_override_steps", None) is not None:
        integer(args.relu_override_steps, "relu_override_steps", 0)
    output_dir(_out_folder(args))


def train_command(args: Any) -> None:
    """``train``: seed and the checkpoint root."""
    seed(args.seed)
    output_dir(args.out, "checkpoint root")
